/** Converters between dead letters in the domain and the bulwark.v1 wire messages. */
import { create } from "@bufbuild/protobuf";
import {
  type DeadLetter,
  DeadLetterReason,
  DeadLetterSchema,
  DeadLetterStatus,
} from "../../gen/bulwark/v1/dead_letter_pb.ts";
import type {
  DeadLetterReasonName,
  DeadLetterRecord,
  DeadLetterStatusName,
} from "../domain/dead-letter.ts";

const STATUS: Record<DeadLetterStatusName, DeadLetterStatus> = {
  open: DeadLetterStatus.OPEN,
  replayed: DeadLetterStatus.REPLAYED,
  resolved: DeadLetterStatus.RESOLVED,
};

const REASON: Record<DeadLetterReasonName, DeadLetterReason> = {
  "max-deliveries": DeadLetterReason.MAX_DELIVERIES,
  permanent: DeadLetterReason.PERMANENT,
};

/** The wire status's domain name; undefined for UNSPECIFIED or an unknown value. */
export function statusFromWire(status: DeadLetterStatus): DeadLetterStatusName | undefined {
  return (Object.keys(STATUS) as DeadLetterStatusName[]).find((k) => STATUS[k] === status);
}

export function reasonFromWire(reason: DeadLetterReason): DeadLetterReasonName | undefined {
  return (Object.keys(REASON) as DeadLetterReasonName[]).find((k) => REASON[k] === reason);
}

/** The wire form; the payload only when `withPayload` (Get), not in lists. */
export function deadLetterToWire(d: DeadLetterRecord, withPayload: boolean): DeadLetter {
  return create(DeadLetterSchema, {
    letterId: d.letterId,
    dependency: d.dependency,
    jobId: d.jobId,
    reason: REASON[d.reason],
    status: STATUS[d.status],
    payloadHash: d.payloadHash,
    payload: withPayload ? d.payload : new Uint8Array(),
    attempts: d.attempts,
    lastError: d.lastError,
    errorType: d.errorType,
    traceId: d.traceId,
    causationId: d.causationId,
    idempotencyKey: d.idempotencyKey,
    enqueuedAtUnixMs: BigInt(d.enqueuedAtMs),
    deadLetteredAtUnixMs: BigInt(d.deadLetteredAtMs),
    recordedBy: d.recordedBy,
    dlqSequence: BigInt(d.dlqSequence),
    replayOf: d.replayOf,
    replayCount: d.replayCount,
    replayedAtUnixMs: BigInt(d.replayedAtMs),
    replayedBy: d.replayedBy,
    replayJobId: d.replayJobId,
    resolvedAtUnixMs: BigInt(d.resolvedAtMs),
    resolvedBy: d.resolvedBy,
    resolution: d.resolution,
  });
}
