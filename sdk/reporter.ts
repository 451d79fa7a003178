import type { Outcome } from "../gen/bulwark/v1/breaker_types_pb.ts";

/** One outcome as queued: the plain fields, turned into a message only when it is sent. */
export type OutcomeFields = Omit<Outcome, "$typeName" | "$unknown">;

/**
 * Outcomes per Report call: all the server accepts (1000). A Report costs the client about a
 * millisecond of CPU whatever it carries (measured on two cores; `npm run bench`), so under load
 * the fuller the batch the cheaper each outcome; encoded by hand (outcome-encoding.ts), a batch
 * of successes is about 30 KB.
 */
export const REPORT_BATCH_SIZE = 1_000;
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
 * A fixed-size ring of outcomes, oldest first, kept column by column: adding copies the fields
 * (so a caller may reuse one object for every outcome) and allocates nothing, and a full ring
 * overwrites the oldest in O(1). Objects are made only for the batches actually sent, so a flood
 * of outcomes that overflows the ring costs no garbage.
 */
class OutcomeRing {
  private readonly dependency: string[];
  private readonly service: string[];
  private readonly attempt: Int32Array;
  private readonly permitId: string[];
  private readonly result: Uint8Array;
  private readonly errorType: string[];
  private readonly statusCode: Int32Array;
  private readonly latencyMs: Int32Array;
  private readonly retryAfterMs: Int32Array;
  private readonly traceId: string[];
  private readonly requestId: string[];
  private readonly causationId: string[];
  private head = 0;
  size = 0;

  constructor(readonly capacity: number) {
    const strings = () => new Array<string>(capacity).fill("");
    this.dependency = strings();
    this.service = strings();
    this.permitId = strings();
    this.errorType = strings();
    this.traceId = strings();
    this.requestId = strings();
    this.causationId = strings();
    this.attempt = new Int32Array(capacity);
    this.result = new Uint8Array(capacity);
    this.statusCode = new Int32Array(capacity);
    this.latencyMs = new Int32Array(capacity);
    this.retryAfterMs = new Int32Array(capacity);
  }

  /** Copies one in; returns true when the oldest had to be dropped for it. */
  push(o: OutcomeFields): boolean {
    const dropped = this.size === this.capacity;
    const at = (this.head + this.size) % this.capacity;
    this.write(at, o);
    if (dropped) this.head = (this.head + 1) % this.capacity;
    else this.size++;
    return dropped;
  }

  /** Takes up to `max` of the oldest, as objects. */
  take(max: number): OutcomeFields[] {
    const n = Math.min(max, this.size);
    const out = new Array<OutcomeFields>(n);
    for (let i = 0; i < n; i++) out[i] = this.read((this.head + i) % this.capacity);
    this.head = (this.head + n) % this.capacity;
    this.size -= n;
    return out;
  }

  /** Puts a batch back in front; returns how many did not fit (the oldest of them). */
  unshift(batch: readonly OutcomeFields[]): number {
    const kept = Math.min(this.capacity - this.size, batch.length);
    for (let i = batch.length - 1; i >= batch.length - kept; i--) {
      this.head = (this.head - 1 + this.capacity) % this.capacity;
      this.write(this.head, batch[i]!);
      this.size++;
    }
    return batch.length - kept;
  }

  private write(at: number, o: OutcomeFields): void {
    this.dependency[at] = o.dependency;
    this.service[at] = o.service;
    this.attempt[at] = o.attempt;
    this.permitId[at] = o.permitId;
    this.result[at] = o.result;
    this.errorType[at] = o.errorType;
    this.statusCode[at] = o.statusCode;
    this.latencyMs[at] = o.latencyMs;
    this.retryAfterMs[at] = o.retryAfterMs;
    this.traceId[at] = o.traceId;
    this.requestId[at] = o.requestId;
    this.causationId[at] = o.causationId;
  }

  private read(at: number): OutcomeFields {
    return {
      dependency: this.dependency[at]!,
      service: this.service[at]!,
      attempt: this.attempt[at]!,
      permitId: this.permitId[at]!,
      result: this.result[at]!,
      errorType: this.errorType[at]!,
      statusCode: this.statusCode[at]!,
      latencyMs: this.latencyMs[at]!,
      retryAfterMs: this.retryAfterMs[at]!,
      traceId: this.traceId[at]!,
      requestId: this.requestId[at]!,
      causationId: this.causationId[at]!,
    };
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

  /** Queues a copy of the outcome: the caller may reuse the object. */
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
