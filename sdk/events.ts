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
  | { type: "report-dropped"; count: number; totalDropped: number };

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
