/**
 * Bulwark SDK: guard calls to external dependencies with the fleet's circuit breakers,
 * timeouts, retries and fallbacks.
 */
export { type Bulwark, createBulwark } from "./bulwark.ts";
export type { AttemptResult, Classification } from "./classify.ts";
export type { BreakerGate } from "./deferred/breaker-gate.ts";
export type { DeferrableOptions } from "./deferred/deferrable-call.ts";
export type { Job } from "./deferred/job-message.ts";
export type { EnqueueOptions, JobPayload } from "./deferred/job-queue.ts";
export {
  DEFAULT_WORKER_CONCURRENCY,
  type JobHandler,
  type JobWorker,
  type WorkerOptions,
  type WorkerState,
} from "./deferred/job-worker.ts";
export { isPermanentJobError, PermanentJobError } from "./deferred/permanent-job-error.ts";
export {
  AttemptTimeoutError,
  BulwarkError,
  type BulwarkErrorCode,
  CallDeferredError,
  CircuitOpenError,
  ControlPlaneError,
  DeadlineExceededError,
  IdempotencyConflictError,
  IdempotencyInProgressError,
  IdempotencyUnavailableError,
  isAttemptTimeoutError,
  isBulwarkError,
  isCallDeferredError,
  isCircuitOpenError,
  isControlPlaneError,
  isDeadlineExceededError,
  isIdempotencyConflictError,
  isIdempotencyInProgressError,
  isIdempotencyUnavailableError,
  isPayloadTooLargeError,
  isPolicyNotFoundError,
  isQueueFullError,
  isQueueUnavailableError,
  isRetriesExhaustedError,
  PayloadTooLargeError,
  PolicyNotFoundError,
  QueueFullError,
  QueueUnavailableError,
  RetriesExhaustedError,
} from "./errors.ts";
export type {
  BulwarkEvent,
  BulwarkEventListener,
  EventEnvelope,
  IdempotencyStatus,
  JobEvent,
  WorkerEvent,
} from "./events.ts";
export {
  type BreakerStateEvent,
  type FleetEvent,
  type FleetEventListener,
  type FleetEventOrigin,
  type FleetSubscribeOptions,
  type FleetWatchOptions,
  MAX_WATCH_QUEUE,
  type PolicyDeletedEvent,
  type PolicyEvent,
} from "./fleet-events.ts";
export type { FleetBreakerState } from "./fleet-state.ts";
export type { AttemptContext, CallOptions, CallResult } from "./guarded-call.ts";
export {
  DEGRADED_HEADER,
  type GuardedFetchOptions,
  IDEMPOTENCY_KEY_HEADER,
} from "./guarded-fetch.ts";
export type { IdempotencyOptions, OnceContext, OnceOptions } from "./idempotent-call.ts";
export { type BulwarkOptions, DEFAULT_ACQUIRE_TIMEOUT_MS } from "./options.ts";
export { MAX_PENDING_OUTCOMES, REPORT_BATCH_SIZE, REPORT_INTERVAL_MS } from "./reporter.ts";
export { canonicalRequestJson, requestHash } from "./request-hash.ts";
export type { ResultCodec } from "./result-codec.ts";
