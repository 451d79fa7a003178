import type { JetStreamManager, NatsConnection } from "nats";
import { MAX_KEY_BYTES } from "../../server/domain/idempotency-ledger.ts";
import type { ControlPlane } from "../control-plane.ts";
import { PayloadTooLargeError, QueueFullError, QueueUnavailableError } from "../errors.ts";
import type { EventEmitter } from "../events.ts";
import { checkCallOptions } from "../guarded-call.ts";
import type { NatsLink } from "../nats-link.ts";
import type { CallPolicy } from "../policy.ts";
import { newTraceId } from "../trace.ts";
import { encodeJobHeaders, jobSubject, newJobId } from "./job-message.ts";
import { ensureJobStreams } from "./job-streams.ts";

/** A job's payload: bytes as they are, text as UTF-8, anything else as JSON. */
export type JobPayload = Uint8Array | string | Record<string, unknown> | unknown[];

export interface EnqueueOptions {
  /**
   * Makes the job's effect happen once: the worker runs the handler through the idempotency
   * ledger under this key, and enqueuing the same key again within JetStream's duplicate window
   * (2 minutes) stores the job once. 1 to 255 bytes of UTF-8.
   */
  idempotencyKey?: string;
  /** The W3C trace id the job belongs to; a new one when unset. */
  traceId?: string;
  /** The event_id of the application event that led to this job. */
  causationId?: string;
}

/**
 * How long enqueue waits for NATS (connecting and storing the job) before it gives up with
 * QueueUnavailableError: long enough for a reconnect, short enough for a request path.
 */
export const ENQUEUE_TIMEOUT_MS = 5_000;

function encodePayload(payload: JobPayload): Uint8Array {
  if (payload instanceof Uint8Array) return payload;
  return new TextEncoder().encode(typeof payload === "string" ? payload : JSON.stringify(payload));
}

/** Refuses options the control plane would refuse when the job is dead-lettered. */
export function checkEnqueueOptions(options: EnqueueOptions): void {
  const { idempotencyKey, traceId, causationId } = options;
  if (idempotencyKey !== undefined) {
    const bytes = Buffer.byteLength(idempotencyKey, "utf8");
    if (bytes < 1 || bytes > MAX_KEY_BYTES) {
      throw new RangeError(`options.idempotencyKey must be 1-${MAX_KEY_BYTES} bytes; got ${bytes}`);
    }
  }
  checkCallOptions({ traceId, causationId });
}

/**
 * Bounds a step of enqueue. The timer keeps the process alive on purpose: a producer script whose
 * only pending work is an enqueue waiting for NATS must get its error, not exit with the job
 * silently lost.
 */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took longer than ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The producing side of the deferred path: checks a job against its dependency's policy, makes
 * sure the dependency's streams exist with the policy's limits, and stores the job in JetStream.
 */
export class JobQueue {
  /** Per dependency, the policy revision and connection its streams were last ensured for. */
  private readonly ensured = new Map<string, { revision: number; nc: NatsConnection }>();

  constructor(
    private readonly link: NatsLink | undefined,
    private readonly cp: ControlPlane,
    private readonly events: EventEmitter,
  ) {}

  /** The shared connection, or QueueUnavailableError when NATS is not configured or away. */
  async connection(dependency: string): Promise<NatsConnection> {
    if (this.link === undefined) {
      throw new QueueUnavailableError(dependency, "no NATS configured (options.nats)");
    }
    try {
      return await withTimeout(this.link.connection(), ENQUEUE_TIMEOUT_MS, "connecting to NATS");
    } catch (err) {
      throw new QueueUnavailableError(dependency, (err as Error).message, err);
    }
  }

  /** Makes sure the dependency's streams match its current policy (once per revision). */
  async ensureStreams(
    nc: NatsConnection,
    policy: CallPolicy,
    withConsumer: boolean,
  ): Promise<void> {
    const seen = this.ensured.get(policy.dependency);
    if (!withConsumer && seen?.nc === nc && seen.revision === policy.revision) return;
    const jsm: JetStreamManager = await nc.jetstreamManager();
    await ensureJobStreams(jsm, policy.dependency, policy.queue, withConsumer);
    this.ensured.set(policy.dependency, { revision: policy.revision, nc });
  }

  async enqueue(
    dependency: string,
    payload: JobPayload,
    options: EnqueueOptions = {},
  ): Promise<string> {
    checkEnqueueOptions(options);
    // PolicyNotFoundError for a dependency without a policy: nobody would know its limits.
    const policy = await this.cp.policy(dependency);
    const bytes = encodePayload(payload);
    if (bytes.byteLength > policy.queue.maxPayloadBytes) {
      throw new PayloadTooLargeError(dependency, bytes.byteLength, policy.queue.maxPayloadBytes);
    }
    const nc = await this.connection(dependency);
    const jobId = newJobId(dependency, options.idempotencyKey);
    const traceId = options.traceId ?? newTraceId();
    try {
      await withTimeout(this.ensureStreams(nc, policy, false), ENQUEUE_TIMEOUT_MS, "stream set-up");
      await nc.jetstream().publish(jobSubject(dependency), bytes, {
        msgID: jobId,
        timeout: ENQUEUE_TIMEOUT_MS,
        headers: encodeJobHeaders({
          jobId,
          idempotencyKey: options.idempotencyKey ?? "",
          traceId,
          causationId: options.causationId ?? "",
          enqueuedAtMs: Date.now(),
          replayOf: "",
        }),
      });
    } catch (err) {
      const message = (err as Error).message ?? String(err);
      if (/maximum messages/i.test(message)) throw new QueueFullError(dependency, err);
      if (/message size/i.test(message)) {
        throw new PayloadTooLargeError(dependency, bytes.byteLength, policy.queue.maxPayloadBytes);
      }
      // A stream changed by another process (or deleted) is set up again on the next enqueue.
      this.ensured.delete(dependency);
      throw new QueueUnavailableError(dependency, message, err);
    }
    this.events.emit({
      type: "job",
      status: "enqueued",
      dependency,
      jobId,
      traceId,
      delivery: 0,
    });
    return jobId;
  }
}
