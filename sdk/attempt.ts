/**
 * One attempt of a guarded call and its report: the hot path of every call, kept apart so its
 * cost stays visible.
 */
import { randomUUID } from "node:crypto";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import type { Admission } from "./admission.ts";
import { attemptTimeouts, Timed } from "./attempt-timeouts.ts";
import type { AttemptResult, Classification } from "./classify.ts";
import type { ControlPlane } from "./control-plane.ts";
import type { EventEmitter } from "./events.ts";
import type { AttemptContext } from "./guarded-call.ts";
import type { OutcomeFields } from "./reporter.ts";
import { callTraceId, newSpanId, traceparent } from "./trace.ts";

const RESULT: Record<AttemptResult, OutcomeResult> = {
  success: OutcomeResult.SUCCESS,
  failure: OutcomeResult.FAILURE,
  timeout: OutcomeResult.TIMEOUT,
  rejected: OutcomeResult.REJECTED,
  cancelled: OutcomeResult.CANCELLED,
  ignored: OutcomeResult.IGNORED,
};

export type AttemptEnd<T> =
  | { kind: "value"; value: T }
  | { kind: "error"; error: unknown }
  | { kind: "timeout" }
  | { kind: "cancelled"; reason: unknown };

/**
 * One attempt: what the guarded function sees of it (the signal and span are made on first use)
 * and its run under a timeout. The success path is the whole cost of a guarded call while the
 * breaker is CLOSED, so it is kept cheap: one promise, no timer of its own (see
 * attempt-timeouts.ts), no AbortController unless the function reads `signal`, nothing aborted
 * when it succeeds, and no closures that a bundler would name at run time.
 */
export class Attempt<T> extends Timed implements AttemptContext {
  private controller: AbortController | undefined;
  private span: string | undefined;
  /** Why the attempt ended early: a signal asked for later is already aborted. */
  private endedBy: unknown;
  private resolve: ((end: AttemptEnd<T>) => void) | undefined;
  private onCancel: (() => void) | undefined;

  constructor(
    readonly attempt: number,
    private readonly ids: CallIds,
    private readonly callerSignal: AbortSignal | undefined,
  ) {
    super();
  }

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

  /**
   * Runs `fn`; ends `timeoutMs` (whole milliseconds) after `nowMs` (performance.now()) even if
   * the function ignores its signal.
   */
  run(
    fn: (ctx: AttemptContext) => Promise<T>,
    timeoutMs: number,
    nowMs: number,
  ): Promise<AttemptEnd<T>> {
    return new Promise<AttemptEnd<T>>((resolve) => {
      this.resolve = resolve;
      attemptTimeouts.add(this, timeoutMs, nowMs);
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
    attemptTimeouts.remove(this);
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

/** Classifications the call itself produces, shared so the hot path allocates none. */
export type Reported = Pick<Classification, "result" | "errorType" | "statusCode" | "retryAfterMs">;
export const SUCCESS: Reported = {
  result: "success",
  errorType: "",
  statusCode: 0,
  retryAfterMs: undefined,
};
export const REJECTED: Reported = {
  result: "rejected",
  errorType: "circuit_open",
  statusCode: 0,
  retryAfterMs: undefined,
};
export const CANCELLED: Reported = {
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
export class CallIds {
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
    // The caller's trace, else the active OpenTelemetry span's, else a new one.
    this.trace ??= callTraceId(undefined);
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

/** Filled for each report and copied by the reporter: reporting allocates no object. */
const SCRATCH: OutcomeFields = {
  dependency: "",
  service: "",
  attempt: 0,
  permitId: "",
  result: OutcomeResult.UNSPECIFIED,
  errorType: "",
  statusCode: 0,
  latencyMs: 0,
  retryAfterMs: 0,
  traceId: "",
  requestId: "",
  causationId: "",
};

/**
 * Queues one attempt's outcome for the control plane and tells listeners about it. Returns the
 * attempt event's event_id, or "" when nobody listens (no event is made then).
 */
export function reportAttempt(
  ids: CallIds,
  attempt: number,
  admission: Admission,
  c: Reported,
  latencyMs: number,
  ctx: { readonly spanId: string } | undefined,
): string {
  const o = SCRATCH;
  o.dependency = ids.dependency;
  o.service = ids.service;
  o.attempt = attempt;
  o.permitId = admission.kind === "probe" ? admission.permitId : "";
  o.result = RESULT[c.result];
  o.errorType = c.errorType;
  o.statusCode = c.statusCode;
  o.latencyMs = Math.min(Math.round(latencyMs), 86_400_000);
  o.retryAfterMs = Math.min(c.retryAfterMs ?? 0, 86_400_000);
  // A failure may open the breaker, and the transition names its trace: failures get ids.
  o.traceId = c.result === "success" ? ids.traceIdIfMade : ids.traceId;
  o.requestId = c.result === "success" ? ids.requestIdIfMade : ids.requestId;
  o.causationId = ids.causationId;
  ids.cp.report(o, admission);
  if (!ids.events.active) return "";
  const eventId = randomUUID();
  if (admission.kind !== "reject") {
    ids.events.emit(
      {
        type: "attempt",
        dependency: ids.dependency,
        attempt,
        admission: admission.kind,
        traceId: ids.traceId,
        spanId: ctx?.spanId ?? "",
        // Unix time, read only when someone listens.
        startedAtMs: Math.round(Date.now() - latencyMs),
        result: c.result,
        errorType: c.errorType,
        statusCode: c.statusCode,
        latencyMs,
      },
      { eventId, causationId: ids.causationId },
    );
  }
  return eventId;
}
