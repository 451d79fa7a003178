/**
 * Each trigger of the breaker engine opens the breaker at the right call, with a fake clock for
 * time windows; and the operator states set by force().
 */
import { describe, expect, it } from "vitest";
import {
  acquire,
  BACK_OFF_EXTEND_STEP_MS,
  type Breaker,
  createBreaker,
  figuresOf,
  force,
  type OutcomeInput,
  record,
  SERVER_ACTOR,
  tick,
} from "./breaker-engine.ts";
import { type BreakerSpec, DEFAULT_QUEUE, type PolicySpec } from "./policy.ts";

/** A whole second, so that time-window buckets line up with the test's arithmetic. */
const T0 = 1_700_000_000_000;
const OPEN_WAIT_MS = 10_000;

function makePolicy(breaker: Partial<BreakerSpec> = {}): PolicySpec {
  return {
    dependency: "openai.chat",
    revision: 4,
    latencyObjectiveMs: 5_000,
    availabilityTargetPercent: 99.5,
    timeoutMs: 2_000,
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
      windowSize: 10,
      minimumCalls: 4,
      failureRateThresholdPercent: 50,
      consecutiveFailures: 0,
      openWaitMs: OPEN_WAIT_MS,
      openWaitMultiplier: 2,
      maxOpenWaitMs: 40_000,
      halfOpenPermits: 1,
      scope: "dependency",
      windowKind: "count",
      windowDurationMs: 10_000,
      slowCallMs: 0,
      slowCallRateThresholdPercent: 100,
      maxRetryAfterOpenMs: 60_000,
      ...breaker,
    },
    queue: { ...DEFAULT_QUEUE },
    updatedAtMs: 0,
    updatedBy: "test",
  };
}

const ok = (latencyMs = 10): OutcomeInput => ({
  result: "success",
  permitId: "",
  errorType: "",
  latencyMs,
});
const failed = (latencyMs = 10): OutcomeInput => ({
  result: "failure",
  permitId: "",
  errorType: "http_500",
  statusCode: 500,
  latencyMs,
});
const rateLimited = (retryAfterMs: number, statusCode = 429): OutcomeInput => ({
  result: "failure",
  permitId: "",
  errorType: `http_${statusCode}`,
  statusCode,
  retryAfterMs,
  latencyMs: 5,
});

/** Records each outcome at its time; returns the 0-based index of the call that opened it. */
function openedAt(breaker: Breaker, policy: PolicySpec, calls: [OutcomeInput, number][]) {
  for (const [i, [outcome, atMs]] of calls.entries()) {
    const effect = record(breaker, policy, outcome, atMs);
    if (effect.transitions.some((t) => t.to === "open")) return i;
  }
  return -1;
}

function untilMsOf(breaker: Breaker): number {
  if (breaker.phase.kind !== "open") throw new Error(`breaker is ${breaker.phase.kind}`);
  return breaker.phase.untilMs;
}

describe("time-based window", () => {
  const policy = makePolicy({ windowKind: "time", windowDurationMs: 10_000, minimumCalls: 4 });

  it("opens on the call that brings the last 10 s to minimumCalls over the threshold", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    const at = openedAt(breaker, policy, [
      [failed(), T0],
      [failed(), T0 + 2_000],
      [ok(), T0 + 4_000],
      [failed(), T0 + 9_999], // 4 calls within 10 s, 3 failed
    ]);
    expect(at).toBe(3);
    expect(breaker.reason).toBe("failure rate 75.0% >= 50% over 4 calls in 10000 ms");
    expect(untilMsOf(breaker)).toBe(T0 + 9_999 + OPEN_WAIT_MS);
  });

  it("does not open on failures that have aged out of the window", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    const at = openedAt(breaker, policy, [
      [failed(), T0],
      [failed(), T0 + 500],
      [failed(), T0 + 1_000],
      // 10 s later the first second has left; 11 s later the second one too.
      [ok(), T0 + 11_000],
      [ok(), T0 + 11_100],
      [ok(), T0 + 11_200],
    ]);
    expect(at).toBe(-1);
    expect(figuresOf(breaker)).toMatchObject({ calls: 3, failures: 0 });
    // The same outcomes in a count window would have opened on the fourth call.
    const counted = makePolicy({ windowKind: "count", minimumCalls: 4 });
    const other = createBreaker(policy.dependency, "", counted, T0);
    expect(
      openedAt(other, counted, [
        [failed(), T0],
        [failed(), T0 + 500],
        [failed(), T0 + 1_000],
        [ok(), T0 + 11_000],
      ]),
    ).toBe(3);
  });

  it("ages its figures with the clock even when no outcome arrives", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    record(breaker, policy, ok(), T0);
    record(breaker, policy, ok(), T0 + 1_000);
    expect(figuresOf(breaker, T0 + 5_000).calls).toBe(2);
    expect(figuresOf(breaker, T0 + 10_000).calls).toBe(1);
    expect(figuresOf(breaker, T0 + 11_000).calls).toBe(0);
  });
});

describe("slow-call rate", () => {
  const policy = makePolicy({
    slowCallMs: 500,
    slowCallRateThresholdPercent: 50,
    failureRateThresholdPercent: 100,
  });

  it("opens on the call that brings the slow-call rate to the threshold at minimumCalls", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    const at = openedAt(breaker, policy, [
      [ok(900), T0],
      [ok(100), T0 + 1],
      [ok(501), T0 + 2], // 2 of 3 slow, but fewer than minimumCalls
      [ok(500), T0 + 3], // exactly the limit is not slow: 2 of 4
    ]);
    expect(at).toBe(3);
    expect(breaker.reason).toBe("slow-call rate 50.0% >= 50% (slower than 500 ms) over 4 calls");
  });

  it("counts slow failures as slow and carries the slow figures in the transition", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    record(breaker, policy, ok(10), T0);
    record(breaker, policy, ok(10), T0);
    record(breaker, policy, failed(1_500), T0);
    const effect = record(breaker, policy, failed(1_999), T0);
    expect(effect.transitions[0]?.window).toEqual({
      calls: 4,
      failures: 2,
      failureRatePercent: 50,
      consecutiveFailures: 2,
      slowCalls: 2,
      slowCallRatePercent: 50,
    });
    expect(effect.transitions[0]?.actor).toBe(SERVER_ACTOR);
  });

  it("never opens on latency while slowCallMs is 0", () => {
    const off = makePolicy({ slowCallMs: 0, slowCallRateThresholdPercent: 1 });
    const breaker = createBreaker(off.dependency, "", off, T0);
    for (let i = 0; i < 20; i++) record(breaker, off, ok(60_000), T0 + i);
    expect(breaker.phase.kind).toBe("closed");
    expect(breaker.window.slowCalls).toBe(0);
  });

  it("works over a time window too", () => {
    const timed = makePolicy({
      windowKind: "time",
      windowDurationMs: 5_000,
      slowCallMs: 500,
      slowCallRateThresholdPercent: 75,
      failureRateThresholdPercent: 100,
    });
    const breaker = createBreaker(timed.dependency, "", timed, T0);
    const at = openedAt(breaker, timed, [
      [ok(10), T0], // leaves the window before the end
      [ok(800), T0 + 5_000],
      [ok(800), T0 + 5_500],
      [ok(800), T0 + 6_000],
      [ok(10), T0 + 6_500], // 3 of 4 slow within 5 s
    ]);
    expect(at).toBe(4);
  });
});

describe("consecutive failures", () => {
  it("opens on the n-th failure in a row once minimumCalls is met", () => {
    const policy = makePolicy({
      consecutiveFailures: 3,
      failureRateThresholdPercent: 100,
      minimumCalls: 4,
    });
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    const at = openedAt(breaker, policy, [
      [ok(), T0],
      [failed(), T0 + 1],
      [failed(), T0 + 2],
      [failed(), T0 + 3],
    ]);
    expect(at).toBe(3);
    expect(breaker.reason).toBe("3 consecutive failures >= 3");
  });
});

describe("back-off signal", () => {
  const policy = makePolicy({ maxRetryAfterOpenMs: 60_000 });

  it("opens on the first 429 with Retry-After, without waiting for minimumCalls", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    const effect = record(breaker, policy, rateLimited(5_000), T0 + 7);
    expect(effect.stateChanged).toBe(true);
    expect(effect.transitions).toEqual([
      expect.objectContaining({
        from: "closed",
        to: "open",
        reason: "back-off signal: http_429 Retry-After 5000 ms",
        openUntilMs: T0 + 7 + 5_000,
        actor: SERVER_ACTOR,
        policyRevision: 4,
      }),
    ]);
    expect(effect.transitions[0]?.window).toMatchObject({ calls: 1, failures: 1 });
    expect(acquire(breaker, policy, T0 + 100, "p").decision).toEqual({
      kind: "reject",
      retryAtMs: T0 + 7 + 5_000,
    });
  });

  it("opens on a 503 with Retry-After too", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    record(breaker, policy, rateLimited(2_000, 503), T0);
    expect(untilMsOf(breaker)).toBe(T0 + 2_000);
  });

  it("caps the open time at maxRetryAfterOpenMs and says so", () => {
    const capped = makePolicy({ maxRetryAfterOpenMs: 30_000 });
    const breaker = createBreaker(capped.dependency, "", capped, T0);
    record(breaker, capped, rateLimited(3_600_000), T0);
    expect(untilMsOf(breaker)).toBe(T0 + 30_000);
    expect(breaker.reason).toBe(
      "back-off signal: http_429 Retry-After 3600000 ms (capped at 30000 ms)",
    );
  });

  it("is ignored without Retry-After, on other statuses, on timeouts and when turned off", () => {
    const off = makePolicy({ maxRetryAfterOpenMs: 0 });
    const cases: [PolicySpec, OutcomeInput][] = [
      [policy, rateLimited(0)],
      [policy, { ...rateLimited(5_000), statusCode: 500, errorType: "http_500" }],
      [policy, { ...rateLimited(5_000), result: "timeout" }],
      [policy, { ...rateLimited(5_000), result: "success" }],
      [off, rateLimited(5_000)],
    ];
    for (const [p, outcome] of cases) {
      const breaker = createBreaker(p.dependency, "", p, T0);
      record(breaker, p, outcome, T0);
      expect(breaker.phase.kind, JSON.stringify(outcome)).toBe("closed");
    }
  });

  it("while OPEN, extends the open time to a later Retry-After time and never shortens it", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    record(breaker, policy, rateLimited(5_000), T0);
    expect(untilMsOf(breaker)).toBe(T0 + 5_000);

    // Earlier, or later by less than the step: nothing changes, nothing is published.
    expect(record(breaker, policy, rateLimited(1_000), T0 + 100).transitions).toEqual([]);
    const small = T0 + 5_000 + BACK_OFF_EXTEND_STEP_MS - 1 - (T0 + 200);
    expect(record(breaker, policy, rateLimited(small), T0 + 200).stateChanged).toBe(false);
    expect(untilMsOf(breaker)).toBe(T0 + 5_000);

    const later = record(breaker, policy, rateLimited(20_000), T0 + 300);
    expect(later.stateChanged).toBe(true);
    expect(later.transitions).toEqual([
      expect.objectContaining({
        from: "open",
        to: "open",
        openUntilMs: T0 + 20_300,
        reason: "back-off signal: http_429 Retry-After 20000 ms extends the open time",
      }),
    ]);
    expect(untilMsOf(breaker)).toBe(T0 + 20_300);
    // Plain failures while OPEN still count for nothing.
    expect(record(breaker, policy, failed(), T0 + 400)).toMatchObject({ stateChanged: false });
  });

  it("in HALF_OPEN, a probe's 429 reopens until its Retry-After time; then probing resumes", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    record(breaker, policy, rateLimited(5_000), T0);
    expect(tick(breaker, T0 + 5_000).transitions[0]?.to).toBe("half-open");
    // A non-probe 429 in HALF_OPEN comes from an attempt admitted earlier: ignored.
    expect(record(breaker, policy, rateLimited(9_000), T0 + 5_001).stateChanged).toBe(false);
    const probe = acquire(breaker, policy, T0 + 5_010, "probe-1");
    expect(probe.decision.kind).toBe("probe");
    const effect = record(
      breaker,
      policy,
      { ...rateLimited(3_000), permitId: "probe-1" },
      T0 + 5_020,
    );
    expect(effect.transitions[0]).toMatchObject({
      from: "half-open",
      to: "open",
      openUntilMs: T0 + 5_020 + 3_000,
      reason: "probe back-off signal: http_429 Retry-After 3000 ms",
    });
    expect(breaker.consecutiveOpens).toBe(2);
    expect(tick(breaker, T0 + 8_019).transitions).toEqual([]);
    expect(tick(breaker, T0 + 8_020).transitions[0]?.to).toBe("half-open");
    expect(acquire(breaker, policy, T0 + 8_021, "probe-2").decision.kind).toBe("probe");
  });

  it("a failed probe without Retry-After reopens with the growing wait, up to the cap", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    for (let i = 0; i < 4; i++) record(breaker, policy, failed(), T0);
    const waits: number[] = [];
    let nowMs = untilMsOf(breaker);
    for (let round = 0; round < 4; round++) {
      tick(breaker, nowMs);
      acquire(breaker, policy, nowMs, `p${round}`);
      record(breaker, policy, { ...failed(), permitId: `p${round}` }, nowMs);
      waits.push(untilMsOf(breaker) - nowMs);
      nowMs = untilMsOf(breaker);
    }
    expect(waits).toEqual([20_000, 40_000, 40_000, 40_000]);
  });
});

describe("forced states", () => {
  const policy = makePolicy();

  it("FORCED_OPEN rejects every attempt with no retry time and ignores outcomes", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    record(breaker, policy, failed(), T0);
    const effect = force(breaker, "forced-open", "alice", "upstream maintenance", T0 + 5);
    expect(effect).toEqual({
      stateChanged: true,
      transitions: [
        expect.objectContaining({
          from: "closed",
          to: "forced-open",
          actor: "alice",
          reason: "forced open: upstream maintenance",
          atMs: T0 + 5,
          openUntilMs: 0,
        }),
      ],
    });
    expect(effect.transitions[0]?.window).toMatchObject({ calls: 1, failures: 1 });
    expect(breaker.forcedBy).toBe("alice");
    expect(acquire(breaker, policy, T0 + 10, "p").decision).toEqual({
      kind: "reject",
      retryAtMs: 0,
    });
    expect(record(breaker, policy, ok(), T0 + 11)).toMatchObject({ stateChanged: false });
    expect(record(breaker, policy, rateLimited(5_000), T0 + 12).transitions).toEqual([]);
    expect(tick(breaker, T0 + 10 * 3_600_000).transitions).toEqual([]);
    expect(breaker.phase.kind).toBe("forced-open");
  });

  it("DISABLED allows every attempt; outcomes fill the window but never open it", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    force(breaker, "disabled", "bob", "known flaky", T0);
    for (let i = 0; i < 20; i++) {
      expect(acquire(breaker, policy, T0 + i, `p${i}`).decision.kind).toBe("allow");
      expect(record(breaker, policy, failed(), T0 + i).transitions).toEqual([]);
    }
    record(breaker, policy, rateLimited(5_000), T0 + 30);
    expect(breaker.phase.kind).toBe("disabled");
    expect(figuresOf(breaker)).toMatchObject({ calls: 10, failures: 10 });
    expect(breaker.reason).toBe("disabled: known flaky");
  });

  it("METRICS_ONLY allows every attempt and notes a trigger in the reason without opening", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    force(breaker, "metrics-only", "carol", "shadow mode", T0);
    for (let i = 0; i < 3; i++) record(breaker, policy, failed(), T0 + i);
    expect(breaker.reason).toBe("metrics only: shadow mode");
    const effect = record(breaker, policy, failed(), T0 + 3);
    expect(effect).toMatchObject({ transitions: [], stateChanged: false, counted: true });
    expect(breaker.reason).toBe("would open: failure rate 100.0% >= 50% over 4 calls");
    record(breaker, policy, rateLimited(5_000), T0 + 4);
    expect(breaker.reason).toBe("would open: back-off signal: http_429 Retry-After 5000 ms");
    expect(breaker.phase.kind).toBe("metrics-only");
    expect(acquire(breaker, policy, T0 + 5, "p").decision.kind).toBe("allow");
  });

  it("RESET closes any state with an empty window and the growing wait started over", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    for (let i = 0; i < 4; i++) record(breaker, policy, failed(), T0);
    tick(breaker, T0 + OPEN_WAIT_MS);
    acquire(breaker, policy, T0 + OPEN_WAIT_MS, "p");
    record(breaker, policy, { ...failed(), permitId: "p" }, T0 + OPEN_WAIT_MS);
    expect(breaker.consecutiveOpens).toBe(2);
    const effect = force(breaker, "reset", "dave", "fixed upstream", T0 + 20_000);
    expect(effect.transitions[0]).toMatchObject({
      from: "open",
      to: "closed",
      actor: "dave",
      reason: "reset: fixed upstream",
    });
    expect(breaker.phase.kind).toBe("closed");
    expect(breaker.consecutiveOpens).toBe(0);
    expect(breaker.forcedBy).toBe("");
    expect(figuresOf(breaker)).toMatchObject({ calls: 0, consecutiveFailures: 0 });
    expect(acquire(breaker, policy, T0 + 20_001, "q").decision.kind).toBe("allow");

    force(breaker, "forced-open", "erin", "hold", T0 + 21_000);
    force(breaker, "reset", "erin", "release", T0 + 22_000);
    expect(breaker.phase.kind).toBe("closed");
  });

  it("drops outstanding probe permits when forced out of HALF_OPEN", () => {
    const breaker = createBreaker(policy.dependency, "", policy, T0);
    for (let i = 0; i < 4; i++) record(breaker, policy, failed(), T0);
    tick(breaker, T0 + OPEN_WAIT_MS);
    acquire(breaker, policy, T0 + OPEN_WAIT_MS, "p");
    force(breaker, "metrics-only", "frank", "watch it", T0 + OPEN_WAIT_MS + 1);
    // The probe's success is an ordinary outcome now and closes nothing.
    const effect = record(breaker, policy, { ...ok(), permitId: "p" }, T0 + OPEN_WAIT_MS + 2);
    expect(effect.transitions).toEqual([]);
    expect(breaker.phase.kind).toBe("metrics-only");
  });
});
