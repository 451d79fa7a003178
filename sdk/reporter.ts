import { create } from "@bufbuild/protobuf";
import { type Outcome, OutcomeSchema } from "../gen/bulwark/v1/breaker_types_pb.ts";

/** Outcomes per Report call; the server accepts up to 1000. */
export const REPORT_BATCH_SIZE = 500;
/**
 * Outcomes kept while the control plane is unreachable. Beyond it the oldest are dropped and
 * counted: the breaker needs recent outcomes, not a complete history.
 */
export const MAX_PENDING_OUTCOMES = 10_000;

export type SendBatch = (outcomes: Outcome[]) => Promise<void>;

/**
 * Sends outcomes to the control plane in batches: everything queued in one turn of the event
 * loop goes in one Report. A failed batch goes back to the front of the queue and is sent again
 * once `resume()` is called.
 */
export class Reporter {
  private pending: Outcome[] = [];
  private inFlight: Promise<void> | undefined;
  private scheduled = false;
  private paused = false;
  dropped = 0;

  constructor(
    private readonly send: SendBatch,
    private readonly onDrop: (count: number, total: number) => void,
  ) {}

  /** Outcomes are queued or being sent. */
  get busy(): boolean {
    return this.pending.length > 0 || this.inFlight !== undefined;
  }

  add(outcome: Omit<Outcome, "$typeName" | "$unknown">): void {
    this.pending.push(create(OutcomeSchema, outcome));
    this.trim();
    this.schedule();
  }

  /** Sends again after failures paused the reporter. */
  resume(): void {
    this.paused = false;
    this.schedule();
  }

  /**
   * Resolves once everything queued before the call has been sent, or a send failed. Acquire
   * waits on it so the server has seen this instance's earlier outcomes before deciding.
   */
  async settle(): Promise<void> {
    while (!this.paused && (this.pending.length > 0 || this.inFlight !== undefined)) {
      await (this.inFlight ?? this.flush());
    }
  }

  /** Counts outcomes the control plane refused as dropped. */
  drop(count: number): void {
    this.dropped += count;
    this.onDrop(count, this.dropped);
  }

  private trim(): void {
    const excess = this.pending.length - MAX_PENDING_OUTCOMES;
    if (excess > 0) {
      this.pending.splice(0, excess);
      this.dropped += excess;
      this.onDrop(excess, this.dropped);
    }
  }

  private schedule(): void {
    if (this.scheduled || this.paused || this.inFlight !== undefined) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  /** Sends queued batches until the queue is empty or a send fails. */
  flush(): Promise<void> {
    if (this.inFlight !== undefined) return this.inFlight;
    if (this.pending.length === 0 || this.paused) return Promise.resolve();
    this.inFlight = (async () => {
      try {
        while (this.pending.length > 0 && !this.paused) {
          const batch = this.pending.splice(0, REPORT_BATCH_SIZE);
          try {
            await this.send(batch);
          } catch {
            this.pending.unshift(...batch);
            this.trim();
            this.paused = true;
          }
        }
      } finally {
        this.inFlight = undefined;
      }
    })();
    return this.inFlight;
  }
}
