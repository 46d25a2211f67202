export type { RawResult } from './agent/backdoor.js';
export type { GuestProcess, ProcessExit } from './agent/process.js';
export {
  type AccelDecision,
  type AccelRequest,
  chooseAccel,
  type KvmVerdict,
  probeKvm,
} from './backends/accel.js';
export type { Backend, BackendCapabilities, Capability, ExitInfo } from './backends/backend.js';
export { BACKEND_NAMES, backendNamed, requireCapability } from './backends/index.js';
export { type MockBackend, mockBackend } from './backends/mock/backend.js';
export { loadMockScript } from './backends/mock/options.js';
export type { MockCommand, MockReply, MockScriptOptions, MockStep } from './backends/mock/script.js';
export type { ConsoleStep } from './console/script.js';
export { ConsoleScriptError, runConsoleScript } from './console/script.js';
export {
  type ExpectMatch,
  type ExpectOptions,
  type SerialConsole,
  stripAnsi,
} from './console/serial.js';
export {
  type ConsoleResult,
  type ConsoleShell,
  ConsoleShellError,
  type ConsoleShellOptions,
} from './console/shell.js';
export type { TranscriptEntry } from './console/transcript.js';
export { type FixtureHooks, useMachines } from './driver/fixtures.js';
export type { PollingCondition, PollingConditionOptions } from './driver/polling.js';
export {
  defineTest,
  type MachineDeclaration,
  type RunOptions,
  type RunReport,
  runTest,
  type TestBody,
  type TestContext,
  type TestDefinition,
  type TestResult,
} from './driver/runner.js';
export { partition, type ShardSpec, type Timings } from './driver/shard.js';
export * from './errors.js';
export {
  AGENT_OPS,
  type AgentOp,
  type AgentRequest,
  type AgentResponse,
  openApiDocument,
} from './fleet/agent/api.js';
export {
  type CertOptions,
  type CertStatus,
  certStatus,
  defaultCertsDir,
  initCerts,
  rotateCerts,
} from './fleet/agent/certs.js';
export { AgentCallError, AgentClient, type ConnectAgentOptions, connectAgent } from './fleet/agent/client.js';
export { type AgentServer, type AgentServerOptions, startAgent } from './fleet/agent/server.js';
export { type ClusterAgentOptions, joinAsAgent } from './fleet/cluster/agent-node.js';
export {
  type ClusterStore,
  connectCluster,
  etcdEndpoints,
  type NodeRecord as ClusterNodeRecord,
} from './fleet/cluster/etcd.js';
export type { ClusterMember } from './fleet/cluster/member.js';
export {
  applyDocument as applyClusterDocument,
  type ClusterStatus,
  clusterStatus,
} from './fleet/cluster/status.js';
export type { Action, Phase } from './fleet/desired/plan.js';
export {
  type ActionResult,
  formatReport,
  type PhaseReport,
  type ReconcileOptions,
  type ReconcileReport,
} from './fleet/desired/reconcile.js';
export {
  DESIRED_VERSION,
  type DesiredDocument,
  desiredDocument,
  loadDesired,
  parseDesired,
} from './fleet/desired/schema.js';
export { Fleet, type FleetOptions } from './fleet/fleet.js';
export type { Rebuilt } from './fleet/images/rebuild.js';
export type { InstanceMachineOptions } from './fleet/instance-machine.js';
export {
  type Decision,
  decide,
  POLICY_DEFAULTS,
  type PolicyOptions,
  type Sample,
} from './fleet/policy/policy.js';
export type { ScaleStep } from './fleet/policy/scale.js';
export type { Repair } from './fleet/repair.js';
export { type AuditEvent, readAudit } from './fleet/state/audit.js';
export { defaultFleetDir } from './fleet/state/db.js';
export {
  type InstanceState,
  OPERATIONS,
  type Operation,
  RefusedError,
  STATES,
  TRANSITIONS,
} from './fleet/state/lifecycle.js';
export type {
  Instance,
  Pool as FleetPool,
  PoolInput as FleetPoolInput,
  Tenant,
  TenantInput,
} from './fleet/state/model.js';
export { GUEST_READ_SECRETS } from './fleet/vmm/secrets-disk.js';
export type { GuestProfile } from './guest/profiles/index.js';
export type { Readiness } from './guest/readiness.js';
export {
  type BootImage,
  type BuildImageOptions,
  buildImage,
  IMAGE_NAMES,
  type ImageRecipe,
  listImages,
} from './images/build.js';
export type {
  CommandObserver,
  CommandOutcome,
  CommandWatch,
  ExecuteOptions,
  OutputListener,
  SpawnOptions,
} from './machine/commands.js';
export type { MachineConfig } from './machine/config.js';
export type { CopyFromVmOptions, CopyReport } from './machine/copies.js';
export type { ExtraDisk } from './machine/extra-disks.js';
export type { PortForward } from './machine/host-access.js';
export type { CommandOptions, ExecResult, Machine, WaitOptions } from './machine/machine.js';
export type { BootDevice, Firmware, SaveDiskOptions, UserMedia } from './machine/media.js';
export type { QmpEventFilter } from './machine/monitor.js';
export type { MachineOptions, NetworkAttachment } from './machine/options.js';
export type { PortOptions, UnixSocketOptions } from './machine/ports.js';
export { keepMachineState } from './machine/start.js';
export type { JournalOptions, UserOption, WaitForUnitOptions } from './machine/systemd.js';
export { startMachine } from './machines.js';
export { type PcapRecord, readPcap } from './network/pcap.js';
export {
  type Capture,
  type FaultHandle,
  type FrameTap,
  type ImpairOptions,
  type MachineRef,
  type PortStats,
  type SwitchCounters,
  type SwitchStats,
  VirtualSwitch,
} from './network/switch.js';
export {
  type OpenProjectVmOptions,
  openProjectVm,
  type ProjectExecOptions,
  ProjectVmHandle,
} from './project/api.js';
export type { CommandSpec, ProjectConfig, SyncMap, VmConfig } from './project/config.js';
export { AgentLentError } from './project/hub-agent.js';
export type { UpOptions, UpResult } from './project/lifecycle.js';
export type { ProjectSnapshot } from './project/snapshots.js';
export type { VmStatus } from './project/status.js';
export type { SyncReport } from './project/sync.js';
export type { SyncMethod } from './project/sync-vm.js';
export { NoAgentError, VmDownError } from './project/vm-handle.js';
export type { VmMachineOptions } from './project/vm-machine.js';
export { Runtime, type RuntimeOptions } from './runtime/runtime.js';
export {
  type BootCacheEntry,
  bootCacheCap,
  clearBootCache,
  listBootCache,
  pruneBootCache,
} from './snapshot/boot-cache.js';
export type { SnapshotManifest } from './snapshot/manifest.js';
export type { RestoreOptions } from './snapshot/restore.js';
export type { ClonePool, ClonePoolOptions, ForkOptions } from './snapshot/snapshot.js';
export { forkMachines, restoreMachine, type Snapshot, type SnapshotOptions } from './snapshot/snapshot.js';
export {
  listSnapshots,
  openSnapshot,
  pruneSnapshots,
  removeSnapshot,
  snapshotProblems,
} from './snapshot/store.js';
export { RunLog } from './util/log.js';
export { type Attempt, type RetryOptions, retry } from './util/retry.js';
export type { LeftOut } from './util/untrusted-archive.js';
