/** First and longest wait before the SDK tries an unreachable control plane or stream again. */
export const RECONNECT_BASE_MS = 100;
export const RECONNECT_MAX_MS = 5_000;

/**
 * The wait before reconnect attempt number `failures` (1 for the first): a cap that doubles up to
 * RECONNECT_MAX_MS, jittered over its upper half so a fleet does not reconnect in one wave after
 * a restart.
 */
export function reconnectDelayMs(failures: number, random: () => number = Math.random): number {
  const capMs = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.max(0, failures - 1));
  return Math.round(capMs / 2 + (random() * capMs) / 2);
}

/** Resolves after `ms`, or at once when `signal` aborts; the timer does not hold the process. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    timer.unref();
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
