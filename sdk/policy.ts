import type { Policy } from "../gen/bulwark/v1/policy_pb.ts";
import { Jitter } from "../gen/bulwark/v1/policy_pb.ts";

export type JitterMode = "full" | "decorrelated" | "none";

export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  jitter: JitterMode;
  maxRetryAfterMs: number;
}

/** What the SDK needs of a dependency's policy to run a call. */
export interface CallPolicy {
  dependency: string;
  revision: number;
  timeoutMs: number;
  deadlineMs: number;
  retry: RetryPolicy;
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
    local: false,
  };
}
