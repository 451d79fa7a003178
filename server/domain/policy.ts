/**
 * The policy as the domain core uses it: every field filled in, plain numbers, units in names.
 * rpc/convert.ts maps it to and from the wire messages.
 */

/** How retry back-off is randomized. */
export type JitterMode = "full" | "decorrelated" | "none";

/** Which callers share one breaker. */
export type BreakerScopeMode = "dependency" | "service";

/** What the failure-rate and slow-call-rate triggers look at: the last N calls or the last T ms. */
export type WindowKind = "count" | "time";

export interface RetrySpec {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  jitter: JitterMode;
  maxRetryAfterMs: number;
}

export interface BreakerSpec {
  windowSize: number;
  minimumCalls: number;
  failureRateThresholdPercent: number;
  /** 0 turns the consecutive-failure trigger off. */
  consecutiveFailures: number;
  openWaitMs: number;
  openWaitMultiplier: number;
  maxOpenWaitMs: number;
  halfOpenPermits: number;
  scope: BreakerScopeMode;
  windowKind: WindowKind;
  /** Length of a time window; a whole number of seconds. Kept (unused) for count windows. */
  windowDurationMs: number;
  /** A counted call slower than this is slow; 0 turns the slow-call trigger off. */
  slowCallMs: number;
  slowCallRateThresholdPercent: number;
  /** Cap of the open time a Retry-After answer sets; 0 turns the back-off signal off. */
  maxRetryAfterOpenMs: number;
}

/** How deferrable work waits in the dependency's work queue and when it is dead-lettered. */
export interface QueueSpec {
  maxDeliveries: number;
  workerInitialBackoffMs: number;
  workerMaxBackoffMs: number;
  maxAgeMs: number;
  maxJobs: number;
  maxPayloadBytes: number;
  ackWaitMs: number;
}

export interface PolicySpec {
  dependency: string;
  revision: number;
  latencyObjectiveMs: number;
  availabilityTargetPercent: number;
  timeoutMs: number;
  deadlineMs: number;
  retry: RetrySpec;
  breaker: BreakerSpec;
  queue: QueueSpec;
  updatedAtMs: number;
  updatedBy: string;
}

/** Three attempts ride out a blip without tripling the load on a dependency that is down. */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** Long enough for a dropped connection to be re-established, short for an interactive call. */
export const DEFAULT_INITIAL_BACKOFF_MS = 100;
/** Keeps the last retry of an interactive call within a couple of seconds. */
export const DEFAULT_MAX_BACKOFF_MS = 2_000;
/** Doubling is the usual exponential growth. */
export const DEFAULT_BACKOFF_MULTIPLIER = 2;
/** Full jitter spreads a fleet's retries best (fewest synchronized waves). */
export const DEFAULT_JITTER: JitterMode = "full";
/** Rate-limit waits beyond 30 s are better served by a fallback or the queue. */
export const DEFAULT_MAX_RETRY_AFTER_MS = 30_000;
/** 100 outcomes give a failure rate with 1 % resolution. */
export const DEFAULT_WINDOW_SIZE = 100;
/** Fewer than 10 calls say little about a dependency's health. */
export const DEFAULT_MINIMUM_CALLS = 10;
/** Half the calls failing means the dependency is unusable for most requests. */
export const DEFAULT_FAILURE_RATE_THRESHOLD_PERCENT = 50;
/** Off by default: the failure rate already covers a run of failures once minimumCalls is met. */
export const DEFAULT_CONSECUTIVE_FAILURES = 0;
/** 30 s lets most transient outages pass without probing into them. */
export const DEFAULT_OPEN_WAIT_MS = 30_000;
/** Each failed probe doubles the wait so a long outage is probed ever more rarely. */
export const DEFAULT_OPEN_WAIT_MULTIPLIER = 2;
/** Probing at least every 5 minutes notices recovery soon enough. */
export const DEFAULT_MAX_OPEN_WAIT_MS = 300_000;
/** One probe for the whole fleet is the least load on a dependency that may still be down. */
export const DEFAULT_HALF_OPEN_PERMITS = 1;
/** A call that takes longer than a minute in total is no longer an interactive call. */
export const MAX_DEFAULT_DEADLINE_MS = 60_000;
/** Count windows are the simplest to reason about and need no clock. */
export const DEFAULT_WINDOW_KIND: WindowKind = "count";
/** A minute holds enough calls of a busy dependency and forgets an outage soon after it ends. */
export const DEFAULT_WINDOW_DURATION_MS = 60_000;
/** Off by default: what counts as slow depends on the dependency, so a policy must say it. */
export const DEFAULT_SLOW_CALL_MS = 0;
/** Once a policy sets a slow-call limit, only a window of nothing but slow calls opens. */
export const DEFAULT_SLOW_CALL_RATE_THRESHOLD_PERCENT = 100;
/** A minute: longer Retry-After values are capped so the fleet probes again within a minute. */
export const DEFAULT_MAX_RETRY_AFTER_OPEN_MS = 60_000;

/** Five deliveries ride out a short outage without keeping a poisoned job forever. */
export const DEFAULT_QUEUE_MAX_DELIVERIES = 5;
/** A second gives a dependency that just failed a moment before the job is tried again. */
export const DEFAULT_WORKER_INITIAL_BACKOFF_MS = 1_000;
/** Redelivering at least once a minute keeps deferred work moving once the dependency is back. */
export const DEFAULT_WORKER_MAX_BACKOFF_MS = 60_000;
/** A week covers a weekend outage; older work is usually no longer wanted. */
export const DEFAULT_QUEUE_MAX_AGE_MS = 7 * 24 * 3_600_000;
/** Bounds the stream's storage while holding hours of a busy service's deferred calls. */
export const DEFAULT_QUEUE_MAX_JOBS = 100_000;
/** 64 KiB holds a chat request with its context; larger payloads belong in object storage. */
export const DEFAULT_QUEUE_MAX_PAYLOAD_BYTES = 65_536;
/** Largest job payload a policy may allow (policy.queue.max_payload_bytes). */
export const MAX_JOB_PAYLOAD_BYTES = 1_048_576;
/** Thirty seconds covers one attempt of most calls before JetStream hands the job to another. */
export const DEFAULT_QUEUE_ACK_WAIT_MS = 30_000;

/** The queue settings a policy gets when it names none. */
export const DEFAULT_QUEUE: Readonly<QueueSpec> = Object.freeze({
  maxDeliveries: DEFAULT_QUEUE_MAX_DELIVERIES,
  workerInitialBackoffMs: DEFAULT_WORKER_INITIAL_BACKOFF_MS,
  workerMaxBackoffMs: DEFAULT_WORKER_MAX_BACKOFF_MS,
  maxAgeMs: DEFAULT_QUEUE_MAX_AGE_MS,
  maxJobs: DEFAULT_QUEUE_MAX_JOBS,
  maxPayloadBytes: DEFAULT_QUEUE_MAX_PAYLOAD_BYTES,
  ackWaitMs: DEFAULT_QUEUE_ACK_WAIT_MS,
});
