import type { Outcome } from "../gen/bulwark/v1/breaker_types_pb.ts";

/** One outcome as queued: the plain fields, turned into a message only when it is sent. */
export type OutcomeFields = Omit<Outcome, "$typeName" | "$unknown">;

/**
 * Outcomes per Report call: half of what the server accepts (1000), so a batch stays small on
 * the wire (~60 KB) and quick for the server to count.
 */
export const REPORT_BATCH_SIZE = 500;
/**
 * Longest an outcome waits for its batch to fill. It bounds how late the fleet's breaker hears of
 * a failure (and so the slip of DESIGN §5's fast path) while keeping one Report per 50 ms under
 * light load.
 */
export const REPORT_INTERVAL_MS = 50;
/**
 * Outcomes kept while the control plane is unreachable or slower than the calls. Beyond it the
 * oldest are dropped and counted: the breaker needs recent outcomes, not a complete history.
 */
export const MAX_PENDING_OUTCOMES = 10_000;

export type SendBatch = (outcomes: OutcomeFields[]) => Promise<void>;

/**
 * A fixed-size ring of outcomes, oldest first. Adding to a full ring overwrites the oldest, so
 * a flood costs O(1) per outcome instead of shifting an array.
 */
class OutcomeRing {
  private readonly slots: (OutcomeFields | undefined)[];
  private head = 0;
  size = 0;

  constructor(readonly capacity: number) {
    this.slots = new Array(capacity);
  }

  /** Adds one; returns true when the oldest had to be dropped for it. */
  push(outcome: OutcomeFields): boolean {
    const tail = (this.head + this.size) % this.capacity;
    this.slots[tail] = outcome;
    if (this.size < this.capacity) {
      this.size++;
      return false;
    }
    this.head = (this.head + 1) % this.capacity;
    return true;
  }

  /** Takes up to `max` of the oldest. */
  take(max: number): OutcomeFields[] {
    const n = Math.min(max, this.size);
    const out = new Array<OutcomeFields>(n);
    for (let i = 0; i < n; i++) {
      const at = (this.head + i) % this.capacity;
      out[i] = this.slots[at]!;
      this.slots[at] = undefined;
    }
    this.head = (this.head + n) % this.capacity;
    this.size -= n;
    return out;
  }

  /** Puts a batch back in front; returns how many did not fit (the oldest of them). */
  unshift(batch: readonly OutcomeFields[]): number {
    const room = this.capacity - this.size;
    const kept = Math.min(room, batch.length);
    for (let i = batch.length - 1; i >= batch.length - kept; i--) {
      this.head = (this.head - 1 + this.capacity) % this.capacity;
      this.slots[this.head] = batch[i];
      this.size++;
    }
    return batch.length - kept;
  }
}

/**
 * Sends outcomes to the control plane in batches of at most REPORT_BATCH_SIZE, at most
 * REPORT_INTERVAL_MS after the first of a batch was queued; one Report is in flight at a time.
 * A failed batch goes back to the front of the queue and is sent again once `resume()` is called.
 */
export class Reporter {
  private readonly queue: OutcomeRing;
  private inFlight: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private paused = false;
  /** Dropped outcomes not yet announced with a report-dropped event. */
  private unannounced = 0;
  /** Outcomes dropped so far: by an overflowing queue, or refused by the control plane. */
  dropped = 0;

  constructor(
    private readonly send: SendBatch,
    private readonly onDrop: (count: number, total: number) => void,
    capacity = MAX_PENDING_OUTCOMES,
  ) {
    this.queue = new OutcomeRing(capacity);
  }

  /** Outcomes are queued or being sent. */
  get busy(): boolean {
    return this.queue.size > 0 || this.inFlight !== undefined;
  }

  /** Outcomes waiting to be sent. */
  get pending(): number {
    return this.queue.size;
  }

  add(outcome: OutcomeFields): void {
    if (this.queue.push(outcome)) {
      this.dropped++;
      this.unannounced++;
    }
    if (this.paused || this.inFlight !== undefined) return;
    if (this.queue.size >= REPORT_BATCH_SIZE) {
      void this.flush();
    } else if (this.timer === undefined) {
      this.timer = setTimeout(this.onTimer, REPORT_INTERVAL_MS);
      this.timer.unref();
    }
  }

  private readonly onTimer = () => {
    this.timer = undefined;
    void this.flush();
  };

  /** Sends again after failures paused the reporter. */
  resume(): void {
    this.paused = false;
    void this.flush();
  }

  /**
   * Resolves once everything queued before the call has been sent, or a send failed. Strict
   * admission waits on it so the server has seen this instance's earlier outcomes before deciding.
   */
  async settle(): Promise<void> {
    while (!this.paused && this.busy) {
      await (this.inFlight ?? this.flush());
    }
  }

  /** Counts outcomes the control plane refused as dropped. */
  drop(count: number): void {
    this.dropped += count;
    this.unannounced += count;
    this.announceDrops();
  }

  private announceDrops(): void {
    if (this.unannounced === 0) return;
    const count = this.unannounced;
    this.unannounced = 0;
    this.onDrop(count, this.dropped);
  }

  /** Sends queued batches until the queue is empty or a send fails. */
  flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.announceDrops();
    if (this.inFlight !== undefined) return this.inFlight;
    if (this.queue.size === 0 || this.paused) return Promise.resolve();
    this.inFlight = (async () => {
      try {
        while (this.queue.size > 0 && !this.paused) {
          const batch = this.queue.take(REPORT_BATCH_SIZE);
          try {
            await this.send(batch);
          } catch {
            const lost = this.queue.unshift(batch);
            if (lost > 0) {
              this.dropped += lost;
              this.unannounced += lost;
            }
            this.paused = true;
          }
          this.announceDrops();
        }
      } finally {
        this.inFlight = undefined;
      }
      // Outcomes queued during the last send wait at most one interval more.
      if (this.queue.size > 0 && !this.paused && this.timer === undefined) {
        this.timer = setTimeout(this.onTimer, REPORT_INTERVAL_MS);
        this.timer.unref();
      }
    })();
    return this.inFlight;
  }
}
