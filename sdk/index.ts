/**
 * Bulwark SDK: guard calls to external dependencies with the fleet's circuit breakers,
 * timeouts, retries and fallbacks.
 */
export { type Bulwark, createBulwark } from "./bulwark.ts";
export type { AttemptResult, Classification } from "./classify.ts";
export {
  AttemptTimeoutError,
  BulwarkError,
  type BulwarkErrorCode,
  CircuitOpenError,
  ControlPlaneError,
  DeadlineExceededError,
  isAttemptTimeoutError,
  isBulwarkError,
  isCircuitOpenError,
  isControlPlaneError,
  isDeadlineExceededError,
  isPolicyNotFoundError,
  isRetriesExhaustedError,
  PolicyNotFoundError,
  RetriesExhaustedError,
} from "./errors.ts";
export type { BulwarkEvent, BulwarkEventListener } from "./events.ts";
export type { AttemptContext, CallOptions, CallResult } from "./guarded-call.ts";
export { DEGRADED_HEADER, type GuardedFetchOptions } from "./guarded-fetch.ts";
export { type BulwarkOptions, DEFAULT_ACQUIRE_TIMEOUT_MS } from "./options.ts";
