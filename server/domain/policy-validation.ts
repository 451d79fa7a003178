import type { Policy } from "../../gen/bulwark/v1/policy_pb.ts";
import { BreakerScope, Jitter, SlidingWindowKind } from "../../gen/bulwark/v1/policy_pb.ts";
import { InvalidArgumentError } from "./errors.ts";
import { assertName } from "./names.ts";
import {
  type BreakerScopeMode,
  DEFAULT_BACKOFF_MULTIPLIER,
  DEFAULT_CONSECUTIVE_FAILURES,
  DEFAULT_FAILURE_RATE_THRESHOLD_PERCENT,
  DEFAULT_HALF_OPEN_PERMITS,
  DEFAULT_INITIAL_BACKOFF_MS,
  DEFAULT_JITTER,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_MAX_BACKOFF_MS,
  DEFAULT_MAX_OPEN_WAIT_MS,
  DEFAULT_MAX_RETRY_AFTER_MS,
  DEFAULT_MAX_RETRY_AFTER_OPEN_MS,
  DEFAULT_MINIMUM_CALLS,
  DEFAULT_OPEN_WAIT_MS,
  DEFAULT_OPEN_WAIT_MULTIPLIER,
  DEFAULT_QUEUE_ACK_WAIT_MS,
  DEFAULT_QUEUE_MAX_AGE_MS,
  DEFAULT_QUEUE_MAX_DELIVERIES,
  DEFAULT_QUEUE_MAX_JOBS,
  DEFAULT_QUEUE_MAX_PAYLOAD_BYTES,
  DEFAULT_SLOW_CALL_MS,
  DEFAULT_SLOW_CALL_RATE_THRESHOLD_PERCENT,
  DEFAULT_WINDOW_DURATION_MS,
  DEFAULT_WINDOW_KIND,
  DEFAULT_WINDOW_SIZE,
  DEFAULT_WORKER_INITIAL_BACKOFF_MS,
  DEFAULT_WORKER_MAX_BACKOFF_MS,
  type JitterMode,
  MAX_DEFAULT_DEADLINE_MS,
  MAX_JOB_PAYLOAD_BYTES,
  type PolicySpec,
  type QueueSpec,
  type WindowKind,
} from "./policy.ts";

const HOUR_MS = 3_600_000;
const SECOND_MS = 1_000;
/** Thirty days: the longest a deferred job may wait (JetStream keeps it that long at most). */
const MAX_QUEUE_AGE_MS = 30 * 24 * HOUR_MS;
/** A time window may need more calls than any count window holds before it judges. */
const MAX_TIME_WINDOW_MINIMUM_CALLS = 1_000_000;
/** Longest explicit deadline: ten minutes, or one attempt's timeout when that is longer. */
const MAX_DEADLINE_MS = 10 * 60_000;

/** An integer in [min, max], or the default when unset. */
function int(field: string, value: number | undefined, min: number, max: number, dflt: number) {
  if (value === undefined) return dflt;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}]; got ${value}`);
  }
  return value;
}

/** A finite number in [min, max] (or (min, max] when `exclusiveMin`), or the default. */
function real(
  field: string,
  value: number | undefined,
  min: number,
  max: number,
  dflt: number,
  exclusiveMin = false,
) {
  if (value === undefined) return dflt;
  const tooLow = exclusiveMin ? value <= min : value < min;
  if (!Number.isFinite(value) || tooLow || value > max) {
    const range = `${exclusiveMin ? "(" : "["}${min}, ${max}]`;
    throw new InvalidArgumentError(field, `must be a number in ${range}; got ${value}`);
  }
  return value;
}

function jitterOf(value: Jitter): JitterMode {
  switch (value) {
    case Jitter.UNSPECIFIED:
      return DEFAULT_JITTER;
    case Jitter.FULL:
      return "full";
    case Jitter.DECORRELATED:
      return "decorrelated";
    case Jitter.NONE:
      return "none";
    default:
      throw new InvalidArgumentError("policy.retry.jitter", `unknown value ${value}`);
  }
}

function windowKindOf(value: SlidingWindowKind): WindowKind {
  switch (value) {
    case SlidingWindowKind.UNSPECIFIED:
      return DEFAULT_WINDOW_KIND;
    case SlidingWindowKind.COUNT:
      return "count";
    case SlidingWindowKind.TIME:
      return "time";
    default:
      throw new InvalidArgumentError("policy.breaker.window_kind", `unknown value ${value}`);
  }
}

/** An int64 milliseconds field: an integer in [min, max], or the default when unset. */
function int64(field: string, value: bigint | undefined, min: number, max: number, dflt: number) {
  if (value === undefined) return dflt;
  if (value < BigInt(min) || value > BigInt(max)) {
    throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}]; got ${value}`);
  }
  return Number(value);
}

/** The queue settings of a policy, with defaults (ranges in proto/bulwark/v1/policy.proto). */
function normalizeQueue(q: Policy["queue"]): QueueSpec {
  const workerInitialBackoffMs = int(
    "policy.queue.worker_initial_backoff_ms",
    q?.workerInitialBackoffMs,
    0,
    HOUR_MS,
    DEFAULT_WORKER_INITIAL_BACKOFF_MS,
  );
  return {
    maxDeliveries: int(
      "policy.queue.max_deliveries",
      q?.maxDeliveries,
      1,
      100,
      DEFAULT_QUEUE_MAX_DELIVERIES,
    ),
    workerInitialBackoffMs,
    workerMaxBackoffMs: int(
      "policy.queue.worker_max_backoff_ms",
      q?.workerMaxBackoffMs,
      workerInitialBackoffMs,
      HOUR_MS,
      Math.max(DEFAULT_WORKER_MAX_BACKOFF_MS, workerInitialBackoffMs),
    ),
    maxAgeMs: int64(
      "policy.queue.max_age_ms",
      q?.maxAgeMs,
      SECOND_MS,
      MAX_QUEUE_AGE_MS,
      DEFAULT_QUEUE_MAX_AGE_MS,
    ),
    maxJobs: int("policy.queue.max_jobs", q?.maxJobs, 1, 10_000_000, DEFAULT_QUEUE_MAX_JOBS),
    maxPayloadBytes: int(
      "policy.queue.max_payload_bytes",
      q?.maxPayloadBytes,
      1,
      MAX_JOB_PAYLOAD_BYTES,
      DEFAULT_QUEUE_MAX_PAYLOAD_BYTES,
    ),
    ackWaitMs: int(
      "policy.queue.ack_wait_ms",
      q?.ackWaitMs,
      SECOND_MS,
      HOUR_MS,
      DEFAULT_QUEUE_ACK_WAIT_MS,
    ),
  };
}

function scopeOf(value: BreakerScope): BreakerScopeMode {
  switch (value) {
    case BreakerScope.UNSPECIFIED:
    case BreakerScope.DEPENDENCY:
      return "dependency";
    case BreakerScope.SERVICE:
      return "service";
    default:
      throw new InvalidArgumentError("policy.breaker.scope", `unknown value ${value}`);
  }
}

/**
 * Checks a policy from a Put request and returns it complete, with defaults filled in. Throws
 * InvalidArgumentError naming the first field that breaks a rule; nothing is stored then.
 * Revision, update time and author are left for the store to set.
 */
export function normalizePolicy(input: Policy | undefined): PolicySpec {
  if (input === undefined) throw new InvalidArgumentError("policy", "is required");
  assertName("policy.dependency", input.dependency);
  const sla = input.sla;
  if (sla === undefined) throw new InvalidArgumentError("policy.sla", "is required");
  const latencyObjectiveMs = int(
    "policy.sla.latency_objective_ms",
    sla.latencyObjectiveMs,
    1,
    HOUR_MS,
    0,
  );
  const availabilityTargetPercent = real(
    "policy.sla.availability_target_percent",
    sla.availabilityTargetPercent,
    0,
    100,
    0,
    true,
  );
  if (input.timeoutMs > latencyObjectiveMs) {
    throw new InvalidArgumentError(
      "policy.timeout_ms",
      `may not exceed policy.sla.latency_objective_ms (${latencyObjectiveMs}); got ${input.timeoutMs}`,
    );
  }
  const timeoutMs = int("policy.timeout_ms", input.timeoutMs, 1, latencyObjectiveMs, 0);

  const r = input.retry;
  const maxAttempts = int("policy.retry.max_attempts", r?.maxAttempts, 1, 10, DEFAULT_MAX_ATTEMPTS);
  const initialBackoffMs = int(
    "policy.retry.initial_backoff_ms",
    r?.initialBackoffMs,
    0,
    60_000,
    DEFAULT_INITIAL_BACKOFF_MS,
  );
  const maxBackoffMs = int(
    "policy.retry.max_backoff_ms",
    r?.maxBackoffMs,
    initialBackoffMs,
    60_000,
    Math.max(DEFAULT_MAX_BACKOFF_MS, initialBackoffMs),
  );
  const retry = {
    maxAttempts,
    initialBackoffMs,
    maxBackoffMs,
    backoffMultiplier: real(
      "policy.retry.backoff_multiplier",
      r?.backoffMultiplier,
      1,
      10,
      DEFAULT_BACKOFF_MULTIPLIER,
    ),
    jitter: jitterOf(r?.jitter ?? Jitter.UNSPECIFIED),
    maxRetryAfterMs: int(
      "policy.retry.max_retry_after_ms",
      r?.maxRetryAfterMs,
      0,
      600_000,
      DEFAULT_MAX_RETRY_AFTER_MS,
    ),
  };

  const b = input.breaker;
  const windowSize = int(
    "policy.breaker.window_size",
    b?.windowSize,
    1,
    10_000,
    DEFAULT_WINDOW_SIZE,
  );
  const openWaitMs = int(
    "policy.breaker.open_wait_ms",
    b?.openWaitMs,
    1,
    HOUR_MS,
    DEFAULT_OPEN_WAIT_MS,
  );
  const windowKind = windowKindOf(b?.windowKind ?? SlidingWindowKind.UNSPECIFIED);
  const windowDurationMs = int(
    "policy.breaker.window_duration_ms",
    b?.windowDurationMs,
    SECOND_MS,
    HOUR_MS,
    DEFAULT_WINDOW_DURATION_MS,
  );
  // The time window keeps one-second buckets: a fraction of a second could not be honoured.
  if (windowDurationMs % SECOND_MS !== 0) {
    throw new InvalidArgumentError(
      "policy.breaker.window_duration_ms",
      `must be a whole number of seconds; got ${windowDurationMs}`,
    );
  }
  // A count window cannot hold more calls than its size; a time window holds any number.
  const maxMinimumCalls = windowKind === "count" ? windowSize : MAX_TIME_WINDOW_MINIMUM_CALLS;
  const breaker = {
    windowSize,
    minimumCalls: int(
      "policy.breaker.minimum_calls",
      b?.minimumCalls,
      1,
      maxMinimumCalls,
      Math.min(DEFAULT_MINIMUM_CALLS, maxMinimumCalls),
    ),
    failureRateThresholdPercent: real(
      "policy.breaker.failure_rate_threshold_percent",
      b?.failureRateThresholdPercent,
      0,
      100,
      DEFAULT_FAILURE_RATE_THRESHOLD_PERCENT,
      true,
    ),
    consecutiveFailures: int(
      "policy.breaker.consecutive_failures",
      b?.consecutiveFailures,
      0,
      10_000,
      DEFAULT_CONSECUTIVE_FAILURES,
    ),
    openWaitMs,
    openWaitMultiplier: real(
      "policy.breaker.open_wait_multiplier",
      b?.openWaitMultiplier,
      1,
      10,
      DEFAULT_OPEN_WAIT_MULTIPLIER,
    ),
    maxOpenWaitMs: int(
      "policy.breaker.max_open_wait_ms",
      b?.maxOpenWaitMs,
      openWaitMs,
      HOUR_MS,
      Math.max(DEFAULT_MAX_OPEN_WAIT_MS, openWaitMs),
    ),
    halfOpenPermits: int(
      "policy.breaker.half_open_permits",
      b?.halfOpenPermits,
      1,
      100,
      DEFAULT_HALF_OPEN_PERMITS,
    ),
    scope: scopeOf(b?.scope ?? BreakerScope.UNSPECIFIED),
    windowKind,
    windowDurationMs,
    slowCallMs: int(
      "policy.breaker.slow_call_ms",
      b?.slowCallMs,
      0,
      timeoutMs,
      DEFAULT_SLOW_CALL_MS,
    ),
    slowCallRateThresholdPercent: real(
      "policy.breaker.slow_call_rate_threshold_percent",
      b?.slowCallRateThresholdPercent,
      0,
      100,
      DEFAULT_SLOW_CALL_RATE_THRESHOLD_PERCENT,
      true,
    ),
    maxRetryAfterOpenMs: int(
      "policy.breaker.max_retry_after_open_ms",
      b?.maxRetryAfterOpenMs,
      0,
      HOUR_MS,
      DEFAULT_MAX_RETRY_AFTER_OPEN_MS,
    ),
  };
  const queue = normalizeQueue(input.queue);

  // The default deadline is the whole retry budget: every attempt may use its full timeout and
  // every back-off its cap.
  const budgetMs = maxAttempts * timeoutMs + (maxAttempts - 1) * maxBackoffMs;
  const deadlineMs = int(
    "policy.deadline_ms",
    input.deadlineMs,
    timeoutMs,
    Math.max(MAX_DEADLINE_MS, timeoutMs),
    Math.min(budgetMs, Math.max(MAX_DEFAULT_DEADLINE_MS, timeoutMs)),
  );

  return {
    dependency: input.dependency,
    revision: 0,
    latencyObjectiveMs,
    availabilityTargetPercent,
    timeoutMs,
    deadlineMs,
    retry,
    breaker,
    queue,
    updatedAtMs: 0,
    updatedBy: "",
  };
}
