/**
 * Errors a guarded call can end with. Each has a stable `name`, a `code`, a brand that survives
 * duplicate installs of the SDK (checked by the type guards, not instanceof), and chains `cause`.
 */

const BRAND = Symbol.for("bulwark.error");

export type BulwarkErrorCode =
  | "circuit_open"
  | "attempt_timeout"
  | "deadline_exceeded"
  | "retries_exhausted"
  | "policy_not_found"
  | "control_plane"
  | "idempotency_conflict"
  | "idempotency_in_progress"
  | "idempotency_unavailable"
  | "payload_too_large"
  | "queue_unavailable"
  | "queue_full"
  | "call_deferred";

export class BulwarkError extends Error {
  readonly [BRAND] = true;
  constructor(
    readonly code: BulwarkErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The breaker refused the attempt; nothing was sent to the dependency. */
export class CircuitOpenError extends BulwarkError {
  override readonly name = "CircuitOpenError";
  constructor(
    readonly dependency: string,
    /** When the breaker lets a probe through (Unix ms); 0 when unknown. */
    readonly retryAtMs: number,
  ) {
    super("circuit_open", `circuit for ${dependency} is open`);
  }
}

/** One attempt ran longer than the policy's per-attempt timeout. */
export class AttemptTimeoutError extends BulwarkError {
  override readonly name = "AttemptTimeoutError";
  constructor(
    readonly dependency: string,
    readonly timeoutMs: number,
  ) {
    super("attempt_timeout", `attempt to ${dependency} timed out after ${timeoutMs} ms`);
  }
}

/** The call's overall deadline passed before an attempt succeeded. */
export class DeadlineExceededError extends BulwarkError {
  override readonly name = "DeadlineExceededError";
  constructor(
    readonly dependency: string,
    readonly deadlineMs: number,
    cause?: unknown,
  ) {
    super("deadline_exceeded", `call to ${dependency} exceeded its ${deadlineMs} ms deadline`, {
      cause,
    });
  }
}

/** Every permitted attempt failed; `cause` is the last failure. */
export class RetriesExhaustedError extends BulwarkError {
  override readonly name = "RetriesExhaustedError";
  constructor(
    readonly dependency: string,
    readonly attempts: number,
    cause: unknown,
  ) {
    super(
      "retries_exhausted",
      `call to ${dependency} failed after ${attempts} attempt(s)${
        cause instanceof Error ? `: ${cause.message.slice(0, 200)}` : ""
      }`,
      { cause },
    );
  }
}

/** The control plane holds no policy for the dependency: a configuration mistake. */
export class PolicyNotFoundError extends BulwarkError {
  override readonly name = "PolicyNotFoundError";
  constructor(readonly dependency: string) {
    super("policy_not_found", `no policy for dependency ${dependency}; create one first`);
  }
}

/** The control plane answered with an error the SDK cannot work around. */
export class ControlPlaneError extends BulwarkError {
  override readonly name = "ControlPlaneError";
  constructor(message: string, cause: unknown) {
    super("control_plane", message, { cause });
  }
}

/**
 * The idempotency key was used before with a different request (another request hash). Nothing
 * ran, and the stored record is unchanged: use a new key for a new request.
 */
export class IdempotencyConflictError extends BulwarkError {
  override readonly name = "IdempotencyConflictError";
  constructor(
    readonly key: string,
    /** The stored scope, `service:<name>` or `shared:<name>`. */
    readonly scope: string,
  ) {
    super(
      "idempotency_conflict",
      `idempotency key ${JSON.stringify(key)} in ${scope} was used with a different request`,
    );
  }
}

/**
 * Another caller holds the key's lease and did not finish within the time this call could wait
 * (its deadline, or `waitMs`). Nothing ran here; calling again later returns its result.
 */
export class IdempotencyInProgressError extends BulwarkError {
  override readonly name = "IdempotencyInProgressError";
  constructor(
    readonly key: string,
    readonly scope: string,
    /** When the holder's lease ends (Unix ms); after it, a new call takes the work over. */
    readonly leaseExpiresAtMs: number,
  ) {
    super(
      "idempotency_in_progress",
      `idempotency key ${JSON.stringify(key)} in ${scope} is in progress elsewhere until ${new Date(leaseExpiresAtMs).toISOString()}`,
    );
  }
}

/**
 * A call with an idempotency key could not reach the ledger. Nothing ran: running without the
 * ledger could repeat the effect. `runWithoutLedger: true` opts into running anyway.
 */
export class IdempotencyUnavailableError extends BulwarkError {
  override readonly name = "IdempotencyUnavailableError";
  constructor(
    readonly key: string,
    cause: unknown,
  ) {
    super(
      "idempotency_unavailable",
      `the idempotency ledger could not be reached for key ${JSON.stringify(key)}; nothing ran`,
      { cause },
    );
  }
}

/** A job's payload is larger than the dependency's policy allows (queue.max_payload_bytes). */
export class PayloadTooLargeError extends BulwarkError {
  override readonly name = "PayloadTooLargeError";
  constructor(
    readonly dependency: string,
    readonly payloadBytes: number,
    readonly maxPayloadBytes: number,
  ) {
    super(
      "payload_too_large",
      `job payload for ${dependency} is ${payloadBytes} bytes; its policy allows at most ${maxPayloadBytes}`,
    );
  }
}

/** The work queue cannot be reached (no `nats` option, NATS down, or no answer in time). */
export class QueueUnavailableError extends BulwarkError {
  override readonly name = "QueueUnavailableError";
  constructor(
    readonly dependency: string,
    message: string,
    cause?: unknown,
  ) {
    super("queue_unavailable", `work queue of ${dependency} unavailable: ${message}`, { cause });
  }
}

/** The work queue holds queue.max_jobs jobs already and refuses more. */
export class QueueFullError extends BulwarkError {
  override readonly name = "QueueFullError";
  constructor(
    readonly dependency: string,
    cause?: unknown,
  ) {
    super("queue_full", `work queue of ${dependency} is full`, { cause });
  }
}

/**
 * A `deferrable` call could not be made now (breaker open, retries exhausted or deadline) and
 * was queued instead: a worker of the dependency will run it. `cause` is why it was deferred.
 */
export class CallDeferredError extends BulwarkError {
  override readonly name = "CallDeferredError";
  constructor(
    readonly dependency: string,
    /** The id of the queued job. */
    readonly jobId: string,
    cause: BulwarkError,
  ) {
    super("call_deferred", `call to ${dependency} was deferred as job ${jobId}`, { cause });
  }
}

function guard<T extends BulwarkError>(code: BulwarkErrorCode) {
  return (value: unknown): value is T =>
    typeof value === "object" &&
    value !== null &&
    (value as Record<symbol, unknown>)[BRAND] === true &&
    (value as BulwarkError).code === code;
}

export function isBulwarkError(value: unknown): value is BulwarkError {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<symbol, unknown>)[BRAND] === true
  );
}
export const isCircuitOpenError = guard<CircuitOpenError>("circuit_open");
export const isAttemptTimeoutError = guard<AttemptTimeoutError>("attempt_timeout");
export const isDeadlineExceededError = guard<DeadlineExceededError>("deadline_exceeded");
export const isRetriesExhaustedError = guard<RetriesExhaustedError>("retries_exhausted");
export const isPolicyNotFoundError = guard<PolicyNotFoundError>("policy_not_found");
export const isControlPlaneError = guard<ControlPlaneError>("control_plane");
export const isIdempotencyConflictError = guard<IdempotencyConflictError>("idempotency_conflict");
export const isIdempotencyInProgressError =
  guard<IdempotencyInProgressError>("idempotency_in_progress");
export const isIdempotencyUnavailableError =
  guard<IdempotencyUnavailableError>("idempotency_unavailable");
export const isPayloadTooLargeError = guard<PayloadTooLargeError>("payload_too_large");
export const isQueueUnavailableError = guard<QueueUnavailableError>("queue_unavailable");
export const isQueueFullError = guard<QueueFullError>("queue_full");
export const isCallDeferredError = guard<CallDeferredError>("call_deferred");
