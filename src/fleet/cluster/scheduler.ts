import { type Candidacy, standForElection } from './election.js';
import type { ClusterStore } from './etcd.js';
import { applyPlacement, planPlacement } from './placement.js';
import { removeOrphanedStandbys } from './standby.js';
import { readCluster } from './state.js';

export interface SchedulerOptions {
  store: ClusterStore;
  /** This node's name: what it proclaims when elected. */
  node: string;
  /** Best of how many nodes each slot is placed on. */
  k: number;
  /** The campaign's lease: a leader that stops renewing it hands over after this. */
  ttlSeconds: number;
  /** A round at least this often while leading, besides the rounds that changes start. */
  intervalMs: number;
  log: (line: string) => void;
}

export interface Scheduler {
  readonly leading: boolean;
  /** A round soon (the cluster changed), if this node leads. */
  poke(): void;
  /** Resigns (another node is elected) and stops. */
  stop(): Promise<void>;
}

/**
 * The one scheduler of the cluster, elected through etcd: every agent campaigns, the elected one
 * places slots in rounds (see placement.ts). A campaign that fails (its lease lost) campaigns
 * again; a leader that dies hands over when its campaign's lease lapses.
 */
export function startScheduler(options: SchedulerOptions): Scheduler {
  const { store, log } = options;
  let candidacy: Candidacy | undefined;
  let leading = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  const orphans = new Map<string, number>();

  const round = async () => {
    const state = await readCluster(store);
    await removeOrphanedStandbys(store, state, orphans);
    const plan = planPlacement(state, options.k);
    if (plan.moves.length === 0 && plan.requests.length === 0 && plan.stale.length === 0) return;
    const result = await applyPlacement(store, state, plan, (line) => log(`scheduler: ${line}`));
    if (result.conflicts > 0) {
      log(`scheduler: ${result.conflicts} move(s) met a changed cluster; reading it again`);
      again = true;
    }
    if (result.unplaced > 0) log(`scheduler: ${result.unplaced} slot(s) wait for a node with room`);
  };

  const runRound = () => {
    clearTimeout(timer);
    if (stopped || !leading) return;
    if (running) {
      again = true;
      return;
    }
    running = round()
      .catch((error: Error) => log(`scheduler: round failed: ${error.message}`))
      .finally(() => {
        running = undefined;
        if (stopped || !leading) return;
        const soon = again;
        again = false;
        timer = setTimeout(runRound, soon ? 100 : options.intervalMs);
      });
  };

  const campaignNow = () => {
    if (stopped) return;
    const standAgain = (error: Error) => {
      log(
        `scheduler: ${leading ? 'no longer the scheduler' : 'campaign failed'} (${error.message.split('\n')[0]}); campaigning again`,
      );
      leading = false;
      candidacy = undefined;
      clearTimeout(timer);
      setTimeout(campaignNow, 1000).unref();
    };
    standForElection(store, options.node, options.ttlSeconds, {
      elected: () => {
        if (stopped) return;
        leading = true;
        log(`scheduler: ${options.node} is the scheduler`);
        runRound();
      },
      failed: standAgain,
    }).then(
      (standing) => {
        if (stopped) standing.resign();
        else candidacy = standing;
      },
      (error: Error) => {
        if (!stopped) standAgain(error);
      },
    );
  };
  campaignNow();

  return {
    get leading() {
      return leading;
    },
    poke() {
      if (!leading) return;
      clearTimeout(timer);
      timer = setTimeout(runRound, 100);
    },
    async stop() {
      stopped = true;
      leading = false;
      clearTimeout(timer);
      await running;
      await candidacy?.resign();
    },
  };
}
