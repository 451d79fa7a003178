import type { Db } from "./database.ts";

/** A key of the ledger as stored. Times are Unix milliseconds; 0 means "not yet" or "none". */
export interface IdempotencyRow {
  scope: string;
  key: string;
  state: "in-progress" | "completed";
  requestHash: Uint8Array;
  response: Uint8Array;
  /** The service whose Begin holds or held the lease. */
  holder: string;
  leaseToken: string;
  createdAtMs: number;
  leaseExpiresAtMs: number;
  completedAtMs: number;
  retentionMs: number;
  expiresAtMs: number;
  takeovers: number;
}

interface Row {
  scope: string;
  key: string;
  state: string;
  request_hash: Buffer;
  response: Buffer | null;
  holder: string;
  lease_token: string;
  created_at_ms: number;
  lease_expires_at_ms: number;
  completed_at_ms: number;
  retention_ms: number;
  expires_at_ms: number;
  takeovers: number;
}

const EMPTY = new Uint8Array(0);

function fromRow(r: Row): IdempotencyRow {
  return {
    scope: r.scope,
    key: r.key,
    state: r.state === "completed" ? "completed" : "in-progress",
    requestHash: r.request_hash,
    response: r.response ?? EMPTY,
    holder: r.holder,
    leaseToken: r.lease_token,
    createdAtMs: r.created_at_ms,
    leaseExpiresAtMs: r.lease_expires_at_ms,
    completedAtMs: r.completed_at_ms,
    retentionMs: r.retention_ms,
    expiresAtMs: r.expires_at_ms,
    takeovers: r.takeovers,
  };
}

function toParams(r: IdempotencyRow) {
  return {
    scope: r.scope,
    key: r.key,
    state: r.state,
    requestHash: Buffer.from(r.requestHash.buffer, r.requestHash.byteOffset, r.requestHash.length),
    response:
      r.response.length === 0
        ? null
        : Buffer.from(r.response.buffer, r.response.byteOffset, r.response.length),
    holder: r.holder,
    leaseToken: r.leaseToken,
    createdAtMs: r.createdAtMs,
    leaseExpiresAtMs: r.leaseExpiresAtMs,
    completedAtMs: r.completedAtMs,
    retentionMs: r.retentionMs,
    expiresAtMs: r.expiresAtMs,
    takeovers: r.takeovers,
  };
}

/**
 * The idempotency ledger's rows in the operational SQLite file. Every write runs inside
 * `transaction`, an IMMEDIATE transaction committed with `synchronous = FULL`, so what a caller
 * is told has been written to disk.
 */
export class IdempotencyStore {
  private readonly byKey;
  private readonly byToken;
  private readonly upsert;
  private readonly removeKey;
  private readonly sweep;

  constructor(private readonly db: Db) {
    this.byKey = db.prepare<[string, string], Row>(
      "SELECT * FROM idempotency_records WHERE scope = ? AND key = ?",
    );
    this.byToken = db.prepare<[string], Row>(
      "SELECT * FROM idempotency_records WHERE lease_token = ?",
    );
    this.upsert = db.prepare(
      `INSERT OR REPLACE INTO idempotency_records (scope, key, state, request_hash, response,
         holder, lease_token, created_at_ms, lease_expires_at_ms, completed_at_ms, retention_ms,
         expires_at_ms, takeovers)
       VALUES (@scope, @key, @state, @requestHash, @response, @holder, @leaseToken, @createdAtMs,
         @leaseExpiresAtMs, @completedAtMs, @retentionMs, @expiresAtMs, @takeovers)`,
    );
    this.removeKey = db.prepare("DELETE FROM idempotency_records WHERE scope = ? AND key = ?");
    this.sweep = db.prepare(
      `DELETE FROM idempotency_records WHERE rowid IN (
         SELECT rowid FROM idempotency_records WHERE expires_at_ms <= ? LIMIT ?)`,
    );
  }

  /** Runs `fn` in one IMMEDIATE transaction: all of it is on disk when this returns. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  /** Runs `fn` in a savepoint of the current transaction: a throw undoes only what `fn` wrote. */
  savepoint<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  get(scope: string, key: string): IdempotencyRow | undefined {
    const row = this.byKey.get(scope, key);
    return row === undefined ? undefined : fromRow(row);
  }

  getByToken(token: string): IdempotencyRow | undefined {
    const row = this.byToken.get(token);
    return row === undefined ? undefined : fromRow(row);
  }

  put(row: IdempotencyRow): void {
    this.upsert.run(toParams(row));
  }

  remove(scope: string, key: string): void {
    this.removeKey.run(scope, key);
  }

  /** Deletes up to `limit` records that expired at or before `nowMs`; returns how many. */
  deleteExpired(nowMs: number, limit: number): number {
    return this.transaction(() => this.sweep.run(nowMs, limit).changes);
  }
}
