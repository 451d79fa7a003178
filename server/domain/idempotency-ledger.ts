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

/**
 * The idempotency ledger (DESIGN §7). Begin, Complete and Abandon each run in one IMMEDIATE
 * SQLite transaction, so concurrent callers are serialized by the database: of any number of
 * Begins for one key exactly one finds it free. An expired record counts as absent, and a
 * background sweep deletes expired records a bounded batch at a time.
 */
export class IdempotencyLedger {
  private readonly sweepTimer: NodeJS.Timeout;

  constructor(
    private readonly store: IdempotencyStore,
    private readonly clock: () => number,
    private readonly logger: Logger,
    /** Called after a completion is committed; returns the event id it was recorded under. */
    private readonly onCompleted: (completion: Completion) => string = () => "",
  ) {
    this.sweepTimer = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweepTimer.unref();
  }

  begin(input: BeginInput): BeginResult {
    return this.store.transaction((): BeginResult => {
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
  complete(
    leaseToken: string,
    response: Uint8Array,
    cause: Omit<Completion, "record">,
  ): { record: IdempotencyRow; eventId: string } {
    const { record, fresh } = this.store.transaction(() => {
      const nowMs = this.clock();
      const row = this.held(leaseToken, nowMs);
      if (row.state === "completed") {
        if (sameBytes(row.response, response)) return { record: row, fresh: false };
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
      return { record: completed, fresh: true };
    });
    let eventId = "";
    if (fresh) {
      try {
        eventId = this.onCompleted({ record, ...cause });
      } catch (err) {
        // The completion is committed; only its audit record is lost (logged, not hidden).
        this.logger.error(
          { err, scope: record.scope },
          "audit of an idempotency completion failed",
        );
      }
    }
    return { record, eventId };
  }

  /** Releases an in-progress key so that the next Begin runs the work again. */
  abandon(leaseToken: string): void {
    this.store.transaction(() => {
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

  /** Deletes one batch of expired records; returns how many. */
  sweep(): number {
    try {
      return this.store.deleteExpired(this.clock(), SWEEP_BATCH);
    } catch (err) {
      this.logger.error({ err }, "idempotency sweep failed; will retry");
      return 0;
    }
  }

  close(): void {
    clearInterval(this.sweepTimer);
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
