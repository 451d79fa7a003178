import { create } from "@bufbuild/protobuf";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  DeadLetterReason,
  DeadLetterSchema,
  DeadLetterService,
} from "../../gen/bulwark/v1/dead_letter_pb.ts";
import type { NewDeadLetter } from "../../server/domain/dead-letter.ts";
import type { ControlPlane } from "../control-plane.ts";

/** How long recording a dead letter may take before the worker tries again later. */
const RECORD_TIMEOUT_MS = 5_000;
/** The control plane's cap on a letter's last error. */
const MAX_LAST_ERROR_CHARS = 4_096;

/** What a worker knows of a job it gives up on: what the control plane records of it. */
export type DeadLetterInput = NewDeadLetter;

/** Records dead letters on the control plane (DeadLetterService.RecordDeadLetter). */
export class DeadLetterRecorder {
  private readonly client: Client<typeof DeadLetterService>;

  constructor(private readonly cp: ControlPlane) {
    this.client = createClient(DeadLetterService, cp.transport);
  }

  async record(d: DeadLetterInput): Promise<void> {
    await this.client.recordDeadLetter(
      {
        letter: create(DeadLetterSchema, {
          letterId: d.letterId,
          dependency: d.dependency,
          jobId: d.jobId,
          reason:
            d.reason === "permanent" ? DeadLetterReason.PERMANENT : DeadLetterReason.MAX_DELIVERIES,
          payload: d.payload,
          attempts: d.attempts,
          lastError: d.lastError.slice(0, MAX_LAST_ERROR_CHARS),
          errorType: d.errorType.slice(0, 128),
          traceId: /^[0-9a-f]{32}$/.test(d.traceId) ? d.traceId : "",
          causationId: d.causationId.slice(0, 128),
          idempotencyKey: d.idempotencyKey,
          enqueuedAtUnixMs: BigInt(Math.max(0, d.enqueuedAtMs)),
          deadLetteredAtUnixMs: BigInt(d.deadLetteredAtMs),
          dlqSequence: BigInt(d.dlqSequence),
          replayOf: d.replayOf,
        }),
      },
      { timeoutMs: RECORD_TIMEOUT_MS, headers: this.cp.headers },
    );
  }
}

/**
 * Whether a failed Record may succeed later (the control plane is away or busy) rather than
 * being refused for good.
 */
export function isRetryableRecordError(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return true;
  return [
    Code.Unavailable,
    Code.DeadlineExceeded,
    Code.Canceled,
    Code.Unknown,
    Code.Internal,
    Code.ResourceExhausted,
  ].includes(err.code);
}
