import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { IdempotencyRow, IdempotencyStore } from "../storage/idempotency-store.ts";
import { FailedPreconditionError, NotFoundError } from "./errors.ts";

/** A lease long enough for a typical external call with its retries, short enough to recover. */
export const DEFAULT_LEASE_MS = 30_000;
/** Shortest lease: below it a lease lapses before a loaded caller can even Complete. */
export const MIN_LEASE_MS = 100;
/** Longest lease: an hour; work that runs longer belongs on the deferred path. */
export const MAX_LEASE_MS = 3_600_000;
/** How long a record is kept when Begin names no retention: a day covers client retry windows. */
export const DEFAULT_RETENTION_MS = 86_400_000;
/** Shortest retention: a second, for tests and keys that only guard a burst of retries. */
export const MIN_RETENTION_MS = 1_000;
/** Longest retention: 30 days; the ledger is not an archive. */
export const MAX_RETENTION_MS = 30 * 86_400_000;
/** Longest key, in UTF-8 bytes (the common limit of HTTP Idempotency-Key implementations). */
export const MAX_KEY_BYTES = 255;
/** Largest stored response: one answer of an external API, not a document store. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;
/** A request hash is a SHA-256 digest. */
export const REQUEST_HASH_BYTES = 32;
/** Expired records are swept this often. */
export const SWEEP_INTERVAL_MS = 1_000;
/** Records one sweep deletes at most: bounds how long it holds the writer. */
export const SWEEP_BATCH = 500;
/**
 * Writes one commit carries at most. Writes that arrive together share one commit (one fsync);
 * the cap bounds how long one batch holds the event loop.
 */
export const MAX_COMMIT_BATCH = 256;

/** The stored form of a scope: a service's own, or one shared by name. */
export function scopeOf(service: string, sharedScope: string): string {
  return sharedScope === "" ? `service:${service}` : `shared:${sharedScope}`;
}

export interface BeginInput {
  service: string;
  scope: string;
  key: string;
  requestHash: Uint8Array;
  leaseMs: number;
  retentionMs: number;
}

export type BeginResult =
  | { kind: "new"; record: IdempotencyRow; takenOver: boolean }
  | { kind: "completed"; record: IdempotencyRow }
  | { kind: "in-progress"; record: IdempotencyRow }
  | { kind: "conflict"; record: IdempotencyRow };

/** What a completion is audited with. */
export interface Completion {
  record: IdempotencyRow;
  principal: string;
  traceId: string;
  causationId: string;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

interface PendingWrite {
  write: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * The idempotency ledger (DESIGN §7). Begin, Complete and Abandon are group-committed: the
 * writes that arrive in one turn of the event loop run one after the other, each in its own
 * savepoint, inside one IMMEDIATE transaction, and every caller is answered only after that
 * transaction is on disk. The server is one thread and runs the writes in order, so of any number
 * of Begins for one key exactly one finds it free. An expired record counts as absent, and a
 * background sweep deletes expired records a bounded batch at a time.
 */
export class IdempotencyLedger {
  private readonly sweepTimer: NodeJS.Timeout;
  private pending: PendingWrite[] = [];
  private flushScheduled = false;
  private closed = false;
  /** Completions of the batch being written, with the answers that will carry their event ids. */
  private completions: { completion: Completion; answer: { eventId: string } }[] = [];

  constructor(
    private readonly store: IdempotencyStore,
    private readonly clock: () => number,
    private readonly logger: Logger,
    /**
     * Called with the completions of a batch once it is committed, before any caller is
     * answered; returns the event id each was recorded under, in order.
     */
    private readonly onCompleted: (completions: Completion[]) => string[] = (c) => c.map(() => ""),
  ) {
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
  }

  begin(input: BeginInput): Promise<BeginResult> {
    return this.write((): BeginResult => {
      const nowMs = this.clock();
      let row = this.store.get(input.scope, input.key);
      if (row !== undefined && row.expiresAtMs <= nowMs) row = undefined;
      const leaseExpiresAtMs = nowMs + input.leaseMs;
      const lease = {
        state: "in-progress" as const,
        holder: input.service,
        leaseToken: randomUUID(),
        leaseExpiresAtMs,
        retentionMs: input.retentionMs,
        // A live lease keeps its record even when the retention is shorter than the lease.
        expiresAtMs: Math.max(nowMs + input.retentionMs, leaseExpiresAtMs),
      };
      if (row === undefined) {
        const record: IdempotencyRow = {
          ...lease,
          scope: input.scope,
          key: input.key,
          requestHash: input.requestHash,
          response: new Uint8Array(0),
          createdAtMs: nowMs,
          completedAtMs: 0,
          takeovers: 0,
        };
        this.store.put(record);
        return { kind: "new", record, takenOver: false };
      }
      if (!sameBytes(row.requestHash, input.requestHash)) return { kind: "conflict", record: row };
      if (row.state === "completed") return { kind: "completed", record: row };
      if (row.leaseExpiresAtMs > nowMs) return { kind: "in-progress", record: row };
      // The holder's lease ran out (it crashed or hangs): the next caller takes the work over.
      const record: IdempotencyRow = { ...row, ...lease, takeovers: row.takeovers + 1 };
      this.store.put(record);
      return { kind: "new", record, takenOver: true };
    });
  }

  /**
   * Stores the response under the key the token holds. A completion repeated with the same
   * response (a retried RPC) succeeds again; a token that lost its key is refused.
   */
  async complete(
    leaseToken: string,
    response: Uint8Array,
    cause: Omit<Completion, "record">,
  ): Promise<{ record: IdempotencyRow; eventId: string }> {
    return this.write(() => {
      const nowMs = this.clock();
      const row = this.held(leaseToken, nowMs);
      if (row.state === "completed") {
        if (sameBytes(row.response, response)) return { record: row, eventId: "" };
        throw new FailedPreconditionError(
          `key ${JSON.stringify(row.key)} is already completed with another response`,
        );
      }
      const completed: IdempotencyRow = {
        ...row,
        state: "completed",
        response,
        completedAtMs: nowMs,
        leaseExpiresAtMs: 0,
        expiresAtMs: nowMs + row.retentionMs,
      };
      this.store.put(completed);
      // Audited once the batch is committed, together with the batch's other completions.
      const answer = { record: completed, eventId: "" };
      this.completions.push({ completion: { record: completed, ...cause }, answer });
      return answer;
    });
  }

  /** Releases an in-progress key so that the next Begin runs the work again. */
  async abandon(leaseToken: string): Promise<void> {
    await this.write(() => {
      const row = this.held(leaseToken, this.clock());
      if (row.state === "completed") {
        throw new FailedPreconditionError(
          `key ${JSON.stringify(row.key)} is completed; a completed key cannot be abandoned`,
        );
      }
      this.store.remove(row.scope, row.key);
    });
  }

  get(scope: string, key: string): IdempotencyRow {
    const row = this.store.get(scope, key);
    if (row === undefined || row.expiresAtMs <= this.clock()) {
      throw new NotFoundError(`no idempotency record for key ${JSON.stringify(key)} in ${scope}`);
    }
    return row;
  }

  /**
   * Deletes one batch of expired records and returns how many. A full batch means more are
   * waiting: the next batch follows once other work has had its turn, so a backlog drains
   * without one sweep holding the writer for long.
   */
  sweep(): number {
    try {
      const deleted = this.store.deleteExpired(this.clock(), SWEEP_BATCH);
      if (deleted === SWEEP_BATCH && !this.closed) setImmediate(() => this.sweep());
      return deleted;
    } catch (err) {
      this.logger.error({ err }, "idempotency sweep failed; will retry");
      return 0;
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.sweepTimer);
  }

  /** Queues a write for the next group commit; resolves once it is on disk. */
  private write<T>(write: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new Error("the idempotency ledger is closed"));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ write, resolve: resolve as (value: unknown) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Runs queued writes in one transaction; a write that throws rolls back only its savepoint. */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.pending.splice(0, MAX_COMMIT_BATCH);
    if (this.pending.length > 0) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    const results: ({ ok: true; value: unknown } | { ok: false; error: unknown })[] = [];
    this.completions = [];
    try {
      this.store.transaction(() => {
        for (const item of batch) {
          try {
            results.push({ ok: true, value: this.store.savepoint(item.write) });
          } catch (error) {
            results.push({ ok: false, error });
          }
        }
      });
    } catch (err) {
      // The commit failed (a full disk): nothing of the batch is stored, and every caller hears so.
      for (const item of batch) item.reject(err);
      return;
    }
    this.audit(this.completions);
    this.completions = [];
    batch.forEach((item, i) => {
      const r = results[i]!;
      if (r.ok) item.resolve(r.value);
      else item.reject(r.error);
    });
  }

  /** Records the batch's completions (one audit commit for all of them). */
  private audit(done: { completion: Completion; answer: { eventId: string } }[]): void {
    if (done.length === 0) return;
    try {
      const eventIds = this.onCompleted(done.map((d) => d.completion));
      done.forEach((d, i) => {
        d.answer.eventId = eventIds[i] ?? "";
      });
    } catch (err) {
      // The completions are committed; only their audit records are lost (logged, not hidden).
      this.logger.error({ err, count: done.length }, "audit of idempotency completions failed");
    }
  }

  /** The live record the token holds; refused when it was taken over, released or expired. */
  private held(leaseToken: string, nowMs: number): IdempotencyRow {
    const row = this.store.getByToken(leaseToken);
    if (row === undefined || row.expiresAtMs <= nowMs) {
      throw new FailedPreconditionError(
        "the lease token holds no key: its lease was taken over by another caller, the key was abandoned, or its record expired",
      );
    }
    return row;
  }
}
