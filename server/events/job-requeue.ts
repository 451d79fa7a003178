import { headers as natsHeaders } from "nats";
import type { JobRequeue, RequeuedJob } from "../domain/dead-letter-registry.ts";
import { FailedPreconditionError, UnavailableError } from "../domain/errors.ts";
import type { NatsPublisher } from "./nats-publisher.ts";

/**
 * The work-queue subject and job headers of DESIGN §6. The SDK's enqueue writes the same names
 * (sdk/deferred/job-message.ts; test/deferred-contract.test.ts checks that they agree).
 */
export const JOB_SUBJECT_PREFIX = "bulwark.jobs.";
export const JOB_HEADERS = {
  jobId: "Bulwark-Job-Id",
  idempotencyKey: "Bulwark-Idempotency-Key",
  traceId: "Bulwark-Trace-Id",
  causationId: "Bulwark-Causation-Id",
  enqueuedAt: "Bulwark-Enqueued-At",
  replayOf: "Bulwark-Replay-Of",
} as const;

/**
 * Stream names of a dependency's work queue and dead-letter stream, as the SDK creates them:
 * '.' becomes `_d` and '_' becomes `__` (stream names may not hold '.'), a one-to-one mapping,
 * so two dependencies never share a stream.
 */
export function jobStreamName(dependency: string): string {
  return `BULWARK_JOBS_${streamSuffix(dependency)}`;
}

export function dlqStreamName(dependency: string): string {
  return `BULWARK_DLQ_${streamSuffix(dependency)}`;
}

function streamSuffix(dependency: string): string {
  return dependency.replace(/[._]/g, (c) => (c === "." ? "_d" : "__"));
}

/** How long a replay waits for JetStream to store the job. */
const REQUEUE_TIMEOUT_MS = 5_000;

/**
 * Replays dead letters by publishing them to their dependency's work queue on the server's NATS
 * connection. The queue's stream is created by the SDK (enqueue or a worker); a dependency
 * whose stream does not exist cannot be replayed until a worker has run once.
 */
export class NatsJobRequeue implements JobRequeue {
  constructor(private readonly nats: NatsPublisher) {}

  async requeue(job: RequeuedJob): Promise<void> {
    const nc = this.nats.current;
    if (nc === undefined) {
      throw new UnavailableError("NATS is not connected; retry the replay later");
    }
    const h = natsHeaders();
    h.set(JOB_HEADERS.jobId, job.jobId);
    if (job.idempotencyKey !== "") h.set(JOB_HEADERS.idempotencyKey, job.idempotencyKey);
    if (job.traceId !== "") h.set(JOB_HEADERS.traceId, job.traceId);
    h.set(JOB_HEADERS.causationId, job.causationId);
    h.set(JOB_HEADERS.enqueuedAt, String(job.enqueuedAtMs));
    h.set(JOB_HEADERS.replayOf, job.replayOf);
    try {
      await nc.jetstream().publish(JOB_SUBJECT_PREFIX + job.dependency, job.payload, {
        msgID: job.messageId,
        headers: h,
        timeout: REQUEUE_TIMEOUT_MS,
      });
    } catch (err) {
      const message = (err as Error).message ?? String(err);
      if (/no responders|503/i.test(message)) {
        throw new FailedPreconditionError(
          `no work queue stream holds ${JOB_SUBJECT_PREFIX}${job.dependency}; start a worker for ${job.dependency} first`,
        );
      }
      if (/maximum messages|maximum bytes|message size/i.test(message)) {
        throw new FailedPreconditionError(
          `the work queue of ${job.dependency} refused the job: ${message}`,
        );
      }
      throw new UnavailableError(`the work queue could not be reached: ${message}`);
    }
  }
}
