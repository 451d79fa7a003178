import { BeginOutcome } from "../gen/bulwark/v1/idempotency_pb.ts";
// The server's limits, checked here too so that a bad option fails before anything runs.
import {
  MAX_KEY_BYTES,
  MAX_LEASE_MS,
  MAX_RESPONSE_BYTES,
  MAX_RETENTION_MS,
  MIN_LEASE_MS,
  MIN_RETENTION_MS,
  scopeOf,
} from "../server/domain/idempotency-ledger.ts";
import type { ControlPlane } from "./control-plane.ts";
import { isUnreachable, refused } from "./control-plane-errors.ts";
import {
  ControlPlaneError,
  IdempotencyConflictError,
  IdempotencyInProgressError,
  IdempotencyUnavailableError,
} from "./errors.ts";
import type { EventEmitter, IdempotencyStatus } from "./events.ts";
import type { ResultCodec } from "./result-codec.ts";

/**
 * A ledger RPC is one SQLite commit on the server; 5 s only lapses when the control plane is in
 * trouble, and bounds what a call pays while the SDK notices it.
 */
export const LEDGER_CALL_TIMEOUT_MS = 5_000;
/** First wait before asking again about a key another caller holds; doubles up to the cap. */
export const FIRST_POLL_MS = 20;
/** Longest wait between two questions about a held key: a waiter learns of the result soon. */
export const MAX_POLL_MS = 500;

/** Tries of a Complete the control plane did not answer, spread over a few hundred ms. */
const COMPLETE_TRIES = 3;
const COMPLETE_RETRY_MS = 100;

/** What the work is told about its lease. */
export interface Lease {
  /** When the lease ends (Unix ms): the work should be done by then, or another caller may run it. */
  leaseExpiresAtMs: number;
  /** An expired lease of another caller was taken over: its work may have had partial effects. */
  takenOver: boolean;
  /** The event_id of the ledger's "new" or "taken-over" event, to chain the work's own events. */
  eventId: string;
}

/** What the work produced. */
export interface WorkOutcome<T> {
  value: T;
  /** Store it under the key; false releases the key instead (a degraded or failed result). */
  store: boolean;
  /** The event that produced the value (the last attempt), the cause of the completion. */
  eventId: string;
}

export interface OnceSpec {
  key: string;
  /** A shared scope's name; the calling service's own scope when undefined. */
  sharedScope: string | undefined;
  requestHash: Uint8Array;
  leaseMs: number;
  /** Undefined: the server's default (24 h). */
  retentionMs: number | undefined;
  /** Until when (Unix ms) to wait for another caller that holds the key. */
  waitUntilMs: number;
  traceId: string;
  /** The caller's cause; the ledger's events name it. */
  causationId: string;
  /** Run without the guarantee when the ledger cannot be reached, instead of failing. */
  runWithoutLedger: boolean;
  signal: AbortSignal | undefined;
}

/** Refuses a key or lease the server would refuse, before anything runs. */
export function checkIdempotencyOptions(
  key: string,
  o: { leaseMs?: number | undefined; retentionMs?: number | undefined; scope?: string | undefined },
): void {
  const bytes = typeof key === "string" ? Buffer.byteLength(key, "utf8") : 0;
  if (bytes === 0 || bytes > MAX_KEY_BYTES) {
    throw new RangeError(`the idempotency key must be 1-${MAX_KEY_BYTES} bytes; got ${bytes}`);
  }
  const { leaseMs, retentionMs, scope } = o;
  if (
    leaseMs !== undefined &&
    (!Number.isInteger(leaseMs) || leaseMs < MIN_LEASE_MS || leaseMs > MAX_LEASE_MS)
  ) {
    throw new RangeError(
      `leaseMs must be an integer in [${MIN_LEASE_MS}, ${MAX_LEASE_MS}]; got ${leaseMs}`,
    );
  }
  if (
    retentionMs !== undefined &&
    (!Number.isInteger(retentionMs) ||
      retentionMs < MIN_RETENTION_MS ||
      retentionMs > MAX_RETENTION_MS)
  ) {
    throw new RangeError(
      `retentionMs must be an integer in [${MIN_RETENTION_MS}, ${MAX_RETENTION_MS}]; got ${retentionMs}`,
    );
  }
  if (scope !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(scope)) {
    throw new RangeError(
      `scope must be 1-128 letters, digits, '.', '_' or '-'; got ${JSON.stringify(scope)}`,
    );
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Runs `work` at most once per key across the fleet (DESIGN §7): Begin; a completed key returns
 * its stored result without running anything; a conflicting request fails with
 * IdempotencyConflictError; a key another caller holds is polled with growing waits until its
 * result is stored, its lease lapses (then this call takes over) or `waitUntilMs` passes
 * (IdempotencyInProgressError). A new key runs the work under the lease, then stores the result
 * (Complete) or, when the work failed or should not be stored, releases the key (Abandon).
 *
 * Known shortcomings: the lease is not extended while the work runs, so work that outlives its
 * lease may run twice; and when Complete cannot be delivered (the control plane went away after
 * the work ran) the result is returned but not stored, so the key runs again after the lease.
 * Both are reported as "not-stored" events.
 */
export async function runOnce<T>(
  cp: ControlPlane,
  events: EventEmitter,
  service: string,
  spec: OnceSpec,
  codec: ResultCodec<T>,
  work: (lease: Lease | undefined) => Promise<WorkOutcome<T>>,
): Promise<{ value: T; replayed: boolean }> {
  const scope = scopeOf(service, spec.sharedScope ?? "");
  const emit: Emit = (status, extra, causationId = spec.causationId) =>
    events.emit(
      { type: "idempotency", key: spec.key, scope, status, traceId: spec.traceId, ...extra },
      { causationId },
    );
  const call = { headers: cp.headers, timeoutMs: LEDGER_CALL_TIMEOUT_MS };
  let pollMs = FIRST_POLL_MS;
  let waiting = false;
  for (;;) {
    let res: Awaited<ReturnType<typeof cp.idempotency.begin>>;
    try {
      res = await cp.idempotency.begin(
        {
          service,
          sharedScope: spec.sharedScope ?? "",
          key: spec.key,
          requestHash: spec.requestHash,
          leaseMs: spec.leaseMs,
          retentionMs: BigInt(spec.retentionMs ?? 0),
          traceId: spec.traceId,
          causationId: spec.causationId,
        },
        { ...call, ...(spec.signal === undefined ? {} : { signal: spec.signal }) },
      );
    } catch (err) {
      if (spec.signal?.aborted) throw spec.signal.reason;
      if (!isUnreachable(err)) throw refused(`idempotency Begin of ${scope} was refused`, err);
      if (!spec.runWithoutLedger) throw new IdempotencyUnavailableError(spec.key, err);
      emit("unavailable", { error: (err as Error).message });
      return { value: (await work(undefined)).value, replayed: false };
    }
    switch (res.outcome) {
      case BeginOutcome.COMPLETED:
        emit("replayed", {});
        return { value: codec.decode(res.response), replayed: true };
      case BeginOutcome.CONFLICT:
        throw new IdempotencyConflictError(spec.key, scope);
      case BeginOutcome.IN_PROGRESS: {
        const leaseExpiresAtMs = Number(res.leaseExpiresAtUnixMs);
        const nowMs = Date.now();
        if (nowMs >= spec.waitUntilMs) {
          throw new IdempotencyInProgressError(spec.key, scope, leaseExpiresAtMs);
        }
        if (!waiting) emit("waiting", { leaseExpiresAtMs });
        waiting = true;
        // Full-ish jitter spreads the waiters; never sleep past the lease's end or the wait limit.
        const jitteredMs = pollMs / 2 + (Math.random() * pollMs) / 2;
        const untilLeaseEndsMs = Math.max(1, leaseExpiresAtMs - nowMs + 1);
        await sleep(
          Math.max(1, Math.min(jitteredMs, untilLeaseEndsMs, spec.waitUntilMs - nowMs)),
          spec.signal,
        );
        pollMs = Math.min(MAX_POLL_MS, pollMs * 2);
        continue;
      }
      case BeginOutcome.NEW:
        return await runLeased(cp, spec, res, codec, work, emit);
      default:
        // A newer control plane with an outcome this SDK does not know.
        throw new ControlPlaneError(
          `idempotency Begin of ${scope} answered an unknown outcome ${res.outcome}`,
          undefined,
        );
    }
  }
}

/** Emits an idempotency event; its cause is the caller's unless another is named. */
type Emit = (
  status: IdempotencyStatus,
  extra: { leaseExpiresAtMs?: number; error?: string },
  causationId?: string,
) => string;

async function runLeased<T>(
  cp: ControlPlane,
  spec: OnceSpec,
  res: { leaseToken: string; leaseExpiresAtUnixMs: bigint; takenOver: boolean },
  codec: ResultCodec<T>,
  work: (lease: Lease | undefined) => Promise<WorkOutcome<T>>,
  emit: Emit,
): Promise<{ value: T; replayed: boolean }> {
  const call = { headers: cp.headers, timeoutMs: LEDGER_CALL_TIMEOUT_MS };
  const leaseToken = res.leaseToken;
  const leaseExpiresAtMs = Number(res.leaseExpiresAtUnixMs);
  const abandon = async () => {
    // Best effort: a release that does not arrive lapses with the lease.
    await cp.idempotency.abandon({ leaseToken }, call).catch(() => {});
    emit("abandoned", {});
  };
  const eventId = emit(res.takenOver ? "taken-over" : "new", { leaseExpiresAtMs });
  let outcome: WorkOutcome<T>;
  try {
    outcome = await work({ leaseExpiresAtMs, takenOver: res.takenOver, eventId });
  } catch (err) {
    await abandon();
    throw err;
  }
  if (!outcome.store) {
    await abandon();
    return { value: outcome.value, replayed: false };
  }
  let encoded: { bytes: Uint8Array; value: T };
  try {
    encoded = await codec.encode(outcome.value);
  } catch (err) {
    await abandon();
    emit("not-stored", { error: `the result cannot be encoded: ${(err as Error).message}` });
    return { value: outcome.value, replayed: false };
  }
  if (encoded.bytes.length > MAX_RESPONSE_BYTES) {
    await abandon();
    emit("not-stored", {
      error: `the result is ${encoded.bytes.length} bytes; the ledger stores at most ${MAX_RESPONSE_BYTES}`,
    });
    return { value: encoded.value, replayed: false };
  }
  for (let tryNo = 1; ; tryNo++) {
    try {
      await cp.idempotency.complete(
        {
          leaseToken,
          response: encoded.bytes,
          traceId: spec.traceId,
          // The audit record names the caller's event, as breaker transitions do; without one,
          // the SDK event that produced the result.
          causationId: spec.causationId || outcome.eventId || eventId,
        },
        call,
      );
      emit("completed", {}, outcome.eventId || eventId);
      break;
    } catch (err) {
      if (isUnreachable(err) && tryNo < COMPLETE_TRIES) {
        await sleep(COMPLETE_RETRY_MS * tryNo, undefined);
        continue;
      }
      // The work ran; its result is still the caller's, but later callers will not get it.
      emit("not-stored", { error: (err as Error).message });
      break;
    }
  }
  return { value: encoded.value, replayed: false };
}
