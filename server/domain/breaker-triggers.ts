/**
 * What opens a breaker, as pure functions of the breaker, the policy and an outcome: the rate and
 * run triggers over the window, and the back-off signal. breaker-engine.ts decides what to do
 * with them in each state; these only detect and describe.
 */
import type { Breaker, OutcomeInput } from "./breaker-types.ts";
import type { PolicySpec } from "./policy.ts";

/**
 * How long the outcome's back-off signal asks the fleet to stay away, capped by the policy;
 * 0 when it carries none (or the policy turned the signal off).
 */
export function backOffWaitMs(policy: PolicySpec, outcome: OutcomeInput): number {
  const cap = policy.breaker.maxRetryAfterOpenMs;
  const retryAfterMs = outcome.retryAfterMs ?? 0;
  if (cap <= 0 || retryAfterMs <= 0 || outcome.result !== "failure") return 0;
  if (outcome.statusCode !== 429 && outcome.statusCode !== 503) return 0;
  return Math.min(retryAfterMs, cap);
}

/** The back-off signal as a transition reason, saying when the policy's cap shortened it. */
export function describeBackOff(outcome: OutcomeInput, waitMs: number): string {
  const what = outcome.errorType || `status ${outcome.statusCode}`;
  return `back-off signal: ${what} Retry-After ${outcome.retryAfterMs} ms${
    waitMs < (outcome.retryAfterMs ?? 0) ? ` (capped at ${waitMs} ms)` : ""
  }`;
}

/** The rate or run trigger the window meets, described for the transition reason. */
export function describeTrigger(breaker: Breaker, policy: PolicySpec): string | undefined {
  const b = policy.breaker;
  const w = breaker.window;
  if (w.calls < b.minimumCalls) return undefined;
  const over =
    w.shape.kind === "time"
      ? `over ${w.calls} calls in ${w.shape.durationMs} ms`
      : `over ${w.calls} calls`;
  if (w.failureRatePercent >= b.failureRateThresholdPercent) {
    return (
      `failure rate ${w.failureRatePercent.toFixed(1)}% >= ${b.failureRateThresholdPercent}% ` +
      over
    );
  }
  if (b.slowCallMs > 0 && w.slowCallRatePercent >= b.slowCallRateThresholdPercent) {
    return (
      `slow-call rate ${w.slowCallRatePercent.toFixed(1)}% >= ${b.slowCallRateThresholdPercent}% ` +
      `(slower than ${b.slowCallMs} ms) ` +
      over
    );
  }
  if (b.consecutiveFailures > 0 && breaker.consecutiveFailures >= b.consecutiveFailures) {
    return `${breaker.consecutiveFailures} consecutive failures >= ${b.consecutiveFailures}`;
  }
  return undefined;
}
