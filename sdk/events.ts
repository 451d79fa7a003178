import { randomUUID } from "node:crypto";
import type { AttemptResult } from "./classify.ts";

/**
 * Fields every SDK event carries, as the server's events do (DESIGN §8), so the causal chain of
 * an operation can be rebuilt across the SDK, the control plane and the audit log.
 */
export interface EventEnvelope {
  /** UUID of this event. */
  eventId: string;
  /** The trace id of the operation; empty for events of no operation (control-plane status). */
  correlationId: string;
  /**
   * The event_id of the event that caused this one: for an attempt, the caller's `causationId`;
   * for a retry, the failed attempt; for a fallback, the last attempt or rejection. Empty when
   * none is known.
   */
  causationId: string;
}

/** What the ledger did for a call with an idempotency key. */
export type IdempotencyStatus =
  /** This call holds the key's lease and runs the work. */
  | "new"
  /** As "new", after another caller's lease expired (its work may have had partial effects). */
  | "taken-over"
  /** The stored result was returned; nothing ran. */
  | "replayed"
  /** Another caller holds the lease; this call waits for its result. */
  | "waiting"
  /** The result was stored under the key. */
  | "completed"
  /** The work failed or degraded; the key was released so a retry runs it. */
  | "abandoned"
  /** The work ran but its result could not be stored (too large, not serializable, lease lost). */
  | "not-stored"
  /** The ledger could not be reached and the caller opted into running without it. */
  | "unavailable";

/** An event without its envelope, as the SDK's parts hand it to the emitter. */
export type BulwarkEventBody =
  | {
      type: "attempt";
      dependency: string;
      attempt: number;
      /**
       * How the attempt was admitted: by the server (`allow`, `probe`), from the fleet's
       * followed state without asking (`fleet`), or by the local breaker while the fleet could
       * not be followed (`local`).
       */
      admission: "allow" | "probe" | "fleet" | "local";
      traceId: string;
      spanId: string;
      /** When the attempt went out (Unix ms), right after its admission. */
      startedAtMs: number;
      result: AttemptResult;
      errorType: string;
      statusCode: number;
      latencyMs: number;
    }
  | { type: "rejected"; dependency: string; attempt: number; retryAtMs: number; traceId: string }
  | {
      type: "retry";
      dependency: string;
      /** The attempt that is about to start. */
      attempt: number;
      delayMs: number;
      errorType: string;
      traceId: string;
    }
  | { type: "fallback"; dependency: string; errorName: string; traceId: string }
  | {
      type: "control-plane";
      status: "connected" | "unreachable";
      /** Why it is unreachable. */
      error?: string;
    }
  | {
      /** A source of the fleet's state (NATS or the Watch stream) became live or was lost. */
      type: "event-source";
      source: "nats" | "watch";
      status: "live" | "lost";
      error?: string;
    }
  | { type: "report-dropped"; count: number; totalDropped: number }
  | {
      type: "idempotency";
      key: string;
      /** The stored scope: `service:<name>` or `shared:<name>`. */
      scope: string;
      status: IdempotencyStatus;
      traceId: string;
      /** With "new", "taken-over" and "waiting": when the lease ends (Unix ms). */
      leaseExpiresAtMs?: number;
      /** With "not-stored" and "unavailable": why. */
      error?: string;
    }
  | JobEvent
  | WorkerEvent;

/**
 * Everything the SDK has to say, as typed events instead of log lines. Listening costs nothing
 * when nobody listens.
 */
export type BulwarkEvent = EventEnvelope & BulwarkEventBody;

/** What happened to one deferred job. */
export type JobEvent = {
  type: "job";
  dependency: string;
  jobId: string;
  traceId: string;
  /** Deliveries of the job so far (1 for the first); 0 for `enqueued`. */
  delivery: number;
} & (
  | { status: "enqueued" | "started" | "succeeded" }
  /** The handler failed transiently; JetStream redelivers the job after `delayMs`. */
  | { status: "retrying"; delayMs: number; errorType: string; error: string }
  /** The breaker rejected the job's call; it waits for the breaker without using a delivery. */
  | { status: "held"; retryAtMs: number }
  | {
      status: "dead-lettered";
      letterId: string;
      reason: "max-deliveries" | "permanent";
      errorType: string;
      error: string;
    }
  /** Moving the job to the dead-letter stream or recording it failed; it is tried again later. */
  | { status: "dead-letter-failed"; error: string }
);

/** A worker's lifecycle. */
export type WorkerEvent = {
  type: "worker";
  dependency: string;
} & (
  | { status: "started" | "resumed" | "stopped" }
  /** The dependency's breaker is open: the worker stops pulling until it closes. */
  | { status: "paused"; openUntilMs: number }
  /** Pulling failed (NATS away, stream missing); the worker tries again after `retryInMs`. */
  | { status: "error"; error: string; retryInMs: number }
);

export type BulwarkEventListener = (event: BulwarkEvent) => void;

/** A minimal synchronous emitter; a throwing listener cannot break a call. */
export class EventEmitter {
  private readonly listeners = new Set<BulwarkEventListener>();

  on(listener: BulwarkEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get active(): boolean {
    return this.listeners.size > 0;
  }

  /**
   * Emits an event and returns its event_id. The envelope defaults to a new UUID, the body's
   * trace id as the correlation id, and no cause.
   */
  emit(body: BulwarkEventBody, envelope: Partial<EventEnvelope> = {}): string {
    const eventId = envelope.eventId ?? randomUUID();
    if (this.listeners.size === 0) return eventId;
    const event = {
      ...body,
      eventId,
      correlationId: envelope.correlationId ?? ("traceId" in body ? body.traceId : ""),
      causationId: envelope.causationId ?? "",
    } as BulwarkEvent;
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A listener's bug must not fail the guarded call; the application owns its listeners.
      }
    }
    return eventId;
  }
}
