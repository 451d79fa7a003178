import { createHash } from "node:crypto";
import type {
  DeadLetterQuery,
  DeadLetterReasonName,
  DeadLetterRecord,
  DeadLetterStatusName,
  NewDeadLetter,
} from "../domain/dead-letter.ts";
import type { Db } from "./database.ts";

interface DeadLetterRow {
  cursor: number;
  letter_id: string;
  dependency: string;
  job_id: string;
  reason: string;
  status: string;
  payload: Buffer;
  payload_hash: string;
  attempts: number;
  last_error: string;
  error_type: string;
  trace_id: string;
  causation_id: string;
  idempotency_key: string;
  enqueued_at_ms: number;
  dead_lettered_at_ms: number;
  recorded_at_ms: number;
  recorded_by: string;
  dlq_sequence: number;
  replay_of: string;
  replay_count: number;
  replayed_at_ms: number;
  replayed_by: string;
  replay_job_id: string;
  resolved_at_ms: number;
  resolved_by: string;
  resolution: string;
}

function fromRow(r: DeadLetterRow): DeadLetterRecord {
  return {
    cursor: r.cursor,
    letterId: r.letter_id,
    dependency: r.dependency,
    jobId: r.job_id,
    reason: r.reason as DeadLetterReasonName,
    status: r.status as DeadLetterStatusName,
    payload: new Uint8Array(r.payload),
    payloadHash: r.payload_hash,
    attempts: r.attempts,
    lastError: r.last_error,
    errorType: r.error_type,
    traceId: r.trace_id,
    causationId: r.causation_id,
    idempotencyKey: r.idempotency_key,
    enqueuedAtMs: r.enqueued_at_ms,
    deadLetteredAtMs: r.dead_lettered_at_ms,
    recordedAtMs: r.recorded_at_ms,
    recordedBy: r.recorded_by,
    dlqSequence: r.dlq_sequence,
    replayOf: r.replay_of,
    replayCount: r.replay_count,
    replayedAtMs: r.replayed_at_ms,
    replayedBy: r.replayed_by,
    replayJobId: r.replay_job_id,
    resolvedAtMs: r.resolved_at_ms,
    resolvedBy: r.resolved_by,
    resolution: r.resolution,
  };
}

/** Dead letters in the operational SQLite file, one row per letter id. */
export class DeadLetterStore {
  private readonly selectOne;
  private readonly insert;
  private readonly markReplayed;
  private readonly markResolved;
  private readonly countOpen;

  constructor(private readonly db: Db) {
    this.selectOne = db.prepare<[string], DeadLetterRow>(
      "SELECT * FROM dead_letters WHERE letter_id = ?",
    );
    this.insert = db.prepare(
      `INSERT INTO dead_letters (letter_id, dependency, job_id, reason, status, payload,
         payload_hash, attempts, last_error, error_type, trace_id, causation_id, idempotency_key,
         enqueued_at_ms, dead_lettered_at_ms, recorded_at_ms, recorded_by, dlq_sequence, replay_of)
       VALUES (@letterId, @dependency, @jobId, @reason, 'open', @payload, @payloadHash, @attempts,
         @lastError, @errorType, @traceId, @causationId, @idempotencyKey, @enqueuedAtMs,
         @deadLetteredAtMs, @recordedAtMs, @recordedBy, @dlqSequence, @replayOf)
       ON CONFLICT (letter_id) DO NOTHING`,
    );
    // Guarded by the replay count read before, so two replays racing cannot both count.
    this.markReplayed = db.prepare(
      `UPDATE dead_letters SET status = 'replayed', replay_count = replay_count + 1,
         replayed_at_ms = @atMs, replayed_by = @by, replay_job_id = @jobId
       WHERE letter_id = @letterId AND replay_count = @expectedCount`,
    );
    this.markResolved = db.prepare(
      `UPDATE dead_letters SET status = 'resolved', resolved_at_ms = @atMs, resolved_by = @by,
         resolution = @reason
       WHERE letter_id = @letterId AND status <> 'resolved'`,
    );
    this.countOpen = db.prepare<[], { dependency: string; status: string; n: number }>(
      "SELECT dependency, status, COUNT(*) AS n FROM dead_letters GROUP BY dependency, status",
    );
  }

  get(letterId: string): DeadLetterRecord | undefined {
    const row = this.selectOne.get(letterId);
    return row === undefined ? undefined : fromRow(row);
  }

  /** Stores a new letter; an id recorded before keeps its stored row (`created` false). */
  record(
    letter: NewDeadLetter,
    recordedBy: string,
    nowMs: number,
  ): { letter: DeadLetterRecord; created: boolean } {
    const payloadHash = createHash("sha256").update(letter.payload).digest("hex");
    const result = this.insert.run({
      ...letter,
      payload: Buffer.from(letter.payload),
      payloadHash,
      recordedAtMs: nowMs,
      recordedBy,
    });
    return { letter: this.get(letter.letterId)!, created: result.changes === 1 };
  }

  /** Letters matching every filter, oldest first, without their payloads. */
  list(q: DeadLetterQuery): DeadLetterRecord[] {
    const where = ["cursor > @afterCursor"];
    if (q.dependency !== "") where.push("dependency = @dependency");
    if (q.status !== undefined) where.push("status = @status");
    if (q.traceId !== "") where.push("trace_id = @traceId");
    const rows = this.db
      .prepare<Record<string, unknown>, DeadLetterRow>(
        `SELECT cursor, letter_id, dependency, job_id, reason, status, X'' AS payload,
           payload_hash, attempts, last_error, error_type, trace_id, causation_id,
           idempotency_key, enqueued_at_ms, dead_lettered_at_ms, recorded_at_ms, recorded_by,
           dlq_sequence, replay_of, replay_count, replayed_at_ms, replayed_by, replay_job_id,
           resolved_at_ms, resolved_by, resolution
         FROM dead_letters WHERE ${where.join(" AND ")} ORDER BY cursor LIMIT @limit`,
      )
      .all({
        afterCursor: q.afterCursor,
        dependency: q.dependency,
        status: q.status ?? "",
        traceId: q.traceId,
        limit: q.limit,
      });
    return rows.map(fromRow);
  }

  /** Marks a replay; false when another replay counted first. */
  replayed(
    letterId: string,
    expectedCount: number,
    jobId: string,
    by: string,
    atMs: number,
  ): boolean {
    return this.markReplayed.run({ letterId, expectedCount, jobId, by, atMs }).changes === 1;
  }

  /** Closes a letter; false when it was resolved already. */
  resolved(letterId: string, reason: string, by: string, atMs: number): boolean {
    return this.markResolved.run({ letterId, reason, by, atMs }).changes === 1;
  }

  /** Letters per dependency and status, for the metrics. */
  counts(): { dependency: string; status: DeadLetterStatusName; count: number }[] {
    return this.countOpen.all().map((r) => ({
      dependency: r.dependency,
      status: r.status as DeadLetterStatusName,
      count: r.n,
    }));
  }
}
