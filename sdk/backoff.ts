import type { RetryPolicy } from "./policy.ts";

/**
 * The wait before retry number `retry` (1 for the first retry), capped exponential back-off with
 * the policy's jitter. `previousMs` is the last wait (decorrelated jitter grows from it).
 * `random` returns a number in [0, 1).
 */
export function backoffMs(
  policy: RetryPolicy,
  retry: number,
  previousMs: number,
  random: () => number = Math.random,
): number {
  const { initialBackoffMs: base, maxBackoffMs: cap, backoffMultiplier, jitter } = policy;
  const exponential = Math.min(cap, base * backoffMultiplier ** (retry - 1));
  switch (jitter) {
    case "none":
      return exponential;
    case "full":
      return Math.floor(random() * exponential);
    case "decorrelated": {
      const upper = Math.max(base, previousMs * 3);
      return Math.min(cap, Math.floor(base + random() * (upper - base)));
    }
  }
}
