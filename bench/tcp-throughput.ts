// Guest-to-guest TCP throughput with busybox nc, as shell scripts run in the guests by whatever
// runs commands there (a Machine's execute, a fleet's exec): bench/network.ts and bench/cluster.ts.

/** The port the receiver listens on. */
export const THROUGHPUT_PORT = 5001;
/** Listener files in the receiving guest. */
const RX = '/tmp/bench-rx';
const FIFO = '/tmp/bench-fifo';
const PIDFILE = '/tmp/bench-nc.pid';
/** The guest's uptime in seconds, two decimals (busybox date has no %N). */
const UPTIME = "cut -d' ' -f1 /proc/uptime";

/** How long a sample of `bytes` may take: at least 2 Mbit/s, or 60 s (far beyond TCG's need, but bounded). */
export const sampleLimitSeconds = (bytes: number) => Math.max(60, Math.ceil((bytes * 8) / 2e6));

/**
 * Starts the receiver in the background. Its stdin is a FIFO opened read-write: it never reaches
 * end of file, so nc does not half-close the connection early; it exits when the sender closes.
 * Its pid is kept so that a listener left over from a failed sample is stopped first.
 */
export const listenerScript = (limitS: number) =>
  `[ -s ${PIDFILE} ] && kill $(cat ${PIDFILE}) 2>/dev/null; rm -f ${RX} ${FIFO} ${PIDFILE}; mkfifo ${FIFO}; ` +
  `(sh -c 'echo $$ >${PIDFILE}; exec timeout ${limitS + 30} nc -l -p ${THROUGHPUT_PORT} <>${FIFO} 2>/dev/null' | wc -c >${RX}.tmp; mv ${RX}.tmp ${RX}) </dev/null >/dev/null 2>&1 &`;

/**
 * The receiver in the foreground, for runners that end a command's background jobs with it (a
 * fleet's exec): prints the byte count once the sender closed. Its stdin is a FIFO, as above.
 */
export const foregroundListenerScript = (limitS: number) =>
  `rm -f ${FIFO}; mkfifo ${FIFO}; timeout ${limitS + 30} nc -l -p ${THROUGHPUT_PORT} <>${FIFO} 2>/dev/null | wc -c`;

/** Sends `bytes` of zeros to `target`; prints the guest's uptime before and after, and nc's status. */
export const senderScript = (target: string, bytes: number, limitS: number) =>
  `a=$(${UPTIME}); dd if=/dev/zero bs=64k count=${bytes / 65536} 2>/dev/null | timeout ${limitS} nc ${target} ${THROUGHPUT_PORT}; ` +
  `s=$?; b=$(${UPTIME}); echo "$a $b $s"`;

/**
 * senderScript for a receiver that may not listen yet: connecting is tried every 100 ms for 30 s
 * (a refused connection sends nothing); the times are those of the attempt that got through.
 */
export const retryingSenderScript = (target: string, bytes: number, limitS: number) =>
  `n=0; while :; do a=$(${UPTIME}); dd if=/dev/zero bs=64k count=${bytes / 65536} 2>/dev/null | timeout ${limitS} nc ${target} ${THROUGHPUT_PORT} 2>/dev/null; ` +
  `s=$?; b=$(${UPTIME}); n=$((n + 1)); [ $s = 0 ] || [ $n -ge 300 ] && break; sleep 0.1; done; echo "$a $b $s"`;

/** The sender's output: its start and end (guest uptime) and nc's status; undefined if unusable. */
export function parseSender(stdout: string): { start: number; end: number; status: number } | undefined {
  const [start, end, status] = stdout.trim().split(/\s+/).map(Number);
  if (start === undefined || end === undefined || status === undefined || Number.isNaN(end)) return undefined;
  return { start, end, status };
}

export const RECEIVED_FILE = RX;
