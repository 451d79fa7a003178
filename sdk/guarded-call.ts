import { randomUUID } from "node:crypto";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { backoffMs } from "./backoff.ts";
import { type AttemptResult, type Classification, classifyError } from "./classify.ts";
import type { Admission, ControlPlane } from "./control-plane.ts";
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
import { callTraceId, newSpanId, traceparent } from "./trace.ts";

/** What the guarded function gets for each attempt. */
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

const RESULT: Record<AttemptResult, OutcomeResult> = {
  success: OutcomeResult.SUCCESS,
  failure: OutcomeResult.FAILURE,
  timeout: OutcomeResult.TIMEOUT,
  rejected: OutcomeResult.REJECTED,
  cancelled: OutcomeResult.CANCELLED,
  ignored: OutcomeResult.IGNORED,
};

type AttemptEnd<T> =
  | { kind: "value"; value: T }
  | { kind: "error"; error: unknown }
  | { kind: "timeout" }
  | { kind: "cancelled"; reason: unknown };

/**
 * Runs one attempt with its own timeout. The timer aborts the attempt's signal only when it
 * fires; on the success path nothing is aborted (an abort costs ~10 µs). The attempt ends at the
 * timeout even if the function ignores its signal.
 */
async function runAttempt<T>(
  fn: (ctx: AttemptContext) => Promise<T>,
  ctx: Omit<AttemptContext, "signal">,
  timeoutMs: number,
  callerSignal: AbortSignal | undefined,
): Promise<AttemptEnd<T>> {
  const controller = new AbortController();
  let settle: (end: AttemptEnd<T>) => void = () => {};
  const ended = new Promise<AttemptEnd<T>>((resolve) => {
    settle = resolve;
  });
  const timer = setTimeout(() => {
    controller.abort(new DOMException("attempt timed out", "TimeoutError"));
    settle({ kind: "timeout" });
  }, timeoutMs);
  const onCancel = () => {
    controller.abort(callerSignal?.reason);
    settle({ kind: "cancelled", reason: callerSignal?.reason });
  };
  callerSignal?.addEventListener("abort", onCancel, { once: true });
  try {
    const work = fn({ ...ctx, signal: controller.signal }).then(
      (value): AttemptEnd<T> => ({ kind: "value", value }),
      (error: unknown): AttemptEnd<T> => ({ kind: "error", error }),
    );
    return await Promise.race([work, ended]);
  } finally {
    clearTimeout(timer);
    callerSignal?.removeEventListener("abort", onCancel);
  }
}

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
export async function guardedCall<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  dependency: string,
  fn: (ctx: AttemptContext) => Promise<T>,
  options: CallOptions<T>,
): Promise<CallResult<T>> {
  checkCallOptions(options);
  const callerSignal = options.signal;
  if (callerSignal?.aborted) throw cancellationError(callerSignal.reason);
  const policy = await cp.policy(dependency);
  const startedMs = Date.now();
  const deadlineMs = Math.min(options.deadlineMs ?? policy.deadlineMs, policy.deadlineMs);
  const deadlineAtMs = startedMs + deadlineMs;
  const traceId = callTraceId(options.traceId);
  const requestId = newSpanId();
  let attemptsMade = 0;
  let previousBackoffMs = 0;
  let failure: BulwarkError | undefined;
  let lastCause: unknown;
  let lastFailedValue: { value: T } | undefined;
  /** The event_id of the last attempt or rejection: the cause of a retry or fallback. */
  let lastEventId = "";

  const report = (
    attempt: number,
    admission: Admission,
    c: Pick<Classification, "result" | "errorType" | "statusCode" | "retryAfterMs">,
    latencyMs: number,
    spanId: string,
    startedAtMs: number,
  ) => {
    const eventId = randomUUID();
    lastEventId = eventId;
    cp.report({
      dependency,
      service,
      attempt,
      permitId: admission.kind === "probe" ? admission.permitId : "",
      result: RESULT[c.result],
      errorType: c.errorType,
      statusCode: c.statusCode,
      latencyMs: Math.min(Math.round(latencyMs), 86_400_000),
      retryAfterMs: Math.min(c.retryAfterMs ?? 0, 86_400_000),
      traceId,
      requestId,
      causationId: options.causationId ?? "",
    });
    if (events.active && admission.kind !== "reject") {
      events.emit(
        {
          type: "attempt",
          dependency,
          attempt,
          admission: admission.kind,
          traceId,
          spanId,
          startedAtMs,
          result: c.result,
          errorType: c.errorType,
          statusCode: c.statusCode,
          latencyMs,
        },
        { eventId, causationId: options.causationId ?? "" },
      );
    }
  };

  for (let attempt = 1; attempt <= policy.retry.maxAttempts; attempt++) {
    const remainingMs = deadlineAtMs - Date.now();
    if (remainingMs <= 0) {
      failure = new DeadlineExceededError(dependency, deadlineMs, lastCause);
      break;
    }
    const admission = await cp.acquire(dependency, attempt, traceId, requestId);
    if (admission.kind === "reject") {
      report(
        attempt,
        admission,
        {
          result: "rejected",
          errorType: "circuit_open",
          statusCode: 0,
          retryAfterMs: undefined,
        },
        0,
        "",
        0,
      );
      events.emit(
        { type: "rejected", dependency, attempt, retryAtMs: admission.retryAtMs, traceId },
        { eventId: lastEventId, causationId: options.causationId ?? "" },
      );
      failure = new CircuitOpenError(dependency, admission.retryAtMs);
      failure.cause = lastCause;
      break;
    }

    const spanId = newSpanId();
    const attemptTimeoutMs = Math.max(1, Math.min(policy.timeoutMs, deadlineAtMs - Date.now()));
    const attemptStarted = performance.now();
    const attemptStartedAtMs = Date.now();
    attemptsMade++;
    const end = await runAttempt(
      fn,
      { attempt, traceId, spanId, traceparent: traceparent(traceId, spanId) },
      attemptTimeoutMs,
      callerSignal,
    );
    const latencyMs = performance.now() - attemptStarted;

    let c: Classification;
    switch (end.kind) {
      case "cancelled":
        report(
          attempt,
          admission,
          {
            result: "cancelled",
            errorType: "cancelled",
            statusCode: 0,
            retryAfterMs: undefined,
          },
          latencyMs,
          spanId,
          attemptStartedAtMs,
        );
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
          report(
            attempt,
            admission,
            valueClass ?? {
              result: "success",
              errorType: "",
              statusCode: 0,
              retryAfterMs: undefined,
            },
            latencyMs,
            spanId,
            attemptStartedAtMs,
          );
          return {
            value: end.value,
            degraded: false,
            attempts: attemptsMade,
            traceId,
            eventId: lastEventId,
          };
        }
        c = valueClass;
        if (c.result === "ignored") {
          report(attempt, admission, c, latencyMs, spanId, attemptStartedAtMs);
          return {
            value: end.value,
            degraded: false,
            attempts: attemptsMade,
            traceId,
            eventId: lastEventId,
          };
        }
        if (lastFailedValue !== undefined) options.discardValue?.(lastFailedValue.value);
        lastFailedValue = { value: end.value };
        lastCause = new Error(`${dependency} answered ${c.errorType}`);
        break;
      }
    }
    report(attempt, admission, c, latencyMs, spanId, attemptStartedAtMs);

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
    if (Date.now() + waitMs >= deadlineAtMs) {
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
        traceId,
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
      { type: "fallback", dependency, errorName: error.name, traceId },
      { causationId: lastEventId },
    );
    const value = await options.fallback(error);
    return { value, degraded: true, attempts: attemptsMade, traceId, error };
  }
  // With no fallback, a failed value (the last 503 Response) is what the caller gets, so an HTTP
  // client sees the dependency's own answer.
  if (lastFailedValue !== undefined) {
    return {
      value: lastFailedValue.value,
      degraded: false,
      attempts: attemptsMade,
      traceId,
      error,
    };
  }
  throw error;
}
