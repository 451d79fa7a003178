// Imported rather than read from the global, whose lazy getter runs on every read.
import { performance } from "node:perf_hooks";
import { Attempt, CANCELLED, CallIds, REJECTED, reportAttempt, SUCCESS } from "./attempt.ts";
import { backoffMs } from "./backoff.ts";
import { type Classification, classifyError } from "./classify.ts";
import type { ControlPlane } from "./control-plane.ts";
import type { DeferrableOptions } from "./deferred/deferrable-call.ts";
import {
  AttemptTimeoutError,
  type BulwarkError,
  CircuitOpenError,
  DeadlineExceededError,
  RetriesExhaustedError,
} from "./errors.ts";
import type { EventEmitter } from "./events.ts";
import type { IdempotencyOptions } from "./idempotent-call.ts";

/**
 * What the guarded function gets for each attempt. `signal`, `traceId`, `spanId` and
 * `traceparent` are made when first read (so a call that needs none costs none): read them by
 * name; spreading the context does not copy them.
 */
export interface AttemptContext {
  /** Aborted when the attempt times out or the caller cancels; pass it to fetch. */
  signal: AbortSignal;
  /** 1 for the first attempt. */
  attempt: number;
  traceId: string;
  /** This attempt's span id and the `traceparent` header to send with it. */
  spanId: string;
  traceparent: string;
}

export interface CallOptions<T> {
  /** Cancels the call; a cancelled call is never counted as a failure. */
  signal?: AbortSignal;
  /** Overall deadline in milliseconds; the policy's deadline when unset, and at most it. */
  deadlineMs?: number;
  /**
   * Produces a degraded result when the call fails (breaker open, retries exhausted, deadline).
   * Not used for the caller's own errors (4xx) or cancellations.
   */
  fallback?: (error: BulwarkError) => T | Promise<T>;
  /**
   * Classifies a value the function returned rather than threw (a fetch Response with a 503,
   * say). Return undefined for a success.
   */
  classifyValue?: (value: T) => Classification | undefined;
  /** Disposes of a failed value before a retry (a Response's unread body). */
  discardValue?: (value: T) => void;
  /** The W3C trace id to use; the active OpenTelemetry span's, else a new one, when unset. */
  traceId?: string;
  /**
   * The event_id of the application event that led to this call. A breaker transition the call
   * causes names it as its cause, so the causal chain can be rebuilt.
   */
  causationId?: string;
  /**
   * Queue this payload for the dependency's workers when the call cannot be made now (breaker
   * open, retries exhausted, deadline): see deferred/deferrable-call.ts for what the caller gets.
   */
  deferrable?: DeferrableOptions;
  /**
   * Runs the call at most once per key across the fleet (1-255 bytes): a later call with the
   * same key and request gets the stored result without calling the dependency. Retries of this
   * call reuse the key. See IdempotencyOptions and README, "Idempotency".
   */
  idempotencyKey?: string;
  /** How the idempotency key is applied; used only with `idempotencyKey`. */
  idempotency?: IdempotencyOptions<T>;
}

export interface CallResult<T> {
  value: T;
  /** The value came from the fallback. */
  degraded: boolean;
  /** Attempts that went out to the dependency. */
  attempts: number;
  traceId: string;
  /** Why the call degraded. */
  error?: BulwarkError;
  /** The job a deferrable call was queued as, when it was. */
  deferredJobId?: string;
  /** The value is the stored result of an earlier call with the same idempotency key. */
  replayed?: boolean;
  /** The event_id of the attempt that produced the value, when an attempt did. */
  eventId?: string;
}

/**
 * How far past a waited-out Retry-After a retry follows the fleet's breaker that the same
 * Retry-After opened: the breaker's time starts when the server reads the report (up to the
 * report interval plus a round trip later), so a second covers it; a longer open is a real one.
 */
const RETRY_AFTER_ALIGN_MS = 1_000;

function sleep(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function cancellationError(reason: unknown): unknown {
  return reason ?? new DOMException("the call was cancelled", "AbortError");
}

/**
 * Refuses call options the control plane would refuse later (which would drop the whole report
 * batch they travel in), naming the option and its rule.
 */
export function checkCallOptions(
  options: Pick<CallOptions<unknown>, "deadlineMs" | "traceId" | "causationId">,
): void {
  const { deadlineMs, traceId, causationId } = options;
  if (deadlineMs !== undefined && (!Number.isFinite(deadlineMs) || deadlineMs <= 0)) {
    throw new RangeError(`options.deadlineMs must be a positive number; got ${deadlineMs}`);
  }
  if (traceId !== undefined && !/^[0-9a-f]{32}$/.test(traceId)) {
    throw new RangeError("options.traceId must be a W3C trace id: 32 lowercase hex digits");
  }
  if (causationId !== undefined && causationId.length > 128) {
    throw new RangeError("options.causationId must be at most 128 characters");
  }
}

/**
 * The guarded call of DESIGN §5: policy → trace id → attempts (admission, the function under its
 * timeout and the overall deadline, classification, report) → retries of transient failures with
 * capped exponential back-off and jitter, honouring Retry-After within the deadline → fallback.
 */
export function guardedCall<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  dependency: string,
  fn: (ctx: AttemptContext) => Promise<T>,
  options: CallOptions<T>,
): Promise<CallResult<T>> {
  return runGuarded(cp, events, service, dependency, fn, options, false) as Promise<CallResult<T>>;
}

/** Like guardedCall, but resolves with the value alone (one object less per call). */
export function guardedValue<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  dependency: string,
  fn: (ctx: AttemptContext) => Promise<T>,
  options: CallOptions<T>,
): Promise<T> {
  return runGuarded(cp, events, service, dependency, fn, options, true) as Promise<T>;
}

/** A call's result, for `execute` (`call` returns the value alone and makes no trace id). */
class GuardedResult<T> implements CallResult<T> {
  readonly traceId: string;
  readonly eventId: string | undefined;

  constructor(
    readonly value: T,
    readonly degraded: boolean,
    readonly attempts: number,
    ids: CallIds,
    eventId: string,
    readonly error?: BulwarkError,
  ) {
    this.traceId = ids.traceId;
    this.eventId = eventId === "" ? undefined : eventId;
  }
}

async function runGuarded<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  dependency: string,
  fn: (ctx: AttemptContext) => Promise<T>,
  options: CallOptions<T>,
  valueOnly: boolean,
): Promise<CallResult<T> | T> {
  checkCallOptions(options);
  const callerSignal = options.signal;
  if (callerSignal?.aborted) throw cancellationError(callerSignal.reason);
  const policy = cp.policyNow(dependency) ?? (await cp.policy(dependency));
  // Deadlines, timeouts and latencies all run on the monotonic clock, read once when an attempt
  // starts and once when it ends: each read shows in the cost of a call on the fast path.
  const startedMs = performance.now();
  const deadlineMs = Math.min(options.deadlineMs ?? policy.deadlineMs, policy.deadlineMs);
  const deadlineAtMs = startedMs + deadlineMs;
  let attemptsMade = 0;
  let previousBackoffMs = 0;
  let failure: BulwarkError | undefined;
  let lastCause: unknown;
  let lastFailedValue: { value: T } | undefined;
  /** The event_id of the last attempt or rejection: the cause of a retry or fallback. */
  let lastEventId = "";
  /** The wait before this attempt was the dependency's Retry-After. */
  let waitedOutRetryAfter = false;

  const ids = new CallIds(
    cp,
    events,
    service,
    dependency,
    options.traceId,
    options.causationId ?? "",
  );

  for (let attempt = 1; attempt <= policy.retry.maxAttempts; attempt++) {
    let nowMs = attempt === 1 ? startedMs : performance.now();
    if (deadlineAtMs - nowMs <= 0) {
      failure = new DeadlineExceededError(dependency, deadlineMs, lastCause);
      break;
    }
    let admission =
      cp.admitFast(dependency) ??
      (await cp.acquire(dependency, attempt, ids.traceId, ids.requestId));
    if (admission.kind === "reject" && waitedOutRetryAfter && admission.retryAtMs > 0) {
      // The Retry-After this call waited out opened the fleet's breaker from our report, a few
      // milliseconds after we saw the answer: wait for the breaker too, then ask once more (the
      // fleet's single probe goes to whoever asks first).
      waitedOutRetryAfter = false;
      const gapMs = Math.max(0, admission.retryAtMs - Date.now());
      if (gapMs <= RETRY_AFTER_ALIGN_MS && performance.now() + gapMs < deadlineAtMs) {
        if (!(await sleep(gapMs, callerSignal))) throw cancellationError(callerSignal?.reason);
        nowMs = performance.now();
        admission =
          cp.admitFast(dependency) ??
          (await cp.acquire(dependency, attempt, ids.traceId, ids.requestId));
      }
    }
    if (admission.kind === "reject") {
      lastEventId = reportAttempt(ids, attempt, admission, REJECTED, 0, undefined);
      if (events.active)
        events.emit(
          {
            type: "rejected",
            dependency,
            attempt,
            retryAtMs: admission.retryAtMs,
            traceId: ids.traceId,
          },
          { eventId: lastEventId, causationId: ids.causationId },
        );
      failure = new CircuitOpenError(dependency, admission.retryAtMs);
      failure.cause = lastCause;
      break;
    }

    const ctx = new Attempt<T>(attempt, ids, callerSignal);
    if (admission.kind !== "fleet") nowMs = performance.now(); // the server may have taken a while
    const attemptTimeoutMs = Math.max(
      1,
      Math.min(policy.timeoutMs, Math.ceil(deadlineAtMs - nowMs)),
    );
    attemptsMade++;
    const end = await ctx.run(fn, attemptTimeoutMs, nowMs);
    const latencyMs = performance.now() - nowMs;

    let c: Classification;
    switch (end.kind) {
      case "cancelled":
        lastEventId = reportAttempt(ids, attempt, admission, CANCELLED, latencyMs, ctx);
        throw cancellationError(end.reason);
      case "timeout": {
        const timedOutAtDeadline = attemptTimeoutMs < policy.timeoutMs;
        lastCause = new AttemptTimeoutError(dependency, attemptTimeoutMs);
        c = {
          result: "timeout",
          retryable: !timedOutAtDeadline,
          errorType: "timeout",
          statusCode: 0,
          retryAfterMs: undefined,
        };
        break;
      }
      case "error":
        lastCause = end.error;
        c = classifyError(end.error);
        break;
      case "value": {
        const valueClass = options.classifyValue?.(end.value);
        if (valueClass === undefined || valueClass.result === "success") {
          lastEventId = reportAttempt(
            ids,
            attempt,
            admission,
            valueClass ?? SUCCESS,
            latencyMs,
            ctx,
          );
          return valueOnly
            ? end.value
            : new GuardedResult(end.value, false, attemptsMade, ids, lastEventId);
        }
        c = valueClass;
        if (c.result === "ignored") {
          lastEventId = reportAttempt(ids, attempt, admission, c, latencyMs, ctx);
          return valueOnly
            ? end.value
            : new GuardedResult(end.value, false, attemptsMade, ids, lastEventId);
        }
        if (lastFailedValue !== undefined) options.discardValue?.(lastFailedValue.value);
        lastFailedValue = { value: end.value };
        lastCause = new Error(`${dependency} answered ${c.errorType}`);
        break;
      }
    }
    lastEventId = reportAttempt(ids, attempt, admission, c, latencyMs, ctx);

    // The caller's own error: returned at once, neither retried nor degraded.
    if (c.result === "ignored" && end.kind === "error") throw end.error;
    if (!c.retryable) {
      failure =
        end.kind === "timeout"
          ? new DeadlineExceededError(dependency, deadlineMs, lastCause)
          : new RetriesExhaustedError(dependency, attemptsMade, lastCause);
      break;
    }
    if (attempt === policy.retry.maxAttempts) {
      failure = new RetriesExhaustedError(dependency, attemptsMade, lastCause);
      break;
    }
    let waitMs = backoffMs(policy.retry, attempt, previousBackoffMs);
    previousBackoffMs = waitMs;
    if (c.retryAfterMs !== undefined) {
      if (c.retryAfterMs > policy.retry.maxRetryAfterMs) {
        failure = new RetriesExhaustedError(dependency, attemptsMade, lastCause);
        break;
      }
      waitMs = Math.max(waitMs, c.retryAfterMs);
    }
    waitedOutRetryAfter = c.retryAfterMs !== undefined;
    if (performance.now() + waitMs >= deadlineAtMs) {
      failure = new DeadlineExceededError(dependency, deadlineMs, lastCause);
      break;
    }
    events.emit(
      {
        type: "retry",
        dependency,
        attempt: attempt + 1,
        delayMs: waitMs,
        errorType: c.errorType,
        traceId: ids.traceId,
      },
      { causationId: lastEventId },
    );
    if (lastFailedValue !== undefined) {
      options.discardValue?.(lastFailedValue.value);
      lastFailedValue = undefined;
    }
    if (!(await sleep(waitMs, callerSignal))) throw cancellationError(callerSignal?.reason);
  }

  const error = failure ?? new RetriesExhaustedError(dependency, attemptsMade, lastCause);
  if (options.fallback !== undefined) {
    if (lastFailedValue !== undefined) options.discardValue?.(lastFailedValue.value);
    events.emit(
      { type: "fallback", dependency, errorName: error.name, traceId: ids.traceId },
      { causationId: lastEventId },
    );
    const value = await options.fallback(error);
    return valueOnly
      ? value
      : new GuardedResult(value, true, attemptsMade, ids, lastEventId, error);
  }
  // With no fallback, a failed value (the last 503 Response) is what the caller gets, so an HTTP
  // client sees the dependency's own answer.
  if (lastFailedValue !== undefined) {
    const value = lastFailedValue.value;
    return valueOnly
      ? value
      : new GuardedResult(value, false, attemptsMade, ids, lastEventId, error);
  }
  throw error;
}
