import { describe, expect, it } from "vitest";
import {
  type BreakerStateSample,
  MAX_LABEL_SETS,
  OTHER_LABEL,
  type OutcomeSample,
  ServerMetrics,
} from "./metrics.ts";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the sample lines of the Prometheus text format (label values here hold no quotes). */
function parse(body: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of body.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)) labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The one sample of `name` whose labels are exactly `labels`; undefined when there is none. */
async function sampleValue(
  metrics: ServerMetrics,
  name: string,
  labels: Record<string, string>,
): Promise<number | undefined> {
  const matches = parse((await metrics.render()).body).filter(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  expect(matches.length).toBeLessThanOrEqual(1);
  return matches[0]?.value;
}

async function seriesOf(metrics: ServerMetrics, name: string): Promise<Sample[]> {
  return parse((await metrics.render()).body).filter((s) => s.name === name);
}

function newMetrics(breakers: () => readonly BreakerStateSample[] = () => []): ServerMetrics {
  return new ServerMetrics({ breakers, processMetrics: false });
}

function outcome(result: string, latencyMs: number, dependency = "openai"): OutcomeSample {
  return { dependency, service: "checkout", result, latencyMs };
}

describe("ServerMetrics", () => {
  it("counts outcomes per dependency, service and result", async () => {
    const metrics = newMetrics();
    metrics.recordOutcomes([
      outcome("success", 250),
      outcome("success", 500),
      outcome("failure", 1000),
      outcome("timeout", 30_000),
      outcome("rejected", 0),
      outcome("cancelled", 12),
      outcome("ignored", 7),
    ]);
    metrics.recordOutcomes([
      { dependency: "stripe", service: "billing", result: "success", latencyMs: 5 },
    ]);

    const labels = { dependency: "openai", service: "checkout" };
    const total = "bulwark_outcomes_total";
    expect(await sampleValue(metrics, total, { ...labels, result: "success" })).toBe(2);
    expect(await sampleValue(metrics, total, { ...labels, result: "failure" })).toBe(1);
    expect(await sampleValue(metrics, total, { ...labels, result: "timeout" })).toBe(1);
    expect(await sampleValue(metrics, total, { ...labels, result: "rejected" })).toBe(1);
    expect(await sampleValue(metrics, total, { ...labels, result: "cancelled" })).toBe(1);
    expect(await sampleValue(metrics, total, { ...labels, result: "ignored" })).toBe(1);
    expect(
      await sampleValue(metrics, total, {
        dependency: "stripe",
        service: "billing",
        result: "success",
      }),
    ).toBe(1);
  });

  it("feeds the latency histogram in seconds from success, failure and timeout only", async () => {
    const metrics = newMetrics();
    metrics.recordOutcomes([
      outcome("success", 250),
      outcome("success", 500),
      outcome("failure", 1000),
      outcome("timeout", 30_000),
      outcome("rejected", 3),
      outcome("cancelled", 12),
      outcome("ignored", 7),
      outcome("success", Number.NaN),
    ]);

    const name = "bulwark_call_latency_seconds";
    const success = { dependency: "openai", result: "success" };
    expect(await sampleValue(metrics, `${name}_count`, success)).toBe(2);
    expect(await sampleValue(metrics, `${name}_sum`, success)).toBe(0.75);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...success, le: "0.25" })).toBe(1);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...success, le: "0.5" })).toBe(2);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...success, le: "+Inf" })).toBe(2);
    const failure = { dependency: "openai", result: "failure" };
    expect(await sampleValue(metrics, `${name}_count`, failure)).toBe(1);
    expect(await sampleValue(metrics, `${name}_sum`, failure)).toBe(1);
    const timeout = { dependency: "openai", result: "timeout" };
    expect(await sampleValue(metrics, `${name}_sum`, timeout)).toBe(30);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...timeout, le: "30" })).toBe(1);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...timeout, le: "20" })).toBe(0);
    const results = new Set((await seriesOf(metrics, `${name}_count`)).map((s) => s.labels.result));
    expect(results).toEqual(new Set(["success", "failure", "timeout"]));
  });

  it("counts idempotency Begins by outcome", async () => {
    const metrics = new ServerMetrics({ breakers: () => [], processMetrics: false });
    metrics.recordIdempotencyBegin("new");
    metrics.recordIdempotencyBegin("completed");
    metrics.recordIdempotencyBegin("completed");
    const name = "bulwark_idempotency_begins_total";
    expect(await sampleValue(metrics, name, { outcome: "new" })).toBe(1);
    expect(await sampleValue(metrics, name, { outcome: "completed" })).toBe(2);
    expect(await sampleValue(metrics, name, { outcome: "conflict" })).toBeUndefined();
  });

  it("counts acquire decisions, transitions and alerts", async () => {
    const metrics = newMetrics();
    metrics.recordAcquire("openai", "allow");
    metrics.recordAcquire("openai", "allow");
    metrics.recordAcquire("openai", "reject");
    metrics.recordAcquire("openai", "reject");
    metrics.recordAcquire("openai", "reject");
    metrics.recordAcquire("openai", "probe");
    metrics.recordTransition("openai", "open");
    metrics.recordTransition("openai", "half-open");
    metrics.recordTransition("openai", "open");
    metrics.setAlert("openai", true);
    metrics.setAlert("stripe", true);
    metrics.setAlert("stripe", false);

    const acquire = "bulwark_acquire_total";
    expect(await sampleValue(metrics, acquire, { dependency: "openai", decision: "allow" })).toBe(
      2,
    );
    expect(await sampleValue(metrics, acquire, { dependency: "openai", decision: "reject" })).toBe(
      3,
    );
    expect(await sampleValue(metrics, acquire, { dependency: "openai", decision: "probe" })).toBe(
      1,
    );
    const transitions = "bulwark_breaker_transitions_total";
    expect(await sampleValue(metrics, transitions, { dependency: "openai", to: "open" })).toBe(2);
    expect(await sampleValue(metrics, transitions, { dependency: "openai", to: "half-open" })).toBe(
      1,
    );
    expect(await sampleValue(metrics, transitions, { dependency: "openai", to: "closed" })).toBe(
      undefined,
    );
    expect(await sampleValue(metrics, "bulwark_alerts_active", { dependency: "openai" })).toBe(1);
    expect(await sampleValue(metrics, "bulwark_alerts_active", { dependency: "stripe" })).toBe(0);
  });

  it("observes RPC durations in seconds per method and code", async () => {
    const metrics = newMetrics();
    const acquire = "bulwark.v1.BreakerService/Acquire";
    metrics.recordRpc(acquire, "OK", 0.5);
    metrics.recordRpc(acquire, "OK", 2);
    metrics.recordRpc(acquire, "InvalidArgument", 0.25);
    metrics.recordRpc(acquire, "OK", -1);

    const name = "bulwark_rpc_duration_seconds";
    const ok = { method: acquire, code: "OK" };
    expect(await sampleValue(metrics, `${name}_count`, ok)).toBe(2);
    expect(await sampleValue(metrics, `${name}_sum`, ok)).toBeCloseTo(0.0025, 12);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...ok, le: "0.0005" })).toBe(1);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...ok, le: "0.0025" })).toBe(2);
    const invalid = { method: acquire, code: "InvalidArgument" };
    expect(await sampleValue(metrics, `${name}_count`, invalid)).toBe(1);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...invalid, le: "0.00025" })).toBe(1);
    expect(await sampleValue(metrics, `${name}_bucket`, { ...invalid, le: "0.0001" })).toBe(0);
  });

  it("fills the breaker state gauge from the callback at each scrape", async () => {
    let breakers: BreakerStateSample[] = [
      { dependency: "openai", service: "", state: "closed" },
      { dependency: "stripe", service: "billing", state: "open" },
    ];
    const metrics = newMetrics(() => breakers);
    const state = "bulwark_breaker_state";
    expect(await sampleValue(metrics, state, { dependency: "openai", service: "" })).toBe(0);
    expect(await sampleValue(metrics, state, { dependency: "stripe", service: "billing" })).toBe(1);

    breakers = [
      { dependency: "openai", service: "", state: "half-open" },
      { dependency: "twilio", service: "sms", state: "closed" },
    ];
    expect(await sampleValue(metrics, state, { dependency: "openai", service: "" })).toBe(2);
    expect(await sampleValue(metrics, state, { dependency: "twilio", service: "sms" })).toBe(0);
    // The stripe breaker no longer exists, so neither does its series.
    expect(await sampleValue(metrics, state, { dependency: "stripe", service: "billing" })).toBe(
      undefined,
    );
    expect(await seriesOf(metrics, state)).toHaveLength(2);
  });

  it("counts label sets past the limit under _other", async () => {
    const metrics = newMetrics();
    const extra = 5;
    for (let i = 0; i < MAX_LABEL_SETS + extra; i++) {
      metrics.recordOutcomes([outcome("success", 10, `dep-${i}`)]);
      metrics.recordAcquire(`dep-${i}`, "allow");
    }
    // A dependency admitted before the limit keeps its own series afterwards.
    metrics.recordOutcomes([outcome("success", 10, "dep-0")]);

    const outcomes = await seriesOf(metrics, "bulwark_outcomes_total");
    expect(outcomes).toHaveLength(MAX_LABEL_SETS + 1);
    const other = { dependency: OTHER_LABEL, service: OTHER_LABEL, result: "success" };
    expect(await sampleValue(metrics, "bulwark_outcomes_total", other)).toBe(extra);
    const first = { dependency: "dep-0", service: "checkout", result: "success" };
    expect(await sampleValue(metrics, "bulwark_outcomes_total", first)).toBe(2);
    const otherAcquire = { dependency: OTHER_LABEL, decision: "allow" };
    expect(await sampleValue(metrics, "bulwark_acquire_total", otherAcquire)).toBe(extra);
    const latency = { dependency: OTHER_LABEL, result: "success" };
    expect(await sampleValue(metrics, "bulwark_call_latency_seconds_count", latency)).toBe(extra);
  });

  it("collapses breakers past the limit into one _other series with the most severe state", async () => {
    const breakers: BreakerStateSample[] = [];
    for (let i = 0; i < MAX_LABEL_SETS; i++) {
      breakers.push({ dependency: `dep-${i}`, service: "", state: "closed" });
    }
    breakers.push({ dependency: "late-1", service: "", state: "half-open" });
    breakers.push({ dependency: "late-2", service: "", state: "open" });
    const metrics = newMetrics(() => breakers);

    expect(await seriesOf(metrics, "bulwark_breaker_state")).toHaveLength(MAX_LABEL_SETS + 1);
    const other = { dependency: OTHER_LABEL, service: OTHER_LABEL };
    expect(await sampleValue(metrics, "bulwark_breaker_state", other)).toBe(1);

    // Once breakers disappear, the late ones get series of their own.
    breakers.splice(0, 2);
    expect(await seriesOf(metrics, "bulwark_breaker_state")).toHaveLength(MAX_LABEL_SETS);
    expect(await sampleValue(metrics, "bulwark_breaker_state", other)).toBe(undefined);
    const late = { dependency: "late-2", service: "" };
    expect(await sampleValue(metrics, "bulwark_breaker_state", late)).toBe(1);
  });

  it("keeps the series of two instances apart", async () => {
    const a = newMetrics(() => [{ dependency: "openai", service: "", state: "open" }]);
    const b = newMetrics(() => []);
    a.recordOutcomes([outcome("failure", 100)]);
    a.recordAcquire("openai", "reject");
    b.recordAcquire("openai", "allow");

    expect(await seriesOf(b, "bulwark_outcomes_total")).toEqual([]);
    expect(await seriesOf(b, "bulwark_breaker_state")).toEqual([]);
    expect(
      await sampleValue(b, "bulwark_acquire_total", { dependency: "openai", decision: "reject" }),
    ).toBe(undefined);
    expect(
      await sampleValue(a, "bulwark_acquire_total", { dependency: "openai", decision: "allow" }),
    ).toBe(undefined);
    expect(
      await sampleValue(a, "bulwark_acquire_total", { dependency: "openai", decision: "reject" }),
    ).toBe(1);
  });

  it("counts an unknown result as _other, without latency", async () => {
    const metrics = newMetrics();
    metrics.recordOutcomes([outcome("exploded", 100)]);
    const labels = { dependency: "openai", service: "checkout", result: OTHER_LABEL };
    expect(await sampleValue(metrics, "bulwark_outcomes_total", labels)).toBe(1);
    expect(await seriesOf(metrics, "bulwark_call_latency_seconds_count")).toEqual([]);
  });

  it("renders the text format with bulwark_-prefixed process metrics", async () => {
    const metrics = new ServerMetrics({ breakers: () => [] });
    const { contentType, body } = await metrics.render();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(body).toContain("# TYPE bulwark_process_cpu_user_seconds_total counter");
    expect(body).toContain("# TYPE bulwark_outcomes_total counter");
    expect(body).toContain("# TYPE bulwark_call_latency_seconds histogram");
    expect(body).not.toMatch(/^process_/m);
  });
});
