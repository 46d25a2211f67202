export {
  defineTest,
  type MachineDeclaration,
  type RunOptions,
  type RunReport,
  runTest,
  type TestContext,
  type TestDefinition,
} from './driver/test.js';
export * from './errors.js';
export { stripAnsi } from './guest/console.js';
export { type AccelDecision, type AccelRequest, chooseAccel, probeKvm } from './hypervisor/accel.js';
export type { QmpClient, QmpEvent } from './hypervisor/qmp.js';
export {
  type BootImage,
  type BuildImageOptions,
  buildImage,
  IMAGE_NAMES,
  listImages,
} from './image/index.js';
export type { MachineConfig } from './machine/config.js';
export { type CommandOptions, type ExecResult, Machine, shellQuote } from './machine/machine.js';
export type { MachineOptions, NetworkAttachment } from './machine/options.js';
export {
  type ForkOptions,
  forkMachines,
  type PoolOptions,
  type RestoreOptions,
  RestorePool,
  restoreMachine,
  Snapshot,
  type SnapshotManifest,
  type SnapshotOptions,
} from './machine/snapshot.js';
export {
  listSnapshots,
  openSnapshot,
  pruneSnapshots,
  removeSnapshot,
  unrestorableReason,
} from './machine/snapshot-store.js';
export { keepMachineState, macAddress, startMachine } from './machine/start.js';
export { VirtualSwitch } from './network/switch.js';
export { RunLog } from './util/log.js';
