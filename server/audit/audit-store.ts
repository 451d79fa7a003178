import { AlreadyExistsError } from "../domain/errors.ts";
import type { Db } from "../storage/database.ts";
import { openDatabase, type Schema } from "../storage/database.ts";
import { type ChainedFields, GENESIS_HASH, recordHash } from "./audit-chain.ts";

/** A record as stored: the chained fields plus the two hashes. */
export interface AuditRecordRow extends ChainedFields {
  prevHash: string;
  hash: string;
}

/** An entry ready to be chained: everything but the sequence and the hashes. */
export type PendingEntry = Omit<ChainedFields, "sequence">;

export interface AuditQuery {
  traceId: string;
  aggregateId: string;
  eventType: string;
  fromMs: number;
  toMs: number;
  afterSequence: number;
  limit: number;
}

/** The triggers that make the table append-only; re-created at start when someone dropped them. */
const TRIGGERS = `
  CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused'); END;
  CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused'); END;
`;

/** Records Verify reads per step before it lets other work run. */
export const VERIFY_PAGE_SIZE = 5_000;

/**
 * The audit log's own schema, in its own file (DESIGN §8). The triggers make the table
 * append-only for every client of the file, not only this server.
 */
export const AUDIT_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE audit_records (
    sequence INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    payload_hash TEXT NOT NULL,
    producer TEXT NOT NULL,
    principal TEXT NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    causation_id TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
  );
  CREATE INDEX audit_by_trace ON audit_records (trace_id) WHERE trace_id <> '';
  CREATE INDEX audit_by_causation ON audit_records (causation_id) WHERE causation_id <> '';
  CREATE INDEX audit_by_aggregate ON audit_records (aggregate_id, sequence);
  ${TRIGGERS}
  `,
];

/** The audit file's schema, with its own version table. */
const AUDIT_SCHEMA: Schema = {
  kind: "audit",
  versionTable: "audit_schema_migrations",
  migrations: AUDIT_MIGRATIONS,
};

interface Row {
  sequence: number;
  event_id: string;
  event_type: string;
  aggregate_id: string;
  payload_hash: string;
  producer: string;
  principal: string;
  timestamp_ms: number;
  trace_id: string;
  causation_id: string;
  prev_hash: string;
  hash: string;
}

function fromRow(r: Row): AuditRecordRow {
  return {
    sequence: r.sequence,
    eventId: r.event_id,
    eventType: r.event_type,
    aggregateId: r.aggregate_id,
    payloadHash: r.payload_hash,
    producer: r.producer,
    principal: r.principal,
    timestampMs: r.timestamp_ms,
    traceId: r.trace_id,
    causationId: r.causation_id,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

/** The audit chain in SQLite. */
export class AuditStore {
  private readonly db: Db;
  private readonly head;
  private readonly insert;
  private readonly byCausation;
  private readonly pageStatement;
  private readonly hasEvent;

  /** The append-only triggers were missing when the file was opened, and were put back. */
  readonly triggersRestored: boolean;

  constructor(
    path: string,
    private readonly key: Buffer | undefined,
  ) {
    this.db = openDatabase(path, AUDIT_SCHEMA);
    this.triggersRestored = this.restoreTriggers();
    this.head = this.db.prepare<[], { sequence: number; hash: string }>(
      "SELECT sequence, hash FROM audit_records ORDER BY sequence DESC LIMIT 1",
    );
    this.insert = this.db.prepare(
      `INSERT INTO audit_records (sequence, event_id, event_type, aggregate_id, payload_hash,
         producer, principal, timestamp_ms, trace_id, causation_id, prev_hash, hash)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.hasEvent = this.db.prepare<[string], { one: number }>(
      "SELECT 1 AS one FROM audit_records WHERE event_id = ?",
    );
    this.pageStatement = this.db
      .prepare("SELECT * FROM audit_records WHERE sequence > ? ORDER BY sequence LIMIT ?")
      .raw(true);
    this.byCausation = this.db.prepare<[string], Row>(
      // The repeated "<> ''" lets SQLite use the partial index on causation_id.
      "SELECT * FROM audit_records WHERE causation_id = ? AND causation_id <> '' ORDER BY sequence",
    );
  }

  /**
   * Chains and stores entries in one IMMEDIATE transaction: the head is read under the write
   * lock, so appends from any number of processes sharing the file form one chain.
   */
  append(entries: readonly PendingEntry[]): AuditRecordRow[] {
    return this.db
      .transaction(() => {
        // Checked under the write lock, so two appenders cannot both pass it.
        const ids = new Set<string>();
        for (const e of entries) {
          if (ids.has(e.eventId) || this.hasEvent.get(e.eventId) !== undefined) {
            throw new AlreadyExistsError(`an audit record with event_id ${e.eventId} exists`);
          }
          ids.add(e.eventId);
        }
        const head = this.head.get();
        let sequence = head?.sequence ?? 0;
        let prevHash = head?.hash ?? GENESIS_HASH;
        return entries.map((entry) => {
          sequence++;
          const fields: ChainedFields = { ...entry, sequence };
          const row: AuditRecordRow = {
            ...fields,
            prevHash,
            hash: recordHash(prevHash, fields, this.key),
          };
          // Positional parameters: binding a 12-key object by name costs more than the insert.
          this.insert.run(
            row.sequence,
            row.eventId,
            row.eventType,
            row.aggregateId,
            row.payloadHash,
            row.producer,
            row.principal,
            row.timestampMs,
            row.traceId,
            row.causationId,
            row.prevHash,
            row.hash,
          );
          prevHash = row.hash;
          return row;
        });
      })
      .immediate();
  }

  query(q: AuditQuery): AuditRecordRow[] {
    const where: string[] = ["sequence > @afterSequence"];
    // The repeated "<> ''" lets SQLite use the partial index on trace_id.
    if (q.traceId !== "") where.push("trace_id = @traceId AND trace_id <> ''");
    if (q.aggregateId !== "") where.push("aggregate_id = @aggregateId");
    if (q.eventType !== "") where.push("event_type = @eventType");
    if (q.fromMs > 0) where.push("timestamp_ms >= @fromMs");
    if (q.toMs > 0) where.push("timestamp_ms < @toMs");
    const sql = `SELECT * FROM audit_records WHERE ${where.join(" AND ")} ORDER BY sequence LIMIT @limit`;
    return (this.db.prepare(sql).all(q) as Row[]).map(fromRow);
  }

  causedBy(eventId: string): AuditRecordRow[] {
    return this.byCausation.all(eventId).map(fromRow);
  }

  /**
   * Up to `limit` records after `afterSequence`, in chain order. Rows come as arrays in the
   * column order of the table, which is cheaper than objects (Verify reads every record).
   */
  page(afterSequence: number, limit: number): AuditRecordRow[] {
    const rows = this.pageStatement.all(afterSequence, limit) as unknown[][];
    return rows.map((r) => ({
      sequence: r[0] as number,
      eventId: r[1] as string,
      eventType: r[2] as string,
      aggregateId: r[3] as string,
      payloadHash: r[4] as string,
      producer: r[5] as string,
      principal: r[6] as string,
      timestampMs: r[7] as number,
      traceId: r[8] as string,
      causationId: r[9] as string,
      prevHash: r[10] as string,
      hash: r[11] as string,
    }));
  }

  private restoreTriggers(): boolean {
    const present = this.db
      .prepare<[], { n: number }>(
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'trigger' AND name IN ('audit_records_no_update', 'audit_records_no_delete')",
      )
      .get();
    if (present?.n === 2) return false;
    this.db.exec(TRIGGERS);
    return true;
  }

  close(): void {
    this.db.close();
  }
}
