import { DEFAULT_LEASE_MS, MAX_LEASE_MS } from "../server/domain/idempotency-ledger.ts";
import type { ControlPlane } from "./control-plane.ts";
import type { EventEmitter } from "./events.ts";
import type { AttemptContext, CallOptions, CallResult } from "./guarded-call.ts";
import { checkCallOptions, guardedCall } from "./guarded-call.ts";
import { checkIdempotencyOptions, runOnce } from "./idempotency-ledger.ts";
import { requestHash } from "./request-hash.ts";
import { jsonCodec, type ResultCodec } from "./result-codec.ts";
import { callTraceId } from "./trace.ts";

/**
 * A guarded call's lease lasts its deadline plus this margin, so that its own retries, back-off
 * and the Complete after them fit in one lease.
 */
export const LEASE_MARGIN_MS = 2_000;
/** Lease of `once` when none is given: the server's default lease. */
export const DEFAULT_ONCE_LEASE_MS = DEFAULT_LEASE_MS;
/**
 * How much longer than one lease `once` waits for another holder by default: by then the holder
 * has finished, or its lease has lapsed and this call takes the work over.
 */
export const ONCE_WAIT_MARGIN_MS = 1_000;

/** How an idempotency key is applied to a guarded call. */
export interface IdempotencyOptions<T> {
  /**
   * What identifies the request, JSON-serializable (the prompt, the order): the key's request
   * hash is SHA-256 of the canonical JSON of `{ dependency, request }`. The same key with another
   * request fails with IdempotencyConflictError. Default: null (only the dependency counts).
   */
  request?: unknown;
  /**
   * A scope shared by every service that names it (letters, digits, '.', '_', '-'). Default: the
   * calling service's own scope, so two services cannot meet on a key by accident.
   */
  scope?: string;
  /** Lease in milliseconds (100-3 600 000). Default: the call's deadline plus 2 s. */
  leaseMs?: number;
  /** How long the stored result is kept, in milliseconds (1 000-30 days). Default: 24 h. */
  retentionMs?: number;
  /**
   * How the result is stored and handed back. Default: JSON (`JSON.parse` of what the first
   * call returned), so results must be plain data; the guarded fetch stores responses.
   */
  codec?: ResultCodec<T>;
  /**
   * When the control plane cannot be reached: false (default) fails the call with
   * IdempotencyUnavailableError before anything runs; true runs it without the once-only
   * guarantee (and emits an "unavailable" idempotency event).
   */
  runWithoutLedger?: boolean;
}

/**
 * A guarded call with an idempotency key (DESIGN §5: Begin before the first attempt). The key
 * is begun once; the attempts, retries and fallback of the call all run under its lease. A
 * result is stored only when an attempt produced it: a degraded value (fallback) or a failed
 * answer releases the key, so a later call tries again. Waiting for another holder of the key
 * counts against the call's deadline.
 */
export async function idempotentCall<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  dependency: string,
  fn: (ctx: AttemptContext) => Promise<T>,
  options: CallOptions<T>,
): Promise<CallResult<T>> {
  const key = options.idempotencyKey!;
  const idem = options.idempotency ?? {};
  checkCallOptions(options);
  checkIdempotencyOptions(key, idem);
  const policy = await cp.policy(dependency);
  const startedMs = Date.now();
  const deadlineMs = Math.min(options.deadlineMs ?? policy.deadlineMs, policy.deadlineMs);
  const traceId = callTraceId(options.traceId);
  let result: CallResult<T> | undefined;
  const { value, replayed } = await runOnce(
    cp,
    events,
    service,
    {
      key,
      sharedScope: idem.scope,
      requestHash: requestHash({ dependency, request: idem.request ?? null }),
      leaseMs: idem.leaseMs ?? Math.min(MAX_LEASE_MS, deadlineMs + LEASE_MARGIN_MS),
      retentionMs: idem.retentionMs,
      waitUntilMs: startedMs + deadlineMs,
      traceId,
      causationId: options.causationId ?? "",
      runWithoutLedger: idem.runWithoutLedger ?? false,
      signal: options.signal,
    },
    idem.codec ?? jsonCodec<T>(),
    async () => {
      // What is left of the deadline after waiting for another holder.
      const remainingMs = Math.max(1, startedMs + deadlineMs - Date.now());
      result = await guardedCall(cp, events, service, dependency, fn, {
        ...options,
        traceId,
        deadlineMs: remainingMs,
      });
      return {
        value: result.value,
        store: !result.degraded && result.error === undefined,
        eventId: result.eventId ?? "",
      };
    },
  );
  if (replayed || result === undefined) {
    return { value, degraded: false, attempts: 0, traceId, replayed: true };
  }
  return { ...result, value };
}

/** What `once` tells the function it runs. */
export interface OnceContext {
  key: string;
  traceId: string;
  /** When the lease ends (Unix ms); finish before it, or another caller may run the work too. */
  leaseExpiresAtMs: number;
  /** An earlier holder's lease lapsed: its run may have had partial effects. */
  takenOver: boolean;
  /**
   * The event_id of the ledger event that started this run, to name as the cause of the
   * function's own events. Empty when it ran without the ledger.
   */
  causationId: string;
}

/** Options of `once`. */
export interface OnceOptions {
  /** What identifies the work, JSON-serializable; hashed as the canonical JSON of `{ request }`. */
  request?: unknown;
  /** A scope shared by the services that name it; the calling service's own scope by default. */
  scope?: string;
  /** Lease in milliseconds (100-3 600 000). Default 30 000. */
  leaseMs?: number;
  /**
   * How long to wait for another caller that holds the key, in milliseconds; then
   * IdempotencyInProgressError. Default: the lease plus 1 s. 0 fails at once.
   */
  waitMs?: number;
  /** How long the stored result is kept, in milliseconds (1 000-30 days). Default: 24 h. */
  retentionMs?: number;
  /** The W3C trace id; the active OpenTelemetry span's, else a new one, when unset. */
  traceId?: string;
  /** The event_id of the event that led to this work. */
  causationId?: string;
  /** Run without the guarantee when the control plane cannot be reached, instead of failing. */
  runWithoutLedger?: boolean;
  /** Stops waiting for another holder (the function itself is not cancelled). */
  signal?: AbortSignal;
}

/**
 * Runs `fn` once per key across the fleet and returns its result; every later call with the key
 * (and the same request) returns the stored result without running `fn`. The result is stored as
 * JSON. A throwing `fn` releases the key, so a later call runs it again.
 */
export async function once<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  key: string,
  fn: (ctx: OnceContext) => Promise<T>,
  options: OnceOptions = {},
): Promise<T> {
  checkIdempotencyOptions(key, options);
  const leaseMs = options.leaseMs ?? DEFAULT_ONCE_LEASE_MS;
  const waitMs = options.waitMs ?? leaseMs + ONCE_WAIT_MARGIN_MS;
  if (!Number.isFinite(waitMs) || waitMs < 0) {
    throw new RangeError(`waitMs must be a non-negative number; got ${waitMs}`);
  }
  if (options.traceId !== undefined && !/^[0-9a-f]{32}$/.test(options.traceId)) {
    throw new RangeError("traceId must be a W3C trace id: 32 lowercase hex digits");
  }
  if (options.causationId !== undefined && options.causationId.length > 128) {
    throw new RangeError("causationId must be at most 128 characters");
  }
  const traceId = callTraceId(options.traceId);
  const { value } = await runOnce(
    cp,
    events,
    service,
    {
      key,
      sharedScope: options.scope,
      requestHash: requestHash({ request: options.request ?? null }),
      leaseMs,
      retentionMs: options.retentionMs,
      waitUntilMs: Date.now() + waitMs,
      traceId,
      causationId: options.causationId ?? "",
      runWithoutLedger: options.runWithoutLedger ?? false,
      signal: options.signal,
    },
    jsonCodec<T>(),
    async (lease) => ({
      value: await fn({
        key,
        traceId,
        leaseExpiresAtMs: lease?.leaseExpiresAtMs ?? 0,
        takenOver: lease?.takenOver ?? false,
        causationId: lease?.eventId ?? "",
      }),
      store: true,
      eventId: lease?.eventId ?? "",
    }),
  );
  return value;
}
