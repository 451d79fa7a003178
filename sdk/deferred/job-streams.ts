import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  nanos,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "nats";
import type { QueuePolicy } from "../policy.ts";
import {
  dlqStreamName,
  dlqSubject,
  jobStreamName,
  jobSubject,
  WORKER_CONSUMER,
} from "./job-message.ts";

/** Room for a job's headers on top of its payload (ids, trace, the dead letter's error). */
const HEADER_ALLOWANCE_BYTES = 4_096;
/**
 * How long dead-lettered copies stay in the dead-letter stream. The control plane keeps each
 * letter with its payload for good; the stream's copy is for inspection with NATS tools.
 */
export const DLQ_MAX_AGE_MS = 30 * 86_400_000;
/**
 * Jobs handed out and not yet acknowledged, across every worker of a dependency: far above any
 * sensible total concurrency, so that it never throttles workers.
 */
const MAX_ACK_PENDING = 10_000;

/** The work queue of DESIGN §6: jobs are removed once acknowledged; enqueues past max refused. */
export function jobStreamConfig(dependency: string, q: QueuePolicy): Partial<StreamConfig> {
  return {
    name: jobStreamName(dependency),
    subjects: [jobSubject(dependency)],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    discard: DiscardPolicy.New,
    max_age: nanos(q.maxAgeMs),
    max_msgs: q.maxJobs,
    max_msg_size: q.maxPayloadBytes + HEADER_ALLOWANCE_BYTES,
  };
}

/** The dead-letter stream: kept by limits, the oldest copies dropped first. */
export function dlqStreamConfig(dependency: string, q: QueuePolicy): Partial<StreamConfig> {
  return {
    name: dlqStreamName(dependency),
    subjects: [dlqSubject(dependency)],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(DLQ_MAX_AGE_MS),
    max_msgs: q.maxJobs,
    max_msg_size: q.maxPayloadBytes + 2 * HEADER_ALLOWANCE_BYTES,
  };
}

function isNotFound(err: unknown): boolean {
  return /not found/i.test((err as Error)?.message ?? "");
}

/** Creates the stream, or updates it when its limits differ from the policy's. */
async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig>): Promise<void> {
  const name = config.name!;
  let current: StreamConfig | undefined;
  try {
    current = (await jsm.streams.info(name)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (current === undefined) {
    try {
      await jsm.streams.add(config);
      return;
    } catch (err) {
      // Another process created it meanwhile; bring it to this policy below.
      if (!/already in use/i.test((err as Error).message)) throw err;
      current = (await jsm.streams.info(name)).config;
    }
  }
  const differs =
    current.max_age !== config.max_age ||
    current.max_msgs !== config.max_msgs ||
    current.max_msg_size !== config.max_msg_size ||
    current.discard !== config.discard;
  if (differs) await jsm.streams.update(name, { ...current, ...config });
}

/**
 * Makes sure a dependency's work queue, dead-letter stream and shared worker consumer exist
 * with the policy's limits. Idempotent: safe to call from every process at once.
 */
export async function ensureJobStreams(
  jsm: JetStreamManager,
  dependency: string,
  q: QueuePolicy,
  withConsumer: boolean,
): Promise<void> {
  await ensureStream(jsm, jobStreamConfig(dependency, q));
  await ensureStream(jsm, dlqStreamConfig(dependency, q));
  if (!withConsumer) return;
  const stream = jobStreamName(dependency);
  const wanted = {
    durable_name: WORKER_CONSUMER,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(q.ackWaitMs),
    // Unlimited: the worker counts deliveries itself and dead-letters a job after
    // max_deliveries, so a job is never silently stranded in the stream.
    max_deliver: -1,
    max_ack_pending: MAX_ACK_PENDING,
  };
  let existing: { ack_wait?: number } | undefined;
  try {
    existing = (await jsm.consumers.info(stream, WORKER_CONSUMER)).config;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (existing === undefined) {
    try {
      await jsm.consumers.add(stream, wanted);
      return;
    } catch (err) {
      if (!/already in use|exists/i.test((err as Error).message)) throw err;
      existing = (await jsm.consumers.info(stream, WORKER_CONSUMER)).config;
    }
  }
  if (existing.ack_wait !== wanted.ack_wait) {
    await jsm.consumers.update(stream, WORKER_CONSUMER, { ack_wait: wanted.ack_wait });
  }
}
