import type { Policy } from "../gen/bulwark/v1/policy_pb.ts";
import { Jitter } from "../gen/bulwark/v1/policy_pb.ts";
import {
  DEFAULT_QUEUE_ACK_WAIT_MS,
  DEFAULT_QUEUE_MAX_AGE_MS,
  DEFAULT_QUEUE_MAX_DELIVERIES,
  DEFAULT_QUEUE_MAX_JOBS,
  DEFAULT_QUEUE_MAX_PAYLOAD_BYTES,
  DEFAULT_WORKER_INITIAL_BACKOFF_MS,
  DEFAULT_WORKER_MAX_BACKOFF_MS,
} from "../server/domain/policy.ts";

export type JitterMode = "full" | "decorrelated" | "none";

export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  jitter: JitterMode;
  maxRetryAfterMs: number;
}

/**
 * How deferrable work for a dependency is queued and retried by workers (DESIGN §6). The
 * server fills every field it stores; the defaults here (the server's own) are for a policy
 * served by an older server that left the queue unset.
 */
export interface QueuePolicy {
  /** Deliveries of one job before it is dead-lettered. */
  maxDeliveries: number;
  /** First redelivery delay after a transient failure, in milliseconds. */
  workerInitialBackoffMs: number;
  /** Cap of the redelivery delay, in milliseconds. */
  workerMaxBackoffMs: number;
  /** Longest a job may wait in the queue, in milliseconds. */
  maxAgeMs: number;
  /** Jobs the queue holds at most; further enqueues are refused. */
  maxJobs: number;
  /** Largest job payload, in bytes. */
  maxPayloadBytes: number;
  /** Time a worker may hold a job before JetStream redelivers it, in milliseconds. */
  ackWaitMs: number;
}

/** The queue settings of the proto's documented defaults, for fields the server left unset. */
function queuePolicyFromWire(q: Policy["queue"]): QueuePolicy {
  const maxDeliveries = q?.maxDeliveries ?? DEFAULT_QUEUE_MAX_DELIVERIES;
  const workerInitialBackoffMs = q?.workerInitialBackoffMs ?? DEFAULT_WORKER_INITIAL_BACKOFF_MS;
  return {
    maxDeliveries,
    workerInitialBackoffMs,
    workerMaxBackoffMs:
      q?.workerMaxBackoffMs ?? Math.max(DEFAULT_WORKER_MAX_BACKOFF_MS, workerInitialBackoffMs),
    maxAgeMs: q?.maxAgeMs === undefined ? DEFAULT_QUEUE_MAX_AGE_MS : Number(q.maxAgeMs),
    maxJobs: q?.maxJobs ?? DEFAULT_QUEUE_MAX_JOBS,
    maxPayloadBytes: q?.maxPayloadBytes ?? DEFAULT_QUEUE_MAX_PAYLOAD_BYTES,
    ackWaitMs: q?.ackWaitMs ?? DEFAULT_QUEUE_ACK_WAIT_MS,
  };
}

/** What the SDK needs of a dependency's policy to run a call. */
export interface CallPolicy {
  dependency: string;
  revision: number;
  timeoutMs: number;
  deadlineMs: number;
  retry: RetryPolicy;
  queue: QueuePolicy;
  /** True for the SDK's built-in policy, used while the control plane cannot be reached. */
  local: boolean;
}

/**
 * Used for a dependency whose policy the SDK has never received, while the control plane is
 * unreachable: a bounded attempt, two retries, 30 s in all. Conservative, so that an outage of
 * the control plane does not turn into unbounded waits.
 */
export function localPolicy(dependency: string): CallPolicy {
  return {
    dependency,
    revision: 0,
    timeoutMs: 10_000,
    deadlineMs: 30_000,
    retry: {
      maxAttempts: 3,
      initialBackoffMs: 100,
      maxBackoffMs: 2_000,
      backoffMultiplier: 2,
      jitter: "full",
      maxRetryAfterMs: 30_000,
    },
    queue: queuePolicyFromWire(undefined),
    local: true,
  };
}

const JITTER: Record<number, JitterMode> = {
  [Jitter.FULL]: "full",
  [Jitter.DECORRELATED]: "decorrelated",
  [Jitter.NONE]: "none",
};

/** Reads a policy as served by the control plane (which fills in every field). */
export function callPolicyFromWire(p: Policy): CallPolicy {
  const fallback = localPolicy(p.dependency);
  const r = p.retry;
  return {
    dependency: p.dependency,
    revision: Number(p.revision),
    timeoutMs: p.timeoutMs,
    deadlineMs: p.deadlineMs ?? fallback.deadlineMs,
    retry: {
      maxAttempts: r?.maxAttempts ?? fallback.retry.maxAttempts,
      initialBackoffMs: r?.initialBackoffMs ?? fallback.retry.initialBackoffMs,
      maxBackoffMs: r?.maxBackoffMs ?? fallback.retry.maxBackoffMs,
      backoffMultiplier: r?.backoffMultiplier ?? fallback.retry.backoffMultiplier,
      jitter: JITTER[r?.jitter ?? Jitter.FULL] ?? "full",
      maxRetryAfterMs: r?.maxRetryAfterMs ?? fallback.retry.maxRetryAfterMs,
    },
    queue: queuePolicyFromWire(p.queue),
    local: false,
  };
}
