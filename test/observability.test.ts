import { join } from "node:path";
import { Writable } from "node:stream";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFlakyOpenAI } from "../examples/flaky-openai/flaky-openai-server.ts";
import { parsePhase } from "../examples/flaky-openai/scenario.ts";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import type { Event } from "../gen/bulwark/v1/event_pb.ts";
import { createBulwark } from "../sdk/index.ts";
import { type BulwarkServer, startServer } from "../server/bulwark-server.ts";
import { clientsFor, tempDir, testPolicy, waitFor } from "./harness.ts";

const tmp = tempDir();
afterAll(() => tmp.remove());

/** The value of one sample line of the Prometheus text format, or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const labelText = line.slice(name.length + 1, line.indexOf("}"));
    const found = Object.fromEntries(
      [...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) {
      return Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return undefined;
}

describe("metrics and health endpoints", () => {
  let server: BulwarkServer;
  beforeAll(async () => {
    server = await startServer({
      dbPath: join(tmp.dir, "metrics.db"),
      host: "127.0.0.1",
      port: 0,
      metrics: { host: "127.0.0.1", port: 0 },
      logger: pino({ level: "silent" }),
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it("shows per-dependency counters and histograms that match the calls made", async () => {
    await clientsFor(server.url).policies.putPolicy({
      policy: testPolicy("obs.chat", { breaker: { windowSize: 100, minimumCalls: 100 } }),
    });
    const upstream = await startFlakyOpenAI({
      scenario: {
        name: "mixed",
        phases: [
          parsePhase({ name: "healthy", durationMs: 60_000, mode: "healthy", latencyMs: 1 }),
        ],
      },
    });
    // Strict mode asks the server before every attempt, so each call shows in the Acquire count.
    const bulwark = createBulwark({ url: server.url, service: "obs-svc", strict: true });
    const ask = () =>
      bulwark.call("obs.chat", ({ signal }) =>
        fetch(`${upstream.baseUrl}/chat/completions`, {
          method: "POST",
          body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "x" }] }),
          signal,
        }).then((r) => {
          if (r.status >= 500) throw Object.assign(new Error("upstream"), { status: r.status });
          return r.status;
        }),
      );
    try {
      for (let i = 0; i < 12; i++) await ask();
      upstream.override(parsePhase({ name: "down", durationMs: 1, mode: "errors", latencyMs: 1 }));
      for (let i = 0; i < 5; i++) await ask().catch(() => {});
      await bulwark.flush();
    } finally {
      await bulwark.close();
      await upstream.close();
    }
    const res = await fetch(`${server.metricsUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain/);
    const text = await res.text();
    const labels = { dependency: "obs.chat", service: "obs-svc" };
    expect(sample(text, "bulwark_outcomes_total", { ...labels, result: "success" })).toBe(12);
    expect(sample(text, "bulwark_outcomes_total", { ...labels, result: "failure" })).toBe(5);
    expect(
      sample(text, "bulwark_call_latency_seconds_count", {
        dependency: "obs.chat",
        result: "success",
      }),
    ).toBe(12);
    expect(
      sample(text, "bulwark_call_latency_seconds_bucket", {
        dependency: "obs.chat",
        result: "success",
        le: "+Inf",
      }),
    ).toBe(12);
    expect(
      sample(text, "bulwark_acquire_total", { dependency: "obs.chat", decision: "allow" }),
    ).toBe(17);
    expect(sample(text, "bulwark_breaker_state", { dependency: "obs.chat" })).toBe(0);
    expect(
      sample(text, "bulwark_rpc_duration_seconds_count", {
        method: "bulwark.v1.BreakerService/Acquire",
        code: "OK",
      }),
    ).toBeGreaterThanOrEqual(17);
  });

  it("answers /healthz and /readyz", async () => {
    expect((await fetch(`${server.metricsUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.metricsUrl}/readyz`)).status).toBe(200);
  });
});

describe("trend alerts", () => {
  let server: BulwarkServer;
  let logText = "";
  beforeAll(async () => {
    server = await startServer({
      dbPath: join(tmp.dir, "alerts.db"),
      host: "127.0.0.1",
      port: 0,
      metrics: { host: "127.0.0.1", port: 0 },
      // Short windows so the test runs in about a second; production defaults are 5 min / 1 h.
      alerts: { bucketMs: 100, shortWindowMs: 500, longWindowMs: 2_000, minimumCalls: 20 },
      logger: pino(
        { level: "info" },
        new Writable({
          write(chunk, _e, cb) {
            logText += chunk.toString();
            cb();
          },
        }),
      ),
    });
  });
  afterAll(async () => {
    await server.close();
  });

  it("ignores one failure among many successes, raises on a sustained error rate, clears after recovery", async () => {
    const { policies, breakers, audit } = clientsFor(server.url);
    // 99 % availability: a 1 % error budget; the breaker is kept out of the way.
    await policies.putPolicy({
      policy: testPolicy("obs.alert", {
        breaker: { windowSize: 10_000, minimumCalls: 10_000 },
      }),
    });
    const events: Event[] = [];
    const controller = new AbortController();
    const watching = (async () => {
      try {
        for await (const m of breakers.watch(
          { dependencies: ["obs.alert"] },
          { signal: controller.signal },
        )) {
          if (m.kind.case === "event" && m.kind.value.kind.case === "alertChanged") {
            events.push(m.kind.value);
          }
        }
      } catch {
        // aborted
      }
    })();
    const outcome = (result: OutcomeResult) => ({
      dependency: "obs.alert",
      service: "svc",
      attempt: 1,
      result,
    });
    const send = (successes: number, failures: number) =>
      breakers.report({
        outcomes: [
          ...Array.from({ length: successes }, () => outcome(OutcomeResult.SUCCESS)),
          ...Array.from({ length: failures }, () => outcome(OutcomeResult.FAILURE)),
        ],
      });
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

    // A burst: one failure among 500 successes is a 0.2 % error rate, within the budget.
    for (let i = 0; i < 5; i++) {
      await send(i === 2 ? 99 : 100, i === 2 ? 1 : 0);
      await pause(50);
    }
    expect(events).toHaveLength(0);

    // Sustained: half the calls fail, enough to burn the budget over the long window too.
    for (let i = 0; i < 4; i++) {
      await send(40, 40);
      await pause(50);
    }
    expect(await waitFor(() => events.length >= 1)).toBe(true);
    expect(events.map((e) => e.kind.case === "alertChanged" && e.kind.value.active)).toEqual([
      true,
    ]);
    const raised = events[0]!.kind.value as {
      shortWindow?: { burnRate: number };
      threshold: number;
    };
    expect(raised.shortWindow!.burnRate).toBeGreaterThanOrEqual(raised.threshold);

    // Recovery: only successes until the failures have left the short window.
    for (let i = 0; i < 8; i++) {
      await send(50, 0);
      await pause(100);
    }
    await waitFor(() => events.length >= 2);
    controller.abort();
    await watching;
    expect(events.map((e) => e.kind.case === "alertChanged" && e.kind.value.active)).toEqual([
      true,
      false,
    ]);

    const audited = await audit.query({ aggregateId: "obs.alert" });
    expect(audited.records.map((r) => r.eventType)).toEqual([
      "policy.changed",
      "alert.raised",
      "alert.cleared",
    ]);
    expect(logText).toMatch(/"msg":"alert raised"/);
    expect(logText).toMatch(/"msg":"alert cleared"/);
    const metrics = await (await fetch(`${server.metricsUrl}/metrics`)).text();
    expect(sample(metrics, "bulwark_alerts_active", { dependency: "obs.alert" })).toBe(0);
  });
});
