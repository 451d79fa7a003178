import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { backoffMs } from "./backoff.ts";
import { type AttemptResult, type Classification, classifyError } from "./classify.ts";
import type { Admission, ControlPlane } from "./control-plane.ts";
import {
  AttemptTimeoutError,
  type BulwarkError,
  CircuitOpenError,
  DeadlineExceededError,
  RetriesExhaustedError,
} from "./errors.ts";
import type { EventEmitter } from "./events.ts";
import { newSpanId, newTraceId, traceparent } from "./trace.ts";

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
  /** The W3C trace id to use; a new one when unset. */
  traceId?: string;
  /**
   * The event_id of the application event that led to this call. A breaker transition the call
   * causes names it as its cause, so the causal chain can be rebuilt.
   */
  causationId?: string;
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
 * One attempt: what the guarded function sees of it (the signal and span are made on first use)
 * and its run under a timeout. The success path is the whole cost of a guarded call while the
 * breaker is CLOSED, so it is kept cheap: one promise, one timer, no AbortController unless the
 * function reads `signal`, nothing aborted when it succeeds, and no closures that a bundler
 * would name at run time.
 */
class Attempt<T> implements AttemptContext {
  private controller: AbortController | undefined;
  private span: string | undefined;
  /** Why the attempt ended early: a signal asked for later is already aborted. */
  private endedBy: unknown;
  private resolve: ((end: AttemptEnd<T>) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private onCancel: (() => void) | undefined;

  constructor(
    readonly attempt: number,
    private readonly ids: CallIds,
    private readonly callerSignal: AbortSignal | undefined,
  ) {}

  get traceId(): string {
    return this.ids.traceId;
  }

  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController();
      if (this.endedBy !== undefined) this.controller.abort(this.endedBy);
    }
    return this.controller.signal;
  }

  get spanId(): string {
    this.span ??= newSpanId();
    return this.span;
  }

  get traceparent(): string {
    return traceparent(this.traceId, this.spanId);
  }

  /** Runs `fn`; ends at the timeout even if the function ignores its signal. */
  run(fn: (ctx: AttemptContext) => Promise<T>, timeoutMs: number): Promise<AttemptEnd<T>> {
    return new Promise<AttemptEnd<T>>((resolve) => {
      this.resolve = resolve;
      this.timer = setTimeout(attemptTimedOut, timeoutMs, this);
      const callerSignal = this.callerSignal;
      if (callerSignal !== undefined) {
        this.onCancel = () => {
          this.abort(callerSignal.reason);
          this.finish({ kind: "cancelled", reason: callerSignal.reason });
        };
        callerSignal.addEventListener("abort", this.onCancel, { once: true });
      }
      let work: Promise<T>;
      try {
        work = Promise.resolve(fn(this));
      } catch (error) {
        this.finish({ kind: "error", error });
        return;
      }
      work.then(
        (value) => this.finish({ kind: "value", value }),
        (error: unknown) => this.finish({ kind: "error", error }),
      );
    });
  }

  timedOut(): void {
    this.abort(new DOMException("attempt timed out", "TimeoutError"));
    this.finish(TIMEOUT_END);
  }

  private finish(end: AttemptEnd<T>): void {
    const resolve = this.resolve;
    if (resolve === undefined) return;
    this.resolve = undefined;
    clearTimeout(this.timer);
    if (this.onCancel !== undefined) this.callerSignal?.removeEventListener("abort", this.onCancel);
    resolve(end);
  }

  /** Aborts the signal, if the function ever asked for it. */
  private abort(reason: unknown): void {
    this.endedBy = reason;
    this.controller?.abort(reason);
  }
}

const TIMEOUT_END = { kind: "timeout" } as const;

function attemptTimedOut(attempt: { timedOut(): void }): void {
  attempt.timedOut();
}

/** Classifications the call itself produces, shared so the hot path allocates none. */
type Reported = Pick<Classification, "result" | "errorType" | "statusCode" | "retryAfterMs">;
const SUCCESS: Reported = {
  result: "success",
  errorType: "",
  statusCode: 0,
  retryAfterMs: undefined,
};
const REJECTED: Reported = {
  result: "rejected",
  errorType: "circuit_open",
  statusCode: 0,
  retryAfterMs: undefined,
};
const CANCELLED: Reported = {
  result: "cancelled",
  errorType: "cancelled",
  statusCode: 0,
  retryAfterMs: undefined,
};

/**
 * What every report of one call shares. The trace and request ids are made on first use: a
 * successful call nobody traced (the function never read them, no listener, `call` rather than
 * `execute`) is reported without them and costs no random bytes.
 */
class CallIds {
  private trace: string | undefined;
  private request: string | undefined;

  constructor(
    readonly cp: ControlPlane,
    readonly events: EventEmitter,
    readonly service: string,
    readonly dependency: string,
    traceId: string | undefined,
    readonly causationId: string,
  ) {
    this.trace = traceId;
  }

  get traceId(): string {
    this.trace ??= newTraceId();
    return this.trace;
  }

  get requestId(): string {
    this.request ??= newSpanId();
    return this.request;
  }

  /** The trace id if it was made; empty otherwise. */
  get traceIdIfMade(): string {
    return this.trace ?? "";
  }

  get requestIdIfMade(): string {
    return this.request ?? "";
  }
}

/** Queues one attempt's outcome for the control plane and tells listeners about it. */
function reportAttempt(
  ids: CallIds,
  attempt: number,
  admission: Admission,
  c: Reported,
  latencyMs: number,
  ctx: { readonly spanId: string } | undefined,
  startedAtMs: number,
): void {
  ids.cp.report(
    {
      dependency: ids.dependency,
      service: ids.service,
      attempt,
      permitId: admission.kind === "probe" ? admission.permitId : "",
      result: RESULT[c.result],
      errorType: c.errorType,
      statusCode: c.statusCode,
      latencyMs: Math.min(Math.round(latencyMs), 86_400_000),
      retryAfterMs: Math.min(c.retryAfterMs ?? 0, 86_400_000),
      // A failure may open the breaker, and the transition names its trace: failures get ids.
      traceId: c.result === "success" ? ids.traceIdIfMade : ids.traceId,
      requestId: c.result === "success" ? ids.requestIdIfMade : ids.requestId,
      causationId: ids.causationId,
    },
    admission,
  );
  if (ids.events.active && admission.kind !== "reject") {
    ids.events.emit({
      type: "attempt",
      dependency: ids.dependency,
      attempt,
      admission: admission.kind,
      traceId: ids.traceId,
      spanId: ctx?.spanId ?? "",
      startedAtMs,
      result: c.result,
      errorType: c.errorType,
      statusCode: c.statusCode,
      latencyMs,
    });
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
function checkCallOptions(
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

/** A call's result; its trace id is made only if someone reads it. */
class GuardedResult<T> implements CallResult<T> {
  constructor(
    readonly value: T,
    readonly degraded: boolean,
    readonly attempts: number,
    private readonly ids: CallIds,
    readonly error?: BulwarkError,
  ) {}

  get traceId(): string {
    return this.ids.traceId;
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
  const startedMs = Date.now();
  const deadlineMs = Math.min(options.deadlineMs ?? policy.deadlineMs, policy.deadlineMs);
  const deadlineAtMs = startedMs + deadlineMs;
  let attemptsMade = 0;
  let previousBackoffMs = 0;
  let failure: BulwarkError | undefined;
  let lastCause: unknown;
  let lastFailedValue: { value: T } | undefined;

  const ids = new CallIds(
    cp,
    events,
    service,
    dependency,
    options.traceId,
    options.causationId ?? "",
  );

  for (let attempt = 1; attempt <= policy.retry.maxAttempts; attempt++) {
    const remainingMs = deadlineAtMs - Date.now();
    if (remainingMs <= 0) {
      failure = new DeadlineExceededError(dependency, deadlineMs, lastCause);
      break;
    }
    const admission =
      cp.admitFast(dependency) ??
      (await cp.acquire(dependency, attempt, ids.traceId, ids.requestId));
    if (admission.kind === "reject") {
      reportAttempt(ids, attempt, admission, REJECTED, 0, undefined, 0);
      events.emit({
        type: "rejected",
        dependency,
        attempt,
        retryAtMs: admission.retryAtMs,
        traceId: ids.traceId,
      });
      failure = new CircuitOpenError(dependency, admission.retryAtMs);
      failure.cause = lastCause;
      break;
    }

    const ctx = new Attempt<T>(attempt, ids, callerSignal);
    const attemptTimeoutMs = Math.max(1, Math.min(policy.timeoutMs, deadlineAtMs - Date.now()));
    const attemptStarted = performance.now();
    const attemptStartedAtMs = Date.now();
    attemptsMade++;
    const end = await ctx.run(fn, attemptTimeoutMs);
    const latencyMs = performance.now() - attemptStarted;

    let c: Classification;
    switch (end.kind) {
      case "cancelled":
        reportAttempt(ids, attempt, admission, CANCELLED, latencyMs, ctx, attemptStartedAtMs);
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
          reportAttempt(
            ids,
            attempt,
            admission,
            valueClass ?? SUCCESS,
            latencyMs,
            ctx,
            attemptStartedAtMs,
          );
          return valueOnly ? end.value : new GuardedResult(end.value, false, attemptsMade, ids);
        }
        c = valueClass;
        if (c.result === "ignored") {
          reportAttempt(ids, attempt, admission, c, latencyMs, ctx, attemptStartedAtMs);
          return valueOnly ? end.value : new GuardedResult(end.value, false, attemptsMade, ids);
        }
        if (lastFailedValue !== undefined) options.discardValue?.(lastFailedValue.value);
        lastFailedValue = { value: end.value };
        lastCause = new Error(`${dependency} answered ${c.errorType}`);
        break;
      }
    }
    reportAttempt(ids, attempt, admission, c, latencyMs, ctx, attemptStartedAtMs);

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
    events.emit({
      type: "retry",
      dependency,
      attempt: attempt + 1,
      delayMs: waitMs,
      errorType: c.errorType,
      traceId: ids.traceId,
    });
    if (lastFailedValue !== undefined) {
      options.discardValue?.(lastFailedValue.value);
      lastFailedValue = undefined;
    }
    if (!(await sleep(waitMs, callerSignal))) throw cancellationError(callerSignal?.reason);
  }

  const error = failure ?? new RetriesExhaustedError(dependency, attemptsMade, lastCause);
  if (options.fallback !== undefined) {
    if (lastFailedValue !== undefined) options.discardValue?.(lastFailedValue.value);
    events.emit({ type: "fallback", dependency, errorName: error.name, traceId: ids.traceId });
    const value = await options.fallback(error);
    return valueOnly ? value : new GuardedResult(value, true, attemptsMade, ids, error);
  }
  // With no fallback, a failed value (the last 503 Response) is what the caller gets, so an HTTP
  // client sees the dependency's own answer.
  if (lastFailedValue !== undefined) {
    const value = lastFailedValue.value;
    return valueOnly ? value : new GuardedResult(value, false, attemptsMade, ids, error);
  }
  throw error;
}
