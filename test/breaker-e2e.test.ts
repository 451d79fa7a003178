import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import OpenAI, { BadRequestError } from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  type FlakyOpenAI,
  startFlakyOpenAI,
} from "../examples/flaky-openai/flaky-openai-server.ts";
import { type FaultMode, parsePhase } from "../examples/flaky-openai/scenario.ts";
import { BreakerState } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  type Bulwark,
  type BulwarkEvent,
  createBulwark,
  isCircuitOpenError,
  isDeadlineExceededError,
} from "../sdk/index.ts";
import { clientsFor, startTestServer, testPolicy, waitFor } from "./harness.ts";

let server: Awaited<ReturnType<typeof startTestServer>>;
let upstream: FlakyOpenAI;
const sdks: Bulwark[] = [];

function phase(mode: FaultMode, extra: Record<string, unknown> = {}) {
  return parsePhase({ name: mode, durationMs: 600_000, mode, latencyMs: 1, ...extra });
}

function sdk(service = "checkout"): Bulwark {
  const b = createBulwark({ url: server.url, service });
  sdks.push(b);
  return b;
}

function openaiFor(b: Bulwark, dependency: string, fallback = false): OpenAI {
  return new OpenAI({
    baseURL: upstream.baseUrl,
    apiKey: "test",
    maxRetries: 0,
    fetch: b.fetch(
      dependency,
      fallback
        ? {
            fallback: () =>
              Response.json({ choices: [{ message: { content: "degraded" } }] }, { status: 200 }),
          }
        : {},
    ),
  });
}

const ask = (client: OpenAI) =>
  client.chat.completions.create({
    model: "gpt-test",
    messages: [{ role: "user", content: "hello" }],
  });

beforeAll(async () => {
  server = await startTestServer();
  upstream = await startFlakyOpenAI({
    scenario: { name: "manual", phases: [phase("healthy")] },
  });
});

afterEach(async () => {
  upstream.override(undefined);
  await Promise.all(sdks.splice(0).map((b) => b.close()));
});

afterAll(async () => {
  await upstream.close();
  await server.cleanup();
});

describe("breaker end to end", () => {
  it("opens after the failure threshold and then rejects without calling the upstream", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.open", {
        breaker: { windowSize: 10, minimumCalls: 4, failureRateThresholdPercent: 50 },
      }),
    });
    const b = sdk();
    const client = openaiFor(b, "e2e.open");
    upstream.override(phase("errors", { statuses: [503] }));
    const before = upstream.arrivals().length;
    // Four failures meet minimumCalls at a 100 % failure rate: the fourth opens the breaker.
    for (let i = 0; i < 4; i++) await expect(ask(client)).rejects.toMatchObject({ status: 503 });
    expect(upstream.arrivals().length - before).toBe(4);
    await b.flush();
    const state = await breakers.getBreaker({ dependency: "e2e.open" });
    expect(state.breaker?.state).toBe(BreakerState.OPEN);
    expect(state.breaker?.reason).toMatch(/failure rate 100\.0% >= 50% over 4 calls/);

    const rejected = await b.execute("e2e.open", async () => "called").catch((e: unknown) => e);
    expect(isCircuitOpenError(rejected)).toBe(true);
    for (let i = 0; i < 5; i++) await expect(ask(client)).rejects.toThrow();
    expect(upstream.arrivals().length - before).toBe(4);
  });

  it("grants exactly halfOpenPermits probes fleet-wide and reopens on a failed probe", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.probe", {
        breaker: { minimumCalls: 2, openWaitMs: 400, halfOpenPermits: 1, openWaitMultiplier: 2 },
      }),
    });
    const instances = [sdk("svc-a"), sdk("svc-b"), sdk("svc-c")];
    upstream.override(phase("errors", { statuses: [500] }));
    const client = openaiFor(instances[0]!, "e2e.probe");
    await expect(ask(client)).rejects.toThrow();
    await expect(ask(client)).rejects.toThrow();
    await instances[0]!.flush();
    expect((await breakers.getBreaker({ dependency: "e2e.probe" })).breaker?.state).toBe(
      BreakerState.OPEN,
    );
    const openUntilMs = Number(
      (await breakers.getBreaker({ dependency: "e2e.probe" })).breaker?.openUntilUnixMs,
    );
    // The server's own timer moves it to HALF_OPEN: no call is needed for that.
    const halfOpen = async () =>
      (await breakers.getBreaker({ dependency: "e2e.probe" })).breaker?.state ===
      BreakerState.HALF_OPEN;
    expect(await waitFor(halfOpen)).toBe(true);
    expect(Date.now()).toBeGreaterThanOrEqual(openUntilMs);

    // Slow answers keep the probe in flight while the other nine attempts ask for admission.
    upstream.override(phase("errors", { statuses: [500], latencyMs: 300 }));
    const before = upstream.arrivals().length;
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        openaiFor(instances[i % 3]!, "e2e.probe", true)
          .chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] })
          .then(
            (r) => r.choices[0]?.message.content,
            (e: unknown) => e,
          ),
      ),
    );
    expect(upstream.arrivals().length - before).toBe(1);
    const degraded = results.filter((r) => r.status === "fulfilled" && r.value === "degraded");
    expect(degraded).toHaveLength(10);
    await Promise.all(instances.map((b) => b.flush()));
    const after = (await breakers.getBreaker({ dependency: "e2e.probe" })).breaker!;
    expect(after.state).toBe(BreakerState.OPEN);
    expect(after.reason).toMatch(/probe failed/);
    expect(after.consecutiveOpens).toBe(2);
    // The second open waits openWaitMs × multiplier.
    const waitMs = Number(after.openUntilUnixMs - after.changedAtUnixMs);
    expect(waitMs).toBe(800);
  });

  it("closes when the probe succeeds", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.close", { breaker: { minimumCalls: 2, openWaitMs: 200 } }),
    });
    const b = sdk();
    const client = openaiFor(b, "e2e.close");
    upstream.override(phase("errors"));
    await expect(ask(client)).rejects.toThrow();
    await expect(ask(client)).rejects.toThrow();
    upstream.override(phase("healthy"));
    // The failures reach the server in the next report batch; it opens, then moves to HALF_OPEN
    // on its own timer 200 ms later.
    expect(
      await waitFor(
        async () =>
          (await breakers.getBreaker({ dependency: "e2e.close" })).breaker?.state ===
          BreakerState.HALF_OPEN,
        5_000,
      ),
    ).toBe(true);
    const events: BulwarkEvent[] = [];
    b.on((e) => events.push(e));
    await expect(ask(client)).resolves.toMatchObject({ object: "chat.completion" });
    expect(events.find((e) => e.type === "attempt")).toMatchObject({ admission: "probe" });
    await b.close();
    const state = (await breakers.getBreaker({ dependency: "e2e.close" })).breaker!;
    expect(state.state).toBe(BreakerState.CLOSED);
    expect(state.reason).toBe("1 of 1 probes succeeded");
  });

  it("throws a bug in the caller's function back as it is, and counts nothing", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.caller-bug", { breaker: { minimumCalls: 1 } }),
    });
    const b = sdk();
    for (let i = 0; i < 5; i++) {
      const err = await b
        .call("e2e.caller-bug", async () => (undefined as unknown as { x: number }).x)
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TypeError);
    }
    await b.close();
    const state = (await breakers.getBreaker({ dependency: "e2e.caller-bug" })).breaker!;
    expect(state.state).toBe(BreakerState.CLOSED);
    expect(state.window).toMatchObject({ calls: 0, failures: 0 });
  });

  it("retries after a Retry-After as the probe of the breaker that Retry-After opened", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.retry-after", {
        timeoutMs: 1_000,
        deadlineMs: 10_000,
        retry: { maxAttempts: 2, maxRetryAfterMs: 5_000 },
      }),
    });
    let arrivals = 0;
    const upstream = createServer((_req, res) => {
      arrivals++;
      if (arrivals === 1) res.writeHead(503, { "retry-after": "1" }).end("busy");
      else res.writeHead(200).end("ok");
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    try {
      const b = sdk();
      const { port } = upstream.address() as AddressInfo;
      const res = await b.fetch("e2e.retry-after")(`http://127.0.0.1:${port}/`);
      expect(res.status).toBe(200);
      expect(arrivals).toBe(2);
      await b.close();
      const transitions = (
        await breakers.listTransitions({ dependency: "e2e.retry-after" })
      ).transitions.map((t) => t.reason);
      expect(transitions[0]).toMatch(/^back-off signal: http_503 Retry-After 1000 ms/);
      expect(transitions.at(-1)).toBe("1 of 1 probes succeeded");
    } finally {
      await new Promise((r) => upstream.close(r));
    }
  });

  it("returns a 400 at once: no retry, no failure counted", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.bad-request", { retry: { maxAttempts: 3 } }),
    });
    const b = sdk();
    const client = openaiFor(b, "e2e.bad-request");
    const before = upstream.arrivals().length;
    const err = await client.chat.completions
      .create({ model: "gpt-test", messages: [] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BadRequestError);
    expect(upstream.arrivals().length - before).toBe(1);
    await b.close();
    const state = (await breakers.getBreaker({ dependency: "e2e.bad-request" })).breaker!;
    expect(state.window).toMatchObject({ calls: 0, failures: 0 });
  });

  it("holds maxAttempts and the overall deadline against a hanging upstream", async () => {
    const { policies } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.hang", {
        timeoutMs: 800,
        deadlineMs: 2_000,
        retry: { maxAttempts: 3, initialBackoffMs: 50, maxBackoffMs: 100 },
        breaker: { minimumCalls: 10 },
      }),
    });
    const b = sdk();
    upstream.override(phase("hanging"));
    const before = upstream.arrivals().length;
    const started = performance.now();
    const err = await b
      .call("e2e.hang", ({ signal }) =>
        fetch(`${upstream.baseUrl}/chat/completions`, {
          method: "POST",
          body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "x" }] }),
          signal,
        }),
      )
      .catch((e: unknown) => e);
    const elapsedMs = performance.now() - started;
    expect(isDeadlineExceededError(err)).toBe(true);
    expect(elapsedMs).toBeLessThanOrEqual(2_200);
    expect(upstream.arrivals().length - before).toBeLessThanOrEqual(3);
  });

  it("does not count a call the caller aborted", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("e2e.abort", { breaker: { minimumCalls: 1, windowSize: 5 } }),
    });
    const b = sdk();
    upstream.override(phase("hanging"));
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    const err = await b
      .call(
        "e2e.abort",
        ({ signal }) =>
          fetch(`${upstream.baseUrl}/chat/completions`, { method: "POST", body: "{}", signal }),
        { signal: controller.signal },
      )
      .catch((e: unknown) => e);
    expect((err as Error).name).toBe("AbortError");
    await b.close();
    const state = (await breakers.getBreaker({ dependency: "e2e.abort" })).breaker!;
    expect(state.state).toBe(BreakerState.CLOSED);
    expect(state.window).toMatchObject({ calls: 0, failures: 0 });
  });
});

describe("call options", () => {
  it("refuses options the control plane would refuse, naming them", async () => {
    const b = sdk();
    await expect(b.call("e2e.open", async () => 1, { deadlineMs: -1 })).rejects.toThrow(
      /options\.deadlineMs must be a positive number/,
    );
    await expect(b.call("e2e.open", async () => 1, { traceId: "abc" })).rejects.toThrow(
      /options\.traceId must be a W3C trace id/,
    );
  });
});
