import type { AttemptResult } from "./classify.ts";

/**
 * Everything the SDK has to say, as typed events instead of log lines. Listening costs nothing
 * when nobody listens.
 */
export type BulwarkEvent =
  | {
      type: "attempt";
      dependency: string;
      attempt: number;
      /** How the attempt was admitted: by the server (allow or probe) or locally. */
      admission: "allow" | "probe" | "local";
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
  | { type: "report-dropped"; count: number; totalDropped: number }
  | JobEvent
  | WorkerEvent;

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

  emit(event: BulwarkEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A listener's bug must not fail the guarded call; the application owns its listeners.
      }
    }
  }
}
