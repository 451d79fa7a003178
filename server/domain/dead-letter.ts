/**
 * A dead letter as the domain core uses it: a deferred job a worker gave up on (DESIGN §6),
 * with what happened to it since. wire/dead-letter-convert.ts maps it to the wire message.
 */

/** Where a dead letter stands. */
export type DeadLetterStatusName = "open" | "replayed" | "resolved";

/** Why the worker gave up on the job. */
export type DeadLetterReasonName = "max-deliveries" | "permanent";

/** What a worker records; the server adds the rest. */
export interface NewDeadLetter {
  letterId: string;
  dependency: string;
  jobId: string;
  reason: DeadLetterReasonName;
  payload: Uint8Array;
  attempts: number;
  lastError: string;
  errorType: string;
  traceId: string;
  causationId: string;
  idempotencyKey: string;
  enqueuedAtMs: number;
  deadLetteredAtMs: number;
  dlqSequence: number;
  replayOf: string;
}

export interface DeadLetterRecord extends NewDeadLetter {
  /** Position in the store, increasing; List pages by it. */
  cursor: number;
  status: DeadLetterStatusName;
  /** SHA-256 of the payload, lowercase hex. */
  payloadHash: string;
  recordedAtMs: number;
  recordedBy: string;
  replayCount: number;
  replayedAtMs: number;
  replayedBy: string;
  replayJobId: string;
  resolvedAtMs: number;
  resolvedBy: string;
  resolution: string;
}

export interface DeadLetterQuery {
  /** Empty: every dependency. */
  dependency: string;
  /** Undefined: every status. */
  status: DeadLetterStatusName | undefined;
  /** Empty: every trace. */
  traceId: string;
  afterCursor: number;
  limit: number;
}
