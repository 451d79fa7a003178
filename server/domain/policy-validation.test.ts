import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  BreakerScope,
  Jitter,
  type Policy,
  PolicySchema,
  SlidingWindowKind,
} from "../../gen/bulwark/v1/policy_pb.ts";
import { InvalidArgumentError } from "./errors.ts";
import type { PolicySpec } from "./policy.ts";
import { normalizePolicy } from "./policy-validation.ts";

/** The plain-object form of a Policy init (not an already created message). */
type PolicyInit = Exclude<MessageInitShape<typeof PolicySchema>, Policy>;

/** A valid policy with only the required fields, plus `init`. */
function policyMessage(init: PolicyInit = {}) {
  return create(PolicySchema, {
    dependency: "openai.chat",
    sla: { latencyObjectiveMs: 5_000, availabilityTargetPercent: 99.5 },
    timeoutMs: 2_000,
    ...init,
  });
}

/** The `field` of the InvalidArgumentError normalizePolicy throws, or undefined if it passes. */
function rejectedField(init: PolicyInit): string | undefined {
  try {
    normalizePolicy(policyMessage(init));
  } catch (err) {
    if (err instanceof InvalidArgumentError) return err.field;
    throw err;
  }
  return undefined;
}

/** The wire form of a normalized policy with every field set, as Get serves it. */
function messageOf(spec: PolicySpec) {
  return create(PolicySchema, {
    dependency: spec.dependency,
    sla: {
      latencyObjectiveMs: spec.latencyObjectiveMs,
      availabilityTargetPercent: spec.availabilityTargetPercent,
    },
    timeoutMs: spec.timeoutMs,
    deadlineMs: spec.deadlineMs,
    retry: {
      ...spec.retry,
      jitter: { full: Jitter.FULL, decorrelated: Jitter.DECORRELATED, none: Jitter.NONE }[
        spec.retry.jitter
      ],
    },
    breaker: {
      ...spec.breaker,
      scope: spec.breaker.scope === "service" ? BreakerScope.SERVICE : BreakerScope.DEPENDENCY,
      windowKind:
        spec.breaker.windowKind === "time" ? SlidingWindowKind.TIME : SlidingWindowKind.COUNT,
    },
    queue: { ...spec.queue, maxAgeMs: BigInt(spec.queue.maxAgeMs) },
  });
}

describe("normalizePolicy: defaults", () => {
  it("fills in every unset field with its documented default", () => {
    expect(normalizePolicy(policyMessage())).toEqual({
      dependency: "openai.chat",
      revision: 0,
      latencyObjectiveMs: 5_000,
      availabilityTargetPercent: 99.5,
      timeoutMs: 2_000,
      // 3 attempts of 2 s plus 2 back-offs of at most 2 s.
      deadlineMs: 10_000,
      retry: {
        maxAttempts: 3,
        initialBackoffMs: 100,
        maxBackoffMs: 2_000,
        backoffMultiplier: 2,
        jitter: "full",
        maxRetryAfterMs: 30_000,
      },
      breaker: {
        windowSize: 100,
        minimumCalls: 10,
        failureRateThresholdPercent: 50,
        consecutiveFailures: 0,
        openWaitMs: 30_000,
        openWaitMultiplier: 2,
        maxOpenWaitMs: 300_000,
        halfOpenPermits: 1,
        scope: "dependency",
        windowKind: "count",
        windowDurationMs: 60_000,
        slowCallMs: 0,
        slowCallRateThresholdPercent: 100,
        maxRetryAfterOpenMs: 60_000,
      },
      queue: {
        maxDeliveries: 5,
        workerInitialBackoffMs: 1_000,
        workerMaxBackoffMs: 60_000,
        maxAgeMs: 604_800_000,
        maxJobs: 100_000,
        maxPayloadBytes: 65_536,
        ackWaitMs: 30_000,
      },
      updatedAtMs: 0,
      updatedBy: "",
    } satisfies PolicySpec);
  });

  it("keeps the values that are set", () => {
    const spec = normalizePolicy(
      policyMessage({
        deadlineMs: 4_000,
        retry: {
          maxAttempts: 5,
          initialBackoffMs: 50,
          maxBackoffMs: 500,
          backoffMultiplier: 1.5,
          jitter: Jitter.DECORRELATED,
          maxRetryAfterMs: 0,
        },
        breaker: {
          windowSize: 20,
          minimumCalls: 20,
          failureRateThresholdPercent: 100,
          consecutiveFailures: 5,
          openWaitMs: 1_000,
          openWaitMultiplier: 1,
          maxOpenWaitMs: 1_000,
          halfOpenPermits: 3,
          scope: BreakerScope.SERVICE,
          windowKind: SlidingWindowKind.TIME,
          windowDurationMs: 30_000,
          slowCallMs: 1_500,
          slowCallRateThresholdPercent: 80,
          maxRetryAfterOpenMs: 0,
        },
        queue: {
          maxDeliveries: 9,
          workerInitialBackoffMs: 0,
          workerMaxBackoffMs: 10,
          maxAgeMs: 1_000n,
          maxJobs: 1,
          maxPayloadBytes: 1_048_576,
          ackWaitMs: 3_600_000,
        },
      }),
    );
    expect(spec.deadlineMs).toBe(4_000);
    expect(spec.retry).toEqual({
      maxAttempts: 5,
      initialBackoffMs: 50,
      maxBackoffMs: 500,
      backoffMultiplier: 1.5,
      jitter: "decorrelated",
      maxRetryAfterMs: 0,
    });
    expect(spec.breaker).toEqual({
      windowSize: 20,
      minimumCalls: 20,
      failureRateThresholdPercent: 100,
      consecutiveFailures: 5,
      openWaitMs: 1_000,
      openWaitMultiplier: 1,
      maxOpenWaitMs: 1_000,
      halfOpenPermits: 3,
      scope: "service",
      windowKind: "time",
      windowDurationMs: 30_000,
      slowCallMs: 1_500,
      slowCallRateThresholdPercent: 80,
      maxRetryAfterOpenMs: 0,
    });
    expect(spec.queue).toEqual({
      maxDeliveries: 9,
      workerInitialBackoffMs: 0,
      workerMaxBackoffMs: 10,
      maxAgeMs: 1_000,
      maxJobs: 1,
      maxPayloadBytes: 1_048_576,
      ackWaitMs: 3_600_000,
    });
  });

  it("maps every enum value", () => {
    const jitterOf = (jitter: Jitter) =>
      normalizePolicy(policyMessage({ retry: { jitter } })).retry.jitter;
    expect(jitterOf(Jitter.UNSPECIFIED)).toBe("full");
    expect(jitterOf(Jitter.FULL)).toBe("full");
    expect(jitterOf(Jitter.DECORRELATED)).toBe("decorrelated");
    expect(jitterOf(Jitter.NONE)).toBe("none");

    const scopeOf = (scope: BreakerScope) =>
      normalizePolicy(policyMessage({ breaker: { scope } })).breaker.scope;
    expect(scopeOf(BreakerScope.UNSPECIFIED)).toBe("dependency");
    expect(scopeOf(BreakerScope.DEPENDENCY)).toBe("dependency");
    expect(scopeOf(BreakerScope.SERVICE)).toBe("service");

    const kindOf = (windowKind: SlidingWindowKind) =>
      normalizePolicy(policyMessage({ breaker: { windowKind } })).breaker.windowKind;
    expect(kindOf(SlidingWindowKind.UNSPECIFIED)).toBe("count");
    expect(kindOf(SlidingWindowKind.COUNT)).toBe("count");
    expect(kindOf(SlidingWindowKind.TIME)).toBe("time");
  });

  it("derives defaults that depend on other fields from them", () => {
    const spec = normalizePolicy(
      policyMessage({
        retry: { initialBackoffMs: 5_000 },
        breaker: { windowSize: 4, openWaitMs: 600_000 },
      }),
    );
    expect(spec.retry.maxBackoffMs).toBe(5_000);
    expect(spec.breaker.minimumCalls).toBe(4);
    expect(spec.breaker.maxOpenWaitMs).toBe(600_000);
    const queue = normalizePolicy(policyMessage({ queue: { workerInitialBackoffMs: 120_000 } }));
    expect(queue.queue.workerMaxBackoffMs).toBe(120_000);
  });

  it("lets a time window ask for more calls than any count window holds", () => {
    const spec = normalizePolicy(
      policyMessage({ breaker: { windowKind: SlidingWindowKind.TIME, minimumCalls: 50_000 } }),
    );
    expect(spec.breaker.minimumCalls).toBe(50_000);
  });

  it("does not change the message it was given", () => {
    const message = policyMessage();
    normalizePolicy(message);
    expect(message.retry).toBeUndefined();
    expect(message.breaker).toBeUndefined();
    expect(message.deadlineMs).toBeUndefined();
  });
});

describe("normalizePolicy: default deadline", () => {
  const deadlineOf = (init: PolicyInit) => normalizePolicy(policyMessage(init)).deadlineMs;

  it("is the whole retry budget: every attempt's timeout and every back-off's cap", () => {
    // 4 × 500 + 3 × 1 000
    expect(deadlineOf({ timeoutMs: 500, retry: { maxAttempts: 4, maxBackoffMs: 1_000 } })).toBe(
      5_000,
    );
    // A single attempt has no back-off.
    expect(deadlineOf({ timeoutMs: 1_500, retry: { maxAttempts: 1 } })).toBe(1_500);
  });

  it("is capped at 60 s", () => {
    const sla = { latencyObjectiveMs: 60_000, availabilityTargetPercent: 99 };
    expect(deadlineOf({ sla, timeoutMs: 30_000 })).toBe(60_000);
  });

  it("is never shorter than one attempt's timeout", () => {
    const sla = { latencyObjectiveMs: 200_000, availabilityTargetPercent: 99 };
    expect(deadlineOf({ sla, timeoutMs: 90_000 })).toBe(90_000);
  });

  it("is overridden by an explicit deadline within [timeout_ms, 10 min]", () => {
    expect(deadlineOf({ deadlineMs: 2_000 })).toBe(2_000);
    expect(deadlineOf({ deadlineMs: 600_000 })).toBe(600_000);
    expect(rejectedField({ deadlineMs: 1_999 })).toBe("policy.deadline_ms");
    expect(rejectedField({ deadlineMs: 600_001 })).toBe("policy.deadline_ms");
  });
});

describe("normalizePolicy: round trip", () => {
  it("accepts its own output again as input", () => {
    const spec = normalizePolicy(policyMessage());
    expect(normalizePolicy(messageOf(spec))).toEqual(spec);
    const timed = normalizePolicy(
      policyMessage({
        breaker: { windowKind: SlidingWindowKind.TIME, slowCallMs: 2_000 },
        queue: { maxAgeMs: 2_592_000_000n },
      }),
    );
    expect(normalizePolicy(messageOf(timed))).toEqual(timed);
  });

  // A Get followed by a Put of the same policy must not be rejected. With a per-attempt timeout
  // above 10 minutes the default deadline equals the timeout, which an explicit deadline_ms may
  // never be (its range is [timeout_ms, 600 000]).
  it("accepts its own output again when the timeout is above 10 minutes", () => {
    const spec = normalizePolicy(
      policyMessage({
        sla: { latencyObjectiveMs: 3_600_000, availabilityTargetPercent: 99 },
        timeoutMs: 700_000,
      }),
    );
    expect(() => normalizePolicy(messageOf(spec))).not.toThrow();
  });
});

describe("normalizePolicy: rejections", () => {
  it("requires a policy", () => {
    expect(() => normalizePolicy(undefined)).toThrow(InvalidArgumentError);
    try {
      normalizePolicy(undefined);
    } catch (err) {
      expect((err as InvalidArgumentError).field).toBe("policy");
    }
  });

  it("names the field, the rule and the value in the error", () => {
    let caught: unknown;
    try {
      normalizePolicy(policyMessage({ timeoutMs: -1 }));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidArgumentError);
    const err = caught as InvalidArgumentError;
    expect(err.name).toBe("InvalidArgumentError");
    expect(err.field).toBe("policy.timeout_ms");
    expect(err.message).toContain("policy.timeout_ms");
    expect(err.rule).toContain("-1");
  });

  const sla = (latencyObjectiveMs: number, availabilityTargetPercent = 99.5) => ({
    latencyObjectiveMs,
    availabilityTargetPercent,
  });

  it.each<[string, PolicyInit, string]>([
    ["an empty dependency name", { dependency: "" }, "policy.dependency"],
    ["a dependency name with a space", { dependency: "open ai" }, "policy.dependency"],
    ["a dependency name with '*'", { dependency: "openai.*" }, "policy.dependency"],
    ["a dependency name with '>'", { dependency: "openai.>" }, "policy.dependency"],
    ["a dependency name starting with '.'", { dependency: ".openai" }, "policy.dependency"],
    ["a dependency name ending with '.'", { dependency: "openai." }, "policy.dependency"],
    ["a dependency name with '..'", { dependency: "openai..chat" }, "policy.dependency"],
    ["a dependency name with an empty part", { dependency: "a-.b." }, "policy.dependency"],
    ["a dependency name of 129 characters", { dependency: "a".repeat(129) }, "policy.dependency"],
    ["a missing sla", { sla: undefined }, "policy.sla"],
    ["a latency objective of 0", { sla: sla(0) }, "policy.sla.latency_objective_ms"],
    [
      "an availability target of 0",
      { sla: sla(5_000, 0) },
      "policy.sla.availability_target_percent",
    ],
    [
      "an availability target above 100",
      { sla: sla(5_000, 100.5) },
      "policy.sla.availability_target_percent",
    ],
    ["a negative timeout", { timeoutMs: -5 }, "policy.timeout_ms"],
    ["a missing (zero) timeout", { timeoutMs: 0 }, "policy.timeout_ms"],
    ["a timeout above the latency objective", { timeoutMs: 5_001 }, "policy.timeout_ms"],
    ["0 attempts", { retry: { maxAttempts: 0 } }, "policy.retry.max_attempts"],
    ["11 attempts", { retry: { maxAttempts: 11 } }, "policy.retry.max_attempts"],
    [
      "a negative initial back-off",
      { retry: { initialBackoffMs: -1 } },
      "policy.retry.initial_backoff_ms",
    ],
    [
      "a back-off cap below the initial back-off",
      { retry: { initialBackoffMs: 500, maxBackoffMs: 499 } },
      "policy.retry.max_backoff_ms",
    ],
    [
      "a NaN back-off multiplier",
      { retry: { backoffMultiplier: Number.NaN } },
      "policy.retry.backoff_multiplier",
    ],
    [
      "an infinite back-off multiplier",
      { retry: { backoffMultiplier: Number.POSITIVE_INFINITY } },
      "policy.retry.backoff_multiplier",
    ],
    [
      "a back-off multiplier below 1",
      { retry: { backoffMultiplier: 0.5 } },
      "policy.retry.backoff_multiplier",
    ],
    ["an unknown jitter", { retry: { jitter: 99 as Jitter } }, "policy.retry.jitter"],
    [
      "a negative Retry-After cap",
      { retry: { maxRetryAfterMs: -1 } },
      "policy.retry.max_retry_after_ms",
    ],
    ["a window of 0", { breaker: { windowSize: 0 } }, "policy.breaker.window_size"],
    [
      "minimum_calls above window_size",
      { breaker: { windowSize: 10, minimumCalls: 11 } },
      "policy.breaker.minimum_calls",
    ],
    [
      "minimum_calls above the default window_size",
      { breaker: { minimumCalls: 101 } },
      "policy.breaker.minimum_calls",
    ],
    [
      "a failure-rate threshold of 0",
      { breaker: { failureRateThresholdPercent: 0 } },
      "policy.breaker.failure_rate_threshold_percent",
    ],
    [
      "a failure-rate threshold of 101",
      { breaker: { failureRateThresholdPercent: 101 } },
      "policy.breaker.failure_rate_threshold_percent",
    ],
    [
      "negative consecutive failures",
      { breaker: { consecutiveFailures: -1 } },
      "policy.breaker.consecutive_failures",
    ],
    ["an open wait of 0", { breaker: { openWaitMs: 0 } }, "policy.breaker.open_wait_ms"],
    [
      "a NaN open-wait multiplier",
      { breaker: { openWaitMultiplier: Number.NaN } },
      "policy.breaker.open_wait_multiplier",
    ],
    [
      "an open-wait cap below the open wait",
      { breaker: { openWaitMs: 10_000, maxOpenWaitMs: 9_999 } },
      "policy.breaker.max_open_wait_ms",
    ],
    [
      "0 half-open permits",
      { breaker: { halfOpenPermits: 0 } },
      "policy.breaker.half_open_permits",
    ],
    ["an unknown scope", { breaker: { scope: 7 as BreakerScope } }, "policy.breaker.scope"],
    ["a fractional window size", { breaker: { windowSize: 2.5 } }, "policy.breaker.window_size"],
    [
      "an unknown window kind",
      { breaker: { windowKind: 9 as SlidingWindowKind } },
      "policy.breaker.window_kind",
    ],
    [
      "a time window under a second",
      { breaker: { windowDurationMs: 999 } },
      "policy.breaker.window_duration_ms",
    ],
    [
      "a time window over an hour",
      { breaker: { windowDurationMs: 3_601_000 } },
      "policy.breaker.window_duration_ms",
    ],
    [
      "a time window of a fraction of seconds",
      { breaker: { windowDurationMs: 1_500 } },
      "policy.breaker.window_duration_ms",
    ],
    ["a negative slow-call limit", { breaker: { slowCallMs: -1 } }, "policy.breaker.slow_call_ms"],
    [
      "a slow-call limit above the timeout",
      { breaker: { slowCallMs: 2_001 } },
      "policy.breaker.slow_call_ms",
    ],
    [
      "a slow-call rate threshold of 0",
      { breaker: { slowCallRateThresholdPercent: 0 } },
      "policy.breaker.slow_call_rate_threshold_percent",
    ],
    [
      "a NaN slow-call rate threshold",
      { breaker: { slowCallRateThresholdPercent: Number.NaN } },
      "policy.breaker.slow_call_rate_threshold_percent",
    ],
    [
      "a slow-call rate threshold of 100.5",
      { breaker: { slowCallRateThresholdPercent: 100.5 } },
      "policy.breaker.slow_call_rate_threshold_percent",
    ],
    [
      "a negative Retry-After open cap",
      { breaker: { maxRetryAfterOpenMs: -1 } },
      "policy.breaker.max_retry_after_open_ms",
    ],
    [
      "a Retry-After open cap over an hour",
      { breaker: { maxRetryAfterOpenMs: 3_600_001 } },
      "policy.breaker.max_retry_after_open_ms",
    ],
    [
      "minimum_calls above a million in a time window",
      { breaker: { windowKind: SlidingWindowKind.TIME, minimumCalls: 1_000_001 } },
      "policy.breaker.minimum_calls",
    ],
    ["0 deliveries", { queue: { maxDeliveries: 0 } }, "policy.queue.max_deliveries"],
    ["101 deliveries", { queue: { maxDeliveries: 101 } }, "policy.queue.max_deliveries"],
    [
      "a negative worker back-off",
      { queue: { workerInitialBackoffMs: -1 } },
      "policy.queue.worker_initial_backoff_ms",
    ],
    [
      "a worker back-off cap below the initial back-off",
      { queue: { workerInitialBackoffMs: 5_000, workerMaxBackoffMs: 4_999 } },
      "policy.queue.worker_max_backoff_ms",
    ],
    [
      "a worker back-off cap over an hour",
      { queue: { workerMaxBackoffMs: 3_600_001 } },
      "policy.queue.worker_max_backoff_ms",
    ],
    ["a job age under a second", { queue: { maxAgeMs: 999n } }, "policy.queue.max_age_ms"],
    ["a job age over 30 days", { queue: { maxAgeMs: 2_592_000_001n } }, "policy.queue.max_age_ms"],
    ["a negative job age", { queue: { maxAgeMs: -1n } }, "policy.queue.max_age_ms"],
    ["0 jobs", { queue: { maxJobs: 0 } }, "policy.queue.max_jobs"],
    ["10 000 001 jobs", { queue: { maxJobs: 10_000_001 } }, "policy.queue.max_jobs"],
    ["an empty payload cap", { queue: { maxPayloadBytes: 0 } }, "policy.queue.max_payload_bytes"],
    [
      "a payload cap over 1 MiB",
      { queue: { maxPayloadBytes: 1_048_577 } },
      "policy.queue.max_payload_bytes",
    ],
    ["an ack wait under a second", { queue: { ackWaitMs: 999 } }, "policy.queue.ack_wait_ms"],
    ["an ack wait over an hour", { queue: { ackWaitMs: 3_600_001 } }, "policy.queue.ack_wait_ms"],
  ])("rejects %s", (_what, init, field) => {
    expect(rejectedField(init)).toBe(field);
  });

  it("accepts the edges of each range", () => {
    expect(rejectedField({ timeoutMs: 5_000 })).toBeUndefined();
    expect(rejectedField({ dependency: "a" })).toBeUndefined();
    expect(rejectedField({ dependency: "A_b-c.9" })).toBeUndefined();
    expect(rejectedField({ dependency: "a".repeat(128) })).toBeUndefined();
    expect(rejectedField({ sla: sla(5_000, 100) })).toBeUndefined();
    expect(rejectedField({ breaker: { failureRateThresholdPercent: 0.1 } })).toBeUndefined();
    expect(rejectedField({ breaker: { windowSize: 10, minimumCalls: 10 } })).toBeUndefined();
    expect(rejectedField({ retry: { initialBackoffMs: 500, maxBackoffMs: 500 } })).toBeUndefined();
    expect(rejectedField({ breaker: { windowDurationMs: 1_000 } })).toBeUndefined();
    expect(rejectedField({ breaker: { windowDurationMs: 3_600_000 } })).toBeUndefined();
    expect(rejectedField({ breaker: { slowCallMs: 2_000 } })).toBeUndefined();
    expect(rejectedField({ breaker: { slowCallRateThresholdPercent: 100 } })).toBeUndefined();
    expect(rejectedField({ breaker: { maxRetryAfterOpenMs: 3_600_000 } })).toBeUndefined();
    expect(rejectedField({ queue: { maxDeliveries: 1, maxJobs: 10_000_000 } })).toBeUndefined();
    expect(rejectedField({ queue: { maxAgeMs: 1_000n, ackWaitMs: 1_000 } })).toBeUndefined();
  });
});
