export * from './errors.js';
export { Machine, shellQuote, type ExecResult, type CommandOptions } from './machine/machine.js';
export { startMachine, keepMachineState, macAddress } from './machine/start.js';
export type { MachineOptions, NetworkAttachment } from './machine/options.js';
export { buildImage, listImages, IMAGE_NAMES, type BootImage, type BuildImageOptions } from './image/index.js';
export { chooseAccel, probeKvm, type AccelRequest, type AccelDecision } from './hypervisor/accel.js';
export { VirtualSwitch } from './network/switch.js';
export { stripAnsi } from './guest/console.js';
export type { QmpClient, QmpEvent } from './hypervisor/qmp.js';
export {
  defineTest,
  runTest,
  type TestDefinition,
  type TestContext,
  type MachineDeclaration,
  type RunOptions,
  type RunReport,
} from './driver/test.js';
export { RunLog } from './util/log.js';
