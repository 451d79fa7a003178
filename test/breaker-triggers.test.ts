/**
 * The breaker's triggers through the RPCs: the back-off signal shared by the whole fleet, the
 * slow-call rate, time windows as policies set them, Report batches refused whole, and the
 * per-service breaker cap.
 */
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AcquireDecision } from "../gen/bulwark/v1/breaker_pb.ts";
import { BreakerState, OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  BreakerScope,
  QueueSettingsSchema,
  SlidingWindowKind,
} from "../gen/bulwark/v1/policy_pb.ts";
import { clientsFor, rpcFailure, startTestServer, testPolicy, waitFor } from "./harness.ts";

let server: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.cleanup();
});

describe("back-off signal", () => {
  it("a 429 with Retry-After from one service stops every service until then, then probing resumes", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("rpc.backoff", {
        // minimumCalls far above one call: the signal does not wait for it.
        breaker: { minimumCalls: 10, maxRetryAfterOpenMs: 60_000, openWaitMs: 30_000 },
      }),
    });
    const reportedAtMs = Date.now();
    await breakers.report({
      outcomes: [
        {
          dependency: "rpc.backoff",
          service: "service-a",
          attempt: 1,
          result: OutcomeResult.FAILURE,
          errorType: "http_429",
          statusCode: 429,
          retryAfterMs: 5_000,
        },
      ],
    });
    const answeredAtMs = Date.now();
    const rejected = await breakers.acquire({
      dependency: "rpc.backoff",
      service: "service-b",
      attempt: 1,
    });
    expect(rejected.decision).toBe(AcquireDecision.REJECT);
    expect(rejected.state).toBe(BreakerState.OPEN);
    const retryAtMs = Number(rejected.retryAtUnixMs);
    expect(retryAtMs).toBeGreaterThanOrEqual(reportedAtMs + 5_000);
    expect(retryAtMs).toBeLessThanOrEqual(answeredAtMs + 5_000);

    const status = (await breakers.getBreaker({ dependency: "rpc.backoff" })).breaker!;
    expect(status.reason).toBe("back-off signal: http_429 Retry-After 5000 ms");
    // The server's own timer moves it to HALF_OPEN at the Retry-After time, not the open wait.
    expect(
      await waitFor(async () => {
        const b = (await breakers.getBreaker({ dependency: "rpc.backoff" })).breaker!;
        return b.state === BreakerState.HALF_OPEN;
      }, 10_000),
    ).toBe(true);
    const halfOpenAtMs = Date.now();
    expect(halfOpenAtMs).toBeGreaterThanOrEqual(retryAtMs);
    const probe = await breakers.acquire({
      dependency: "rpc.backoff",
      service: "service-b",
      attempt: 1,
    });
    expect(probe.decision).toBe(AcquireDecision.PROBE);
    await breakers.report({
      outcomes: [
        {
          dependency: "rpc.backoff",
          service: "service-b",
          attempt: 1,
          permitId: probe.permitId,
          result: OutcomeResult.SUCCESS,
        },
      ],
    });
    const closed = (await breakers.getBreaker({ dependency: "rpc.backoff" })).breaker!;
    expect(closed.state).toBe(BreakerState.CLOSED);
    const { transitions } = await breakers.listTransitions({ dependency: "rpc.backoff" });
    expect(transitions.map((t) => [BreakerState[t.to], t.actor])).toEqual([
      ["OPEN", "bulwark"],
      ["HALF_OPEN", "bulwark"],
      ["CLOSED", "bulwark"],
    ]);
    expect(transitions[0]?.openUntilUnixMs).toBe(rejected.retryAtUnixMs);
  }, 20_000);

  it("caps the open time at the policy's max_retry_after_open_ms", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("rpc.backoff-cap", { breaker: { maxRetryAfterOpenMs: 1_000 } }),
    });
    const before = Date.now();
    await breakers.report({
      outcomes: [
        {
          dependency: "rpc.backoff-cap",
          service: "a",
          attempt: 1,
          result: OutcomeResult.FAILURE,
          statusCode: 503,
          retryAfterMs: 3_600_000,
        },
      ],
    });
    const answer = await breakers.acquire({
      dependency: "rpc.backoff-cap",
      service: "b",
      attempt: 1,
    });
    expect(answer.decision).toBe(AcquireDecision.REJECT);
    const retryAtMs = Number(answer.retryAtUnixMs);
    expect(retryAtMs - before).toBeGreaterThanOrEqual(1_000);
    expect(retryAtMs - before).toBeLessThan(3_000);
  });
});

describe("slow-call rate and time windows", () => {
  it("opens on the slow-call rate and serves the slow figures", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("rpc.slow", {
        breaker: {
          minimumCalls: 4,
          failureRateThresholdPercent: 100,
          slowCallMs: 300,
          slowCallRateThresholdPercent: 50,
        },
      }),
    });
    const call = (latencyMs: number) => ({
      dependency: "rpc.slow",
      service: "svc",
      attempt: 1,
      result: OutcomeResult.SUCCESS,
      latencyMs,
    });
    await breakers.report({ outcomes: [call(900), call(20), call(20)] });
    const closed = (await breakers.getBreaker({ dependency: "rpc.slow" })).breaker!;
    expect(closed.window).toMatchObject({ calls: 3, slowCalls: 1 });
    expect(closed.window?.slowCallRatePercent).toBeCloseTo(100 / 3, 5);
    await breakers.report({ outcomes: [call(301)] });
    const open = (await breakers.getBreaker({ dependency: "rpc.slow" })).breaker!;
    expect(open.state).toBe(BreakerState.OPEN);
    const [t] = (await breakers.listTransitions({ dependency: "rpc.slow" })).transitions;
    expect(t?.reason).toBe("slow-call rate 50.0% >= 50% (slower than 300 ms) over 4 calls");
    expect(t?.window).toMatchObject({ calls: 4, slowCalls: 2, slowCallRatePercent: 50 });
  });

  it("serves every setting filled in, and an identical Put makes no new revision", async () => {
    const { policies } = clientsFor(server.url);
    const policy = testPolicy("rpc.timed", {
      breaker: { windowKind: SlidingWindowKind.TIME, windowDurationMs: 30_000, minimumCalls: 500 },
    });
    policy.queue = create(QueueSettingsSchema, { maxDeliveries: 7 });
    const first = (await policies.putPolicy({ policy })).policy!;
    expect(first.breaker).toMatchObject({
      windowKind: SlidingWindowKind.TIME,
      windowDurationMs: 30_000,
      minimumCalls: 500,
      slowCallMs: 0,
      slowCallRateThresholdPercent: 100,
      maxRetryAfterOpenMs: 60_000,
    });
    expect(first.queue).toMatchObject({
      maxDeliveries: 7,
      workerInitialBackoffMs: 1_000,
      workerMaxBackoffMs: 60_000,
      maxAgeMs: 604_800_000n,
      maxJobs: 100_000,
      maxPayloadBytes: 65_536,
      ackWaitMs: 30_000,
    });
    const again = (await policies.putPolicy({ policy })).policy!;
    expect(again.revision).toBe(first.revision);
    // What Get serves can be put back as it is, and is the same policy.
    const got = (await policies.getPolicy({ dependency: "rpc.timed" })).policy!;
    const back = (await policies.putPolicy({ policy: got, expectedRevision: got.revision }))
      .policy!;
    expect(back.revision).toBe(first.revision);

    const refused = await rpcFailure(
      policies.putPolicy({
        policy: testPolicy("rpc.timed", { breaker: { slowCallMs: 5_000 } }),
      }),
    );
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.message).toMatch(/^policy\.breaker\.slow_call_ms:/);
  });
});

describe("Report hardening", () => {
  it("refuses an oversized batch or one invalid outcome whole, leaving the window as it was", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("rpc.harden", { breaker: { minimumCalls: 4 } }),
    });
    const good = {
      dependency: "rpc.harden",
      service: "svc",
      attempt: 1,
      result: OutcomeResult.FAILURE,
      latencyMs: 12,
    };
    await breakers.report({ outcomes: [good, { ...good, result: OutcomeResult.SUCCESS }] });
    const before = (await breakers.getBreaker({ dependency: "rpc.harden" })).breaker!;
    expect(before.window).toMatchObject({ calls: 2, failures: 1 });

    // Each batch would open the breaker if any of it were counted.
    const backOff = { ...good, statusCode: 429, retryAfterMs: 5_000 };
    const batches: [object[], RegExp][] = [
      [Array(1_001).fill(good), /^outcomes: must hold 1 to 1000 outcomes; got 1001/],
      [[good, good, backOff, { ...good, latencyMs: -1 }], /^outcomes\[3\]\.latency_ms:/],
      [[backOff, { ...good, statusCode: 1_000 }], /^outcomes\[1\]\.status_code:/],
      [[good, good, { ...good, retryAfterMs: 86_400_001 }], /^outcomes\[2\]\.retry_after_ms:/],
      [[good, good, good, { ...good, result: 99 }], /^outcomes\[3\]\.result:/],
      [[good, { ...good, service: "" }], /^outcomes\[1\]\.service:/],
      [[good, { ...good, errorType: "e".repeat(129) }], /^outcomes\[1\]\.error_type:/],
    ];
    for (const [outcomes, message] of batches) {
      const answer = await rpcFailure(breakers.report({ outcomes }));
      expect(answer.code).toBe(Code.InvalidArgument);
      expect(answer.message).toMatch(message);
    }
    const after = (await breakers.getBreaker({ dependency: "rpc.harden" })).breaker!;
    expect(after.state).toBe(BreakerState.CLOSED);
    expect(after.window).toEqual(before.window);
    expect((await breakers.listTransitions({ dependency: "rpc.harden" })).transitions).toEqual([]);
  });
});

describe("per-service breaker cap", () => {
  it("counts the outcomes of known services in a batch that names one service too many", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("rpc.cap", {
        breaker: { scope: BreakerScope.SERVICE, windowSize: 100, minimumCalls: 100 },
      }),
    });
    const success = (service: string) => ({
      dependency: "rpc.cap",
      service,
      attempt: 1,
      result: OutcomeResult.SUCCESS,
    });
    const fill = await breakers.report({
      outcomes: Array.from({ length: 1_000 }, (_, i) => success(`svc-${i}`)),
    });
    expect(fill.counted).toBe(1_000);
    // The 1 001st service gets no breaker; the known one in the same batch still counts.
    const mixed = await breakers.report({ outcomes: [success("svc-new"), success("svc-7")] });
    expect(mixed.counted).toBe(1);
    const known = (await breakers.getBreaker({ dependency: "rpc.cap", service: "svc-7" })).breaker;
    expect(known?.window?.calls).toBe(2);
  });
});
