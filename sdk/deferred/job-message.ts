import { createHash, randomBytes } from "node:crypto";
import { type JsMsg, type MsgHdrs, headers as natsHeaders } from "nats";
import {
  dlqStreamName,
  JOB_HEADERS,
  JOB_SUBJECT_PREFIX,
  jobStreamName,
} from "../../server/events/job-requeue.ts";

/**
 * Subjects, stream names and headers of the deferred path (DESIGN §6). The work-queue subject,
 * stream names and job headers are defined once, with the control plane's Replay that writes
 * them too (server/events/job-requeue.ts); test/deferred-contract.test.ts checks the rest agrees.
 */
export { dlqStreamName, JOB_HEADERS, JOB_SUBJECT_PREFIX, jobStreamName };
export const DLQ_SUBJECT_PREFIX = "bulwark.dlq.";
/** Headers a dead-lettered copy carries besides the job's own. */
export const DLQ_HEADERS = {
  letterId: "Bulwark-Dead-Letter-Id",
  reason: "Bulwark-Dead-Letter-Reason",
  attempts: "Bulwark-Attempts",
  lastError: "Bulwark-Last-Error",
  errorType: "Bulwark-Error-Type",
  deadLetteredAt: "Bulwark-Dead-Lettered-At",
} as const;
/** The durable pull consumer every worker of a dependency shares. */
export const WORKER_CONSUMER = "bulwark-workers";
/** Longest error text put in a header; the full text (up to 4 KiB) goes to the server. */
const MAX_HEADER_ERROR_CHARS = 512;

export function jobSubject(dependency: string): string {
  return JOB_SUBJECT_PREFIX + dependency;
}

export function dlqSubject(dependency: string): string {
  return DLQ_SUBJECT_PREFIX + dependency;
}

/**
 * The id of a job: derived from the idempotency key when there is one, so enqueuing the same
 * key twice names the same job (and JetStream drops the second copy within its duplicate
 * window); random otherwise. 32 lowercase hex digits.
 */
export function newJobId(dependency: string, idempotencyKey: string | undefined): string {
  if (idempotencyKey === undefined) return randomBytes(16).toString("hex");
  return createHash("sha256")
    .update(`bulwark.job\u0000${dependency}\u0000${idempotencyKey}`)
    .digest("hex")
    .slice(0, 32);
}

/** The dead letter of one queued message: the same message always gets the same letter id. */
export function letterIdOf(jobId: string, streamSequence: number): string {
  return `dl-${jobId}-${streamSequence}`;
}

/** A job as a worker's handler sees it. */
export interface Job {
  id: string;
  dependency: string;
  /** The payload exactly as enqueued. */
  payload: Uint8Array;
  /** The payload read as UTF-8 text. */
  text(): string;
  /** The payload parsed as JSON. */
  json<T = unknown>(): T;
  /** Empty when the job was enqueued without one. */
  idempotencyKey: string;
  traceId: string;
  causationId: string;
  enqueuedAtMs: number;
  /** Deliveries so far, 1 for the first. */
  delivery: number;
  /** The dead letter this job was replayed from; empty for a first run. */
  replayOf: string;
}

export interface JobHeaders {
  jobId: string;
  idempotencyKey: string;
  traceId: string;
  causationId: string;
  enqueuedAtMs: number;
  replayOf: string;
}

export function encodeJobHeaders(h: JobHeaders): MsgHdrs {
  const out = natsHeaders();
  out.set(JOB_HEADERS.jobId, h.jobId);
  if (h.idempotencyKey !== "") out.set(JOB_HEADERS.idempotencyKey, h.idempotencyKey);
  if (h.traceId !== "") out.set(JOB_HEADERS.traceId, h.traceId);
  if (h.causationId !== "") out.set(JOB_HEADERS.causationId, h.causationId);
  out.set(JOB_HEADERS.enqueuedAt, String(h.enqueuedAtMs));
  if (h.replayOf !== "") out.set(JOB_HEADERS.replayOf, h.replayOf);
  return out;
}

/** Reads a delivered message as a Job; a message without a job id gets its sequence as id. */
export function jobFromMessage(dependency: string, m: JsMsg): Job {
  const h = m.headers;
  const get = (name: string) => h?.get(name) ?? "";
  const payload = m.data;
  return {
    id: get(JOB_HEADERS.jobId) || `seq-${m.seq}`,
    dependency,
    payload,
    text: () => new TextDecoder().decode(payload),
    json: <T>() => JSON.parse(new TextDecoder().decode(payload)) as T,
    idempotencyKey: get(JOB_HEADERS.idempotencyKey),
    traceId: get(JOB_HEADERS.traceId),
    causationId: get(JOB_HEADERS.causationId),
    enqueuedAtMs: Number(get(JOB_HEADERS.enqueuedAt)) || 0,
    delivery: m.info.deliveryCount,
    replayOf: get(JOB_HEADERS.replayOf),
  };
}

/** The dead-lettered copy's headers: the job's own, plus why and when it was given up on. */
export function deadLetterHeaders(
  job: Job,
  letter: {
    letterId: string;
    reason: string;
    attempts: number;
    lastError: string;
    errorType: string;
    atMs: number;
  },
): MsgHdrs {
  const out = encodeJobHeaders({ ...job, jobId: job.id });
  out.set(DLQ_HEADERS.letterId, letter.letterId);
  out.set(DLQ_HEADERS.reason, letter.reason);
  out.set(DLQ_HEADERS.attempts, String(letter.attempts));
  // Header values may not hold line breaks.
  out.set(
    DLQ_HEADERS.lastError,
    letter.lastError.replace(/[\r\n]+/g, " ").slice(0, MAX_HEADER_ERROR_CHARS),
  );
  if (letter.errorType !== "") out.set(DLQ_HEADERS.errorType, letter.errorType);
  out.set(DLQ_HEADERS.deadLetteredAt, String(letter.atMs));
  return out;
}
