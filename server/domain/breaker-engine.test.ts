import { describe, expect, it } from "vitest";
import {
  acquire,
  applyPolicy,
  type Breaker,
  createBreaker,
  type OutcomeInput,
  openWaitMs,
  PERMIT_GRACE_MS,
  permitsInFlight,
  record,
  type Transition,
  tick,
} from "./breaker-engine.ts";
import { type BreakerSpec, defaultQueueSpec, type PolicySpec } from "./policy.ts";

const T0 = 1_700_000_000_000;
const TIMEOUT_MS = 1_000;
const OPEN_WAIT_MS = 10_000;

/** A complete policy; the breaker settings are small so that each rule takes a few outcomes. */
function makePolicy(breaker: Partial<BreakerSpec> = {}, revision = 1): PolicySpec {
  return {
    dependency: "payments.api",
    revision,
    latencyObjectiveMs: 2_000,
    availabilityTargetPercent: 99.5,
    timeoutMs: TIMEOUT_MS,
    deadlineMs: 5_000,
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
      maxOpenWaitMs: 35_000,
      halfOpenPermits: 1,
      scope: "dependency",
      ...breaker,
    },
    queue: defaultQueueSpec(),
    updatedAtMs: 0,
    updatedBy: "test",
  };
}

const SUCCESS: OutcomeInput = { result: "success", permitId: "", errorType: "" };
const FAILURE: OutcomeInput = { result: "failure", permitId: "", errorType: "http_503" };
const TIMEOUT: OutcomeInput = { result: "timeout", permitId: "", errorType: "timeout" };
const NOT_COUNTED: OutcomeInput = { result: "not-counted", permitId: "", errorType: "" };

function probeOutcome(permitId: string, result: OutcomeInput["result"], errorType = "") {
  return { result, permitId, errorType };
}

/**
 * Records outcomes written as 'S' (success), 'F' (failure), 'T' (timeout) and 'N' (not counted),
 * one millisecond apart, and returns the transitions of each outcome.
 */
function feed(
  breaker: Breaker,
  policy: PolicySpec,
  outcomes: string,
  startMs = T0,
): Transition[][] {
  const byCode: Record<string, OutcomeInput> = {
    S: SUCCESS,
    F: FAILURE,
    T: TIMEOUT,
    N: NOT_COUNTED,
  };
  return [...outcomes].map(
    (ch, i) => record(breaker, policy, byCode[ch]!, startMs + i).transitions,
  );
}

/** A breaker opened at `atMs` by a run of failures. */
function openedBreaker(policy: PolicySpec, atMs = T0): Breaker {
  const breaker = createBreaker(policy.dependency, "", policy, atMs);
  for (let i = 0; i < policy.breaker.minimumCalls; i++) record(breaker, policy, FAILURE, atMs);
  expect(breaker.phase.kind).toBe("open");
  return breaker;
}

/** A breaker in HALF_OPEN since `atMs`. */
function halfOpenBreaker(policy: PolicySpec, atMs = T0 + OPEN_WAIT_MS): Breaker {
  const breaker = openedBreaker(policy, atMs - OPEN_WAIT_MS);
  tick(breaker, atMs);
  expect(breaker.phase.kind).toBe("half-open");
  return breaker;
}

function grantProbe(breaker: Breaker, policy: PolicySpec, nowMs: number, permitId: string) {
  const result = acquire(breaker, policy, nowMs, permitId);
  expect(result.decision).toEqual({
    kind: "probe",
    permitId,
    expiresAtMs: nowMs + policy.timeoutMs + PERMIT_GRACE_MS,
  });
  return result;
}

function untilMsOf(breaker: Breaker): number {
  if (breaker.phase.kind !== "open") throw new Error(`breaker is ${breaker.phase.kind}`);
  return breaker.phase.untilMs;
}

describe("createBreaker", () => {
  it("starts CLOSED with an empty window of the policy's size", () => {
    const policy = makePolicy({ windowSize: 7 }, 3);
    const breaker = createBreaker("payments.api", "checkout", policy, T0);
    expect(breaker.phase).toEqual({ kind: "closed" });
    expect(breaker.window.size).toBe(7);
    expect(breaker.window.calls).toBe(0);
    expect(breaker.service).toBe("checkout");
    expect(breaker.policyRevision).toBe(3);
    expect(breaker.changedAtMs).toBe(T0);
    expect(breaker.consecutiveOpens).toBe(0);
  });

  it("lets every attempt through while CLOSED", () => {
    const policy = makePolicy();
    const breaker = createBreaker("payments.api", "", policy, T0);
    expect(acquire(breaker, policy, T0, "unused")).toEqual({
      decision: { kind: "allow" },
      transitions: [],
      stateChanged: false,
    });
  });
});

describe("CLOSED: failure-rate trigger", () => {
  it("does not open before the window holds minimumCalls, even at 100% failures", () => {
    const policy = makePolicy({ minimumCalls: 5 });
    const breaker = createBreaker("payments.api", "", policy, T0);
    const transitions = feed(breaker, policy, "FFFF");
    expect(transitions.flat()).toEqual([]);
    expect(breaker.phase.kind).toBe("closed");
    expect(breaker.window.failureRatePercent).toBe(100);

    expect(feed(breaker, policy, "F")[0]).toHaveLength(1);
    expect(breaker.phase.kind).toBe("open");
  });

  it("opens exactly at the outcome that brings the rate to the threshold", () => {
    const policy = makePolicy({ minimumCalls: 4, failureRateThresholdPercent: 50 });
    const breaker = createBreaker("payments.api", "", policy, T0);
    // 25 %, 40 %: closed; the sixth outcome makes it 3 of 6 = 50 %.
    const transitions = feed(breaker, policy, "SSSFF");
    expect(transitions.flat()).toEqual([]);
    expect(breaker.window.failureRatePercent).toBe(40);

    const effect = record(breaker, policy, FAILURE, T0 + 100);
    expect(effect.stateChanged).toBe(true);
    expect(effect.transitions).toHaveLength(1);
    expect(breaker.phase).toEqual({ kind: "open", untilMs: T0 + 100 + OPEN_WAIT_MS });
  });

  it("describes the opening with its reason and the window figures that caused it", () => {
    const policy = makePolicy({ minimumCalls: 4 }, 7);
    const breaker = createBreaker("payments.api", "checkout", policy, T0);
    feed(breaker, policy, "SSSFF");
    const effect = record(breaker, policy, FAILURE, T0 + 500);

    expect(effect.transitions).toEqual([
      {
        dependency: "payments.api",
        service: "checkout",
        from: "closed",
        to: "open",
        atMs: T0 + 500,
        reason: "failure rate 50.0% >= 50% over 6 calls",
        window: { calls: 6, failures: 3, failureRatePercent: 50, consecutiveFailures: 3 },
        policyRevision: 7,
        openUntilMs: T0 + 500 + OPEN_WAIT_MS,
      },
    ]);
    expect(breaker.reason).toBe("failure rate 50.0% >= 50% over 6 calls");
    expect(breaker.changedAtMs).toBe(T0 + 500);
    expect(breaker.consecutiveOpens).toBe(1);
    // The window starts afresh; the figures stay in the transition.
    expect(breaker.window.calls).toBe(0);
    expect(breaker.consecutiveFailures).toBe(0);
  });

  it("counts timeouts as failures", () => {
    const policy = makePolicy({ minimumCalls: 4 });
    const breaker = createBreaker("payments.api", "", policy, T0);
    const transitions = feed(breaker, policy, "SSTT");
    expect(transitions[3]?.[0]?.window).toEqual({
      calls: 4,
      failures: 2,
      failureRatePercent: 50,
      consecutiveFailures: 2,
    });
    expect(breaker.phase.kind).toBe("open");
  });

  it("evicts old failures from the window as new outcomes arrive", () => {
    const policy = makePolicy({
      windowSize: 4,
      minimumCalls: 4,
      failureRateThresholdPercent: 75,
    });
    const breaker = createBreaker("payments.api", "", policy, T0);
    feed(breaker, policy, "FFSS");
    expect([breaker.window.calls, breaker.window.failures]).toEqual([4, 2]);

    // Two successes push both failures out.
    feed(breaker, policy, "SS");
    expect([breaker.window.calls, breaker.window.failures]).toEqual([4, 0]);

    // Without eviction, 4 failures of 8 outcomes would never reach 75 %.
    const transitions = feed(breaker, policy, "FFF");
    expect(transitions[0]).toEqual([]);
    expect(transitions[1]).toEqual([]);
    expect(transitions[2]?.[0]?.window).toEqual({
      calls: 4,
      failures: 3,
      failureRatePercent: 75,
      consecutiveFailures: 3,
    });
  });

  it("never changes the window or the failure run for not-counted outcomes", () => {
    const policy = makePolicy({ minimumCalls: 4 });
    const breaker = createBreaker("payments.api", "", policy, T0);
    feed(breaker, policy, "SF");
    const before = breaker.window.serialize();

    const effect = record(breaker, policy, NOT_COUNTED, T0 + 10);
    expect(effect).toEqual({ transitions: [], stateChanged: false });
    expect(breaker.window.serialize()).toBe(before);
    expect(breaker.consecutiveFailures).toBe(1);

    // A not-counted outcome between two failures does not break the run.
    feed(breaker, policy, "NNF");
    expect(breaker.consecutiveFailures).toBe(2);
    expect(breaker.window.serialize()).toBe("011");
  });
});

describe("CLOSED: consecutive-failure trigger", () => {
  const policy = makePolicy({
    minimumCalls: 1,
    failureRateThresholdPercent: 100,
    consecutiveFailures: 3,
  });

  it("opens at the configured number of failures in a row", () => {
    const breaker = createBreaker("payments.api", "", policy, T0);
    const transitions = feed(breaker, policy, "SSFFF");
    expect(transitions.slice(0, 4).flat()).toEqual([]);
    expect(transitions[4]).toHaveLength(1);
    expect(transitions[4]?.[0]?.reason).toBe("3 consecutive failures >= 3");
    expect(transitions[4]?.[0]?.window).toEqual({
      calls: 5,
      failures: 3,
      failureRatePercent: 60,
      consecutiveFailures: 3,
    });
  });

  it("restarts the run after a success", () => {
    const breaker = createBreaker("payments.api", "", policy, T0);
    feed(breaker, policy, "SFFSFF");
    expect(breaker.phase.kind).toBe("closed");
    expect(breaker.consecutiveFailures).toBe(2);
  });

  it("waits for minimumCalls too", () => {
    const gated = makePolicy({
      minimumCalls: 4,
      failureRateThresholdPercent: 100,
      consecutiveFailures: 2,
    });
    const breaker = createBreaker("payments.api", "", gated, T0);
    const transitions = feed(breaker, gated, "SFF");
    expect(transitions.flat()).toEqual([]);
    expect(breaker.consecutiveFailures).toBe(2);

    const [last] = feed(breaker, gated, "F");
    expect(last?.[0]?.reason).toBe("3 consecutive failures >= 2");
  });

  it("is off when set to 0", () => {
    const off = makePolicy({
      windowSize: 100,
      minimumCalls: 1,
      failureRateThresholdPercent: 100,
      consecutiveFailures: 0,
    });
    const breaker = createBreaker("payments.api", "", off, T0);
    feed(breaker, off, `S${"F".repeat(50)}`);
    expect(breaker.phase.kind).toBe("closed");
    expect(breaker.consecutiveFailures).toBe(50);
  });
});

describe("OPEN", () => {
  it("rejects attempts with the end of the wait as retryAtMs", () => {
    const policy = makePolicy();
    const breaker = openedBreaker(policy);
    const untilMs = untilMsOf(breaker);
    expect(untilMs).toBe(T0 + OPEN_WAIT_MS);

    for (const nowMs of [T0, T0 + 1, untilMs - 1]) {
      expect(acquire(breaker, policy, nowMs, "p")).toEqual({
        decision: { kind: "reject", retryAtMs: untilMs },
        transitions: [],
        stateChanged: false,
      });
    }
    expect(breaker.phase.kind).toBe("open");
  });

  it("does not count outcomes of attempts admitted before it opened", () => {
    const policy = makePolicy();
    const breaker = openedBreaker(policy);
    for (const outcome of [SUCCESS, FAILURE, TIMEOUT]) {
      expect(record(breaker, policy, outcome, T0 + 5)).toEqual({
        transitions: [],
        stateChanged: false,
      });
    }
    expect(breaker.window.calls).toBe(0);
    expect(breaker.consecutiveFailures).toBe(0);
    expect(breaker.phase.kind).toBe("open");
  });

  it("tick() moves to HALF_OPEN once the wait is over, not 1 ms before", () => {
    const policy = makePolicy();
    const breaker = openedBreaker(policy);
    const untilMs = untilMsOf(breaker);

    expect(tick(breaker, untilMs - 1)).toEqual({ transitions: [], stateChanged: false });
    expect(breaker.phase.kind).toBe("open");

    const effect = tick(breaker, untilMs);
    expect(effect.stateChanged).toBe(true);
    expect(effect.transitions).toEqual([
      {
        dependency: "payments.api",
        service: "",
        from: "open",
        to: "half-open",
        atMs: untilMs,
        reason: `open wait of ${OPEN_WAIT_MS} ms elapsed`,
        window: { calls: 0, failures: 0, failureRatePercent: 0, consecutiveFailures: 0 },
        policyRevision: 1,
        openUntilMs: 0,
      },
    ]);
    expect(breaker.phase.kind).toBe("half-open");
    expect(breaker.changedAtMs).toBe(untilMs);

    // A second tick changes nothing.
    expect(tick(breaker, untilMs + 1)).toEqual({ transitions: [], stateChanged: false });
  });

  it("tick() leaves CLOSED and HALF_OPEN breakers alone", () => {
    const policy = makePolicy();
    const closed = createBreaker("payments.api", "", policy, T0);
    expect(tick(closed, T0 + 10 ** 9)).toEqual({ transitions: [], stateChanged: false });
    const halfOpen = halfOpenBreaker(policy);
    expect(tick(halfOpen, T0 + 10 ** 9)).toEqual({ transitions: [], stateChanged: false });
  });

  it("acquire() after the wait moves to HALF_OPEN and grants a probe", () => {
    const policy = makePolicy();
    const breaker = openedBreaker(policy);
    const nowMs = untilMsOf(breaker) + 250;

    const result = acquire(breaker, policy, nowMs, "probe-1");
    expect(result.decision).toEqual({
      kind: "probe",
      permitId: "probe-1",
      expiresAtMs: nowMs + TIMEOUT_MS + PERMIT_GRACE_MS,
    });
    expect(result.stateChanged).toBe(true);
    expect(result.transitions).toHaveLength(1);
    expect(result.transitions[0]).toMatchObject({
      from: "open",
      to: "half-open",
      atMs: nowMs,
      reason: `open wait of ${OPEN_WAIT_MS + 250} ms elapsed`,
    });
    expect(permitsInFlight(breaker, nowMs)).toBe(1);
  });
});

describe("HALF_OPEN", () => {
  it("grants exactly halfOpenPermits probes and rejects the rest with retryAtMs 0", () => {
    const policy = makePolicy({ halfOpenPermits: 3 });
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS + 1;

    for (const id of ["p1", "p2", "p3"]) {
      const granted = grantProbe(breaker, policy, nowMs, id);
      expect(granted.transitions).toEqual([]);
      expect(granted.stateChanged).toBe(true);
    }
    expect(permitsInFlight(breaker, nowMs)).toBe(3);
    expect(acquire(breaker, policy, nowMs, "p4")).toEqual({
      decision: { kind: "reject", retryAtMs: 0 },
      transitions: [],
      stateChanged: false,
    });
    expect(permitsInFlight(breaker, nowMs)).toBe(3);
  });

  it("counts a probe that already succeeded towards the permits granted", () => {
    const policy = makePolicy({ halfOpenPermits: 2 });
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS + 1;
    grantProbe(breaker, policy, nowMs, "p1");
    record(breaker, policy, probeOutcome("p1", "success"), nowMs + 5);
    grantProbe(breaker, policy, nowMs + 6, "p2");
    expect(acquire(breaker, policy, nowMs + 7, "p3").decision).toEqual({
      kind: "reject",
      retryAtMs: 0,
    });
  });

  it("closes when every permitted probe succeeds, clearing the window and the open count", () => {
    const policy = makePolicy({ halfOpenPermits: 2 });
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS + 1;
    grantProbe(breaker, policy, nowMs, "p1");
    grantProbe(breaker, policy, nowMs, "p2");

    const first = record(breaker, policy, probeOutcome("p1", "success"), nowMs + 10);
    expect(first).toEqual({ transitions: [], stateChanged: true, counted: true });
    expect(breaker.phase.kind).toBe("half-open");

    const second = record(breaker, policy, probeOutcome("p2", "success"), nowMs + 20);
    expect(second.stateChanged).toBe(true);
    expect(second.transitions).toEqual([
      {
        dependency: "payments.api",
        service: "",
        from: "half-open",
        to: "closed",
        atMs: nowMs + 20,
        reason: "2 of 2 probes succeeded",
        window: { calls: 0, failures: 0, failureRatePercent: 0, consecutiveFailures: 0 },
        policyRevision: 1,
        openUntilMs: 0,
      },
    ]);
    expect(breaker.phase).toEqual({ kind: "closed" });
    expect(breaker.window.calls).toBe(0);
    expect(breaker.consecutiveOpens).toBe(0);
    expect(acquire(breaker, policy, nowMs + 21, "x").decision).toEqual({ kind: "allow" });
  });

  it("reopens on one failed probe, with the wait multiplied", () => {
    const policy = makePolicy({ halfOpenPermits: 2 });
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS + 1;
    grantProbe(breaker, policy, nowMs, "p1");
    grantProbe(breaker, policy, nowMs, "p2");
    record(breaker, policy, probeOutcome("p1", "success"), nowMs + 10);

    const effect = record(breaker, policy, probeOutcome("p2", "failure", "http_503"), nowMs + 20);
    expect(effect.stateChanged).toBe(true);
    expect(effect.transitions).toHaveLength(1);
    expect(effect.transitions[0]).toMatchObject({
      from: "half-open",
      to: "open",
      atMs: nowMs + 20,
      reason: "probe failed (http_503)",
      openUntilMs: nowMs + 20 + 2 * OPEN_WAIT_MS,
    });
    expect(breaker.consecutiveOpens).toBe(2);
    expect(untilMsOf(breaker)).toBe(nowMs + 20 + 2 * OPEN_WAIT_MS);
  });

  it("names the result in the reason when the probe has no error type", () => {
    const policy = makePolicy();
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS;
    grantProbe(breaker, policy, nowMs, "p1");
    const effect = record(breaker, policy, probeOutcome("p1", "timeout"), nowMs + 1);
    expect(effect.transitions[0]?.reason).toBe("probe failed (timeout)");
  });

  it("grows the wait by open_wait_multiplier on each failed probe, up to max_open_wait_ms", () => {
    // 10 s, then 20 s, then 40 s capped at 35 s, and 35 s from then on.
    const policy = makePolicy();
    const breaker = openedBreaker(policy);
    const waits = [untilMsOf(breaker) - breaker.changedAtMs];
    for (let i = 0; i < 3; i++) {
      const nowMs = untilMsOf(breaker);
      grantProbe(breaker, policy, nowMs, `p${i}`);
      record(breaker, policy, probeOutcome(`p${i}`, "failure", "http_500"), nowMs + 1);
      waits.push(untilMsOf(breaker) - (nowMs + 1));
    }
    expect(waits).toEqual([10_000, 20_000, 35_000, 35_000]);
    expect(breaker.consecutiveOpens).toBe(4);
  });

  it("starts again from the first wait after the breaker closed", () => {
    const policy = makePolicy();
    const breaker = openedBreaker(policy);
    let nowMs = untilMsOf(breaker);
    grantProbe(breaker, policy, nowMs, "p1");
    record(breaker, policy, probeOutcome("p1", "failure"), nowMs);
    nowMs = untilMsOf(breaker);
    grantProbe(breaker, policy, nowMs, "p2");
    record(breaker, policy, probeOutcome("p2", "success"), nowMs);
    expect(breaker.phase.kind).toBe("closed");

    feed(breaker, policy, "FFFF", nowMs + 1);
    expect(breaker.consecutiveOpens).toBe(1);
    expect(untilMsOf(breaker) - breaker.changedAtMs).toBe(OPEN_WAIT_MS);
  });

  it("does not count outcomes without a permit, with an unknown permit, or a second time", () => {
    const policy = makePolicy({ halfOpenPermits: 2 });
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS;
    grantProbe(breaker, policy, nowMs, "p1");

    const none = { transitions: [], stateChanged: false };
    expect(record(breaker, policy, FAILURE, nowMs + 1)).toEqual(none);
    expect(record(breaker, policy, SUCCESS, nowMs + 1)).toEqual(none);
    expect(record(breaker, policy, probeOutcome("other", "failure"), nowMs + 1)).toEqual(none);
    expect(breaker.phase.kind).toBe("half-open");
    expect(breaker.window.calls).toBe(0);

    record(breaker, policy, probeOutcome("p1", "success"), nowMs + 2);
    // The same permit reported again (a duplicate batch) must not count as the second probe.
    expect(record(breaker, policy, probeOutcome("p1", "success"), nowMs + 3)).toEqual(none);
    expect(breaker.phase.kind).toBe("half-open");
  });

  it("does not let a not-counted probe outcome close or reopen the breaker", () => {
    const policy = makePolicy();
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS;
    grantProbe(breaker, policy, nowMs, "p1");
    const effect = record(breaker, policy, probeOutcome("p1", "not-counted"), nowMs + 1);
    expect(effect.transitions).toEqual([]);
    expect(breaker.phase.kind).toBe("half-open");
    expect(breaker.window.calls).toBe(0);
  });

  // DESIGN §4: "A permit is returned by its outcome, or expires after the policy timeout". A probe
  // that ends cancelled or with a caller error (reported as not-counted) has returned its permit,
  // so the next attempt may probe at once rather than after timeout + grace.
  it("takes a permit back when its probe's outcome is not counted", () => {
    const policy = makePolicy();
    const breaker = halfOpenBreaker(policy);
    const nowMs = T0 + OPEN_WAIT_MS;
    grantProbe(breaker, policy, nowMs, "p1");
    record(breaker, policy, probeOutcome("p1", "not-counted"), nowMs + 1);

    expect(permitsInFlight(breaker, nowMs + 2)).toBe(0);
    expect(acquire(breaker, policy, nowMs + 2, "p2").decision).toMatchObject({ kind: "probe" });
  });

  it("lets a permit lapse timeoutMs + PERMIT_GRACE_MS after it was granted", () => {
    const policy = makePolicy();
    const breaker = halfOpenBreaker(policy);
    const grantedAtMs = T0 + OPEN_WAIT_MS + 3;
    const { decision } = grantProbe(breaker, policy, grantedAtMs, "lost");
    const expiresAtMs = grantedAtMs + TIMEOUT_MS + PERMIT_GRACE_MS;
    expect(decision).toMatchObject({ expiresAtMs });

    expect(permitsInFlight(breaker, expiresAtMs - 1)).toBe(1);
    expect(acquire(breaker, policy, expiresAtMs - 1, "early").decision).toEqual({
      kind: "reject",
      retryAtMs: 0,
    });

    expect(permitsInFlight(breaker, expiresAtMs)).toBe(0);
    grantProbe(breaker, policy, expiresAtMs, "next");
    expect(permitsInFlight(breaker, expiresAtMs)).toBe(1);

    // The new probe decides the outcome.
    const effect = record(breaker, policy, probeOutcome("next", "success"), expiresAtMs + 10);
    expect(effect.transitions[0]?.to).toBe("closed");
  });
});

describe("applyPolicy", () => {
  it("resizes the window keeping the newest outcomes and takes the new revision", () => {
    const policy = makePolicy({ windowSize: 8, minimumCalls: 8 });
    const breaker = createBreaker("payments.api", "", policy, T0);
    feed(breaker, policy, "FFFSSS");

    const smaller = makePolicy({ windowSize: 4, minimumCalls: 4 }, 2);
    applyPolicy(breaker, smaller);
    expect(breaker.window.size).toBe(4);
    expect(breaker.window.serialize()).toBe("1000");
    expect(breaker.policyRevision).toBe(2);
    expect(breaker.phase.kind).toBe("closed");

    const larger = makePolicy({ windowSize: 20, minimumCalls: 4 }, 3);
    applyPolicy(breaker, larger);
    expect(breaker.window.size).toBe(20);
    expect(breaker.window.serialize()).toBe("1000");
    expect(breaker.policyRevision).toBe(3);
  });

  it("names the new revision in later transitions", () => {
    const policy = makePolicy();
    const breaker = createBreaker("payments.api", "", policy, T0);
    applyPolicy(breaker, makePolicy({}, 9));
    const transitions = feed(breaker, policy, "FFFF").flat();
    expect(transitions[0]?.policyRevision).toBe(9);
  });
});

describe("openWaitMs", () => {
  it("uses the base wait for the first open (and for 0 opens)", () => {
    const policy = makePolicy();
    expect(openWaitMs(policy, 0)).toBe(OPEN_WAIT_MS);
    expect(openWaitMs(policy, 1)).toBe(OPEN_WAIT_MS);
  });

  it("multiplies the wait for each further open up to the cap", () => {
    const policy = makePolicy({ openWaitMs: 1_000, openWaitMultiplier: 3, maxOpenWaitMs: 20_000 });
    expect([1, 2, 3, 4, 5].map((n) => openWaitMs(policy, n))).toEqual([
      1_000, 3_000, 9_000, 20_000, 20_000,
    ]);
  });

  it("rounds fractional waits to whole milliseconds", () => {
    const policy = makePolicy({ openWaitMs: 1_001, openWaitMultiplier: 1.5 });
    expect(openWaitMs(policy, 2)).toBe(1_502);
  });

  it("stays at the base wait with a multiplier of 1", () => {
    const policy = makePolicy({ openWaitMultiplier: 1 });
    expect(openWaitMs(policy, 10)).toBe(OPEN_WAIT_MS);
  });
});

describe("edge cases", () => {
  it("opens on the success that brings the window to minimumCalls over the threshold", () => {
    const policy = makePolicy({ windowSize: 10, minimumCalls: 5, failureRateThresholdPercent: 50 });
    const breaker = createBreaker("payments.api", "", policy, T0);
    feed(breaker, policy, "FFFF");
    expect(breaker.phase.kind).toBe("closed");
    const effect = record(breaker, policy, SUCCESS, T0 + 1);
    expect(effect.transitions[0]).toMatchObject({ to: "open" });
    expect(effect.transitions[0]?.window).toMatchObject({ calls: 5, failures: 4 });
  });

  it("ignores the late outcome of a lapsed permit", () => {
    const policy = makePolicy();
    const breaker = halfOpenBreaker(policy);
    const grantedAtMs = T0 + OPEN_WAIT_MS;
    grantProbe(breaker, policy, grantedAtMs, "lost");
    const lapsedAtMs = grantedAtMs + TIMEOUT_MS + PERMIT_GRACE_MS;
    grantProbe(breaker, policy, lapsedAtMs, "replacement");
    const late = record(breaker, policy, probeOutcome("lost", "success"), lapsedAtMs + 5);
    expect(late).toEqual({ transitions: [], stateChanged: false });
    expect(breaker.phase.kind).toBe("half-open");
    expect(permitsInFlight(breaker, lapsedAtMs + 5)).toBe(1);
  });
});
