import { randomUUID } from "node:crypto";
import type { DeadLetterStore } from "../storage/dead-letter-store.ts";
import type { DeadLetterQuery, DeadLetterRecord, NewDeadLetter } from "./dead-letter.ts";
import { FailedPreconditionError, NotFoundError } from "./errors.ts";

/** What Replay puts back on a dependency's work queue. */
export interface RequeuedJob {
  dependency: string;
  jobId: string;
  payload: Uint8Array;
  idempotencyKey: string;
  traceId: string;
  /** The audit event of the replay, so what the job does next names it as its cause. */
  causationId: string;
  /** The letter the job comes from. */
  replayOf: string;
  /** Deduplication id of the queue message: a retried Replay of one attempt is queued once. */
  messageId: string;
  enqueuedAtMs: number;
}

/** Puts a job back on its work queue (JetStream); undefined when the server has no NATS. */
export interface JobRequeue {
  requeue(job: RequeuedJob): Promise<void>;
}

/** One step of a dead letter's life, for the audit log. */
export interface DeadLetterAuditEntry {
  eventId: string;
  eventType: "dead_letter.recorded" | "dead_letter.replayed" | "dead_letter.resolved";
  letter: DeadLetterRecord;
  principal: string;
  /** The operator's request trace, when the step was an operator's. */
  requestTraceId: string;
}

/**
 * Dead letters (DESIGN §6): recorded by workers, replayed and resolved by operators. Each step
 * is committed, then audited, before the RPC answers.
 */
export class DeadLetterRegistry {
  constructor(
    private readonly store: DeadLetterStore,
    private readonly requeue: JobRequeue | undefined,
    private readonly audit: (entry: DeadLetterAuditEntry) => void,
    private readonly clock: () => number,
  ) {}

  record(letter: NewDeadLetter, principal: string): { letter: DeadLetterRecord; created: boolean } {
    const result = this.store.record(letter, principal, this.clock());
    if (result.created) {
      this.audit({
        eventId: randomUUID(),
        eventType: "dead_letter.recorded",
        letter: result.letter,
        principal,
        requestTraceId: "",
      });
    }
    return result;
  }

  get(letterId: string): DeadLetterRecord {
    const letter = this.store.get(letterId);
    if (letter === undefined) throw new NotFoundError(`no dead letter ${letterId}`);
    return letter;
  }

  list(query: DeadLetterQuery): DeadLetterRecord[] {
    return this.store.list(query);
  }

  /**
   * Puts the letter's job back on its queue with its original payload, idempotency key and
   * trace. A letter that was replayed or resolved before is refused unless `force`: replaying
   * is an operator's decision, and the idempotency key (when the job has one) keeps even a
   * forced second replay from doing the work twice.
   */
  async replay(
    letterId: string,
    force: boolean,
    principal: string,
    requestTraceId: string,
  ): Promise<DeadLetterRecord> {
    const letter = this.get(letterId);
    if (!force && letter.status !== "open") {
      const atMs = letter.status === "replayed" ? letter.replayedAtMs : letter.resolvedAtMs;
      throw new FailedPreconditionError(
        `dead letter ${letterId} was ${letter.status} at ${new Date(atMs).toISOString()}; set force to replay it again`,
      );
    }
    if (this.requeue === undefined) {
      throw new FailedPreconditionError(
        "replay needs NATS: start the server with --nats so it can reach the work queue",
      );
    }
    const eventId = randomUUID();
    const nowMs = this.clock();
    await this.requeue.requeue({
      dependency: letter.dependency,
      jobId: letter.jobId,
      payload: letter.payload,
      idempotencyKey: letter.idempotencyKey,
      traceId: letter.traceId,
      causationId: eventId,
      replayOf: letter.letterId,
      messageId: `replay:${letter.letterId}:${letter.replayCount + 1}`,
      enqueuedAtMs: nowMs,
    });
    if (!this.store.replayed(letterId, letter.replayCount, letter.jobId, principal, nowMs)) {
      // Another Replay of the same letter counted first; its message and ours carry the same
      // deduplication id, so the queue holds the job once.
      throw new FailedPreconditionError(`dead letter ${letterId} was replayed meanwhile`);
    }
    const replayed = this.get(letterId);
    this.audit({
      eventId,
      eventType: "dead_letter.replayed",
      letter: replayed,
      principal,
      requestTraceId,
    });
    return replayed;
  }

  resolve(
    letterId: string,
    reason: string,
    principal: string,
    requestTraceId: string,
  ): DeadLetterRecord {
    const letter = this.get(letterId);
    if (!this.store.resolved(letterId, reason, principal, this.clock())) {
      throw new FailedPreconditionError(
        `dead letter ${letterId} was resolved at ${new Date(letter.resolvedAtMs).toISOString()} by ${letter.resolvedBy}`,
      );
    }
    const resolved = this.get(letterId);
    this.audit({
      eventId: randomUUID(),
      eventType: "dead_letter.resolved",
      letter: resolved,
      principal,
      requestTraceId,
    });
    return resolved;
  }

  /** Letters per dependency and status (metrics). */
  counts() {
    return this.store.counts();
  }
}
