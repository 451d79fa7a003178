import { describe, expect, it } from "vitest";
import {
  type AlertChange,
  BurnRateAlerts,
  DEFAULT_ALERT_MINIMUM_CALLS,
  DEFAULT_BUCKET_MS,
  DEFAULT_BURN_RATE_THRESHOLD,
  DEFAULT_LONG_WINDOW_MS,
  DEFAULT_SHORT_WINDOW_MS,
  errorBudget,
  normalizeBurnRateOptions,
} from "./burn-rate-alerts.ts";

/** A multiple of every bucket width used here, so bucket edges fall on whole seconds after T0. */
const T0 = 1_700_000_000_000;
const SECOND_MS = 1_000;
const DEP = "payments.api";

/**
 * Records one outcome per second of the fake clock for seconds [fromS, toS) after T0; `fails`
 * says which seconds fail. Returns every change, in order.
 */
function traffic(
  alerts: BurnRateAlerts,
  targetPercent: number,
  fromS: number,
  toS: number,
  fails: (second: number) => boolean,
  dependency = DEP,
): AlertChange[] {
  const changes: AlertChange[] = [];
  for (let s = fromS; s < toS; s++) {
    changes.push(...alerts.record(dependency, targetPercent, fails(s), T0 + s * SECOND_MS));
  }
  return changes;
}

const never = () => false;
const always = () => true;

/** Second after T0 of a change. */
function secondOf(change: AlertChange): number {
  return (change.atMs - T0) / SECOND_MS;
}

/**
 * Default options, a 99 % target (budget 0.01): an hour of successes, then every call fails from
 * second 3600 until `toS`. The long window holds about 3,600 calls, so it needs about 14.4 % of
 * them, 519 failures, before it reaches the threshold; the short window got there long before.
 */
function failuresAfterHealthyHour(toS: number) {
  const alerts = new BurnRateAlerts();
  expect(traffic(alerts, 99, 0, 3_600, never)).toEqual([]);
  const changes = traffic(alerts, 99, 3_600, toS, always);
  return { alerts, changes };
}

describe("options", () => {
  it("fills in the documented defaults without touching the caller's object", () => {
    const given = { minimumCalls: 50 };
    const options = normalizeBurnRateOptions(given);
    expect(options).toEqual({
      shortWindowMs: DEFAULT_SHORT_WINDOW_MS,
      longWindowMs: DEFAULT_LONG_WINDOW_MS,
      burnRateThreshold: DEFAULT_BURN_RATE_THRESHOLD,
      minimumCalls: 50,
      bucketMs: DEFAULT_BUCKET_MS,
    });
    expect(given).toEqual({ minimumCalls: 50 });
    expect([DEFAULT_SHORT_WINDOW_MS, DEFAULT_LONG_WINDOW_MS, DEFAULT_BUCKET_MS]).toEqual([
      300_000, 3_600_000, 10_000,
    ]);
    expect([DEFAULT_BURN_RATE_THRESHOLD, DEFAULT_ALERT_MINIMUM_CALLS]).toEqual([14.4, 20]);
  });

  it.each([
    [{ bucketMs: 0 }, /^options\.bucketMs must be an integer in \[1, 86400000\]; got 0$/],
    [{ bucketMs: 2.5 }, /options\.bucketMs .*got 2\.5/],
    [{ bucketMs: 7_000 }, /options\.longWindowMs must be a multiple of bucketMs \(7000\).*3600000/],
    [{ longWindowMs: 100_010_000 }, /options\.longWindowMs .*\[20000, 100000000\]; got 100010000/],
    [{ shortWindowMs: 12_345 }, /options\.shortWindowMs must be a multiple .*got 12345/],
    [{ shortWindowMs: 3_600_000 }, /options\.shortWindowMs .*\[10000, 3590000\]; got 3600000/],
    [{ shortWindowMs: 0 }, /options\.shortWindowMs .*got 0/],
    [{ burnRateThreshold: 0 }, /options\.burnRateThreshold must be a finite number > 0; got 0/],
    [{ burnRateThreshold: -1 }, /options\.burnRateThreshold .*got -1/],
    [{ burnRateThreshold: Number.NaN }, /options\.burnRateThreshold .*got NaN/],
    [{ burnRateThreshold: Number.POSITIVE_INFINITY }, /options\.burnRateThreshold .*Infinity/],
    [{ minimumCalls: 0 }, /options\.minimumCalls must be an integer in \[1, 1000000000\]; got 0/],
    [{ minimumCalls: 1.5 }, /options\.minimumCalls .*got 1\.5/],
  ])("rejects %o", (options, message) => {
    expect(() => new BurnRateAlerts(options)).toThrow(RangeError);
    expect(() => new BurnRateAlerts(options)).toThrow(message);
  });

  it("rejects an availability target outside [0, 100]", () => {
    const alerts = new BurnRateAlerts();
    for (const target of [-1, 100.5, Number.NaN]) {
      expect(() => alerts.record(DEP, target, false, T0)).toThrow(RangeError);
      expect(() => alerts.record(DEP, target, false, T0)).toThrow(/availabilityTargetPercent/);
    }
    expect(errorBudget(99)).toBe(0.01);
    expect(errorBudget(100)).toBe(0);
  });
});

describe("BurnRateAlerts", () => {
  it("raises nothing for one failure among many successes", () => {
    const alerts = new BurnRateAlerts();
    // One failure in 600 calls at 99.5 %: a burn rate of 0.33.
    expect(traffic(alerts, 99.5, 0, 600, (s) => s === 0)).toEqual([]);
    // Even at the minimum sample one failure in 20 calls burns only 10 at 99.5 %.
    const fresh = new BurnRateAlerts();
    expect(traffic(fresh, 99.5, 0, 20, (s) => s === 19)).toEqual([]);
    expect(fresh.active()).toEqual([]);
  });

  it("waits for minimumCalls in both windows before raising", () => {
    const alerts = new BurnRateAlerts();
    const changes = traffic(alerts, 99.5, 0, 60, always);
    expect(changes.map(secondOf)).toEqual([19]);
    expect(changes[0]!.short).toEqual({
      windowMs: 300_000,
      calls: 20,
      failures: 20,
      burnRate: 200,
    });

    const patient = new BurnRateAlerts({ minimumCalls: 50 });
    expect(traffic(patient, 99.5, 0, 60, always).map(secondOf)).toEqual([49]);
  });

  it("raises once, at the call that takes the long window to the threshold, with figures", () => {
    const { changes } = failuresAfterHealthyHour(4_200);
    expect(changes).toHaveLength(1);
    const raised = changes[0]!;
    // At second 4118 the long window is buckets 52..411 (seconds 520..4118): 3599 calls, of which
    // the 519 since second 3600 failed. One second earlier it held 518 failures in 3598 calls.
    expect(secondOf(raised)).toBe(4_118);
    expect(raised).toMatchObject({
      kind: "raised",
      dependency: DEP,
      threshold: 14.4,
      budget: 0.01,
      short: { windowMs: 300_000, calls: 299, failures: 299, burnRate: 100 },
      long: { windowMs: 3_600_000, calls: 3_599, failures: 519 },
    });
    expect(raised.long.burnRate).toBeCloseTo(519 / 3_599 / 0.01, 9);
    expect(raised.long.burnRate).toBeGreaterThanOrEqual(14.4);
    expect(raised.reason).toBe("burn rate 100.00 over 5 min and 14.42 over 60 min reached 14.4");
  });

  it("stays raised without repeating the event while the burn goes on", () => {
    const { alerts } = failuresAfterHealthyHour(4_200);
    expect(traffic(alerts, 99, 4_200, 5_400, always)).toEqual([]);
    expect(alerts.evaluate(T0 + 5_400 * SECOND_MS)).toEqual([]);
    expect(alerts.active()).toEqual([DEP]);
  });

  it("clears as soon as the short window's burn drops, while the long window is still high", () => {
    // The dependency recovers right after the alert was raised at second 4118.
    const { alerts, changes } = failuresAfterHealthyHour(4_119);
    expect(changes.map((c) => [c.kind, secondOf(c)])).toEqual([["raised", 4_118]]);
    const cleared = traffic(alerts, 99, 4_119, 5_000, never);
    expect(cleared).toHaveLength(1);
    // At second 4369 the short window (seconds 4070..4369) still holds 49 failures in 300 calls;
    // at 4370 the bucket of seconds 4070..4079 leaves it: 39 failures in 291 calls.
    expect(secondOf(cleared[0]!)).toBe(4_370);
    expect(cleared[0]).toMatchObject({
      kind: "cleared",
      short: { calls: 291, failures: 39 },
      long: { calls: 3_591, failures: 519 },
    });
    expect(cleared[0]!.short.burnRate).toBeCloseTo(39 / 291 / 0.01, 9);
    expect(cleared[0]!.long.burnRate).toBeGreaterThan(14.4);
    expect(cleared[0]!.reason).toBe("burn rate over 5 min fell to 13.40");
    expect(alerts.active()).toEqual([]);
  });

  it("does not raise for a short spike that leaves the long window under the threshold", () => {
    const alerts = new BurnRateAlerts();
    traffic(alerts, 99, 0, 3_600, never);
    // A minute of failures burns 20 over five minutes but only about 1.7 over the hour.
    expect(traffic(alerts, 99, 3_600, 3_660, always)).toEqual([]);
    expect(traffic(alerts, 99, 3_660, 4_800, never)).toEqual([]);
    expect(alerts.active()).toEqual([]);
  });

  it("clears via evaluate() after a whole short window under minimumCalls", () => {
    const alerts = new BurnRateAlerts();
    // 20 % of the calls fail at a 99 % target: a burn rate of 20 from the 20th call on.
    const raised = traffic(alerts, 99, 0, 20, (s) => s % 5 === 4);
    expect(raised.map((c) => [c.kind, secondOf(c), c.short.burnRate])).toEqual([
      ["raised", 19, 20],
    ]);
    // The bucket of seconds 0..9 leaves the short window at second 300, leaving 10 calls.
    expect(alerts.evaluate(T0 + 299_999)).toEqual([]);
    expect(alerts.evaluate(T0 + 300_000)).toEqual([]);
    expect(alerts.evaluate(T0 + 599_999)).toEqual([]);
    const cleared = alerts.evaluate(T0 + 600_000);
    expect(cleared).toHaveLength(1);
    expect(cleared[0]).toMatchObject({
      kind: "cleared",
      atMs: T0 + 600_000,
      reason: "traffic stopped: under 20 calls per 5 min for 5 min",
      short: { calls: 0, failures: 0, burnRate: 0 },
      long: { calls: 20, failures: 4 },
    });
    expect(alerts.evaluate(T0 + 900_000)).toEqual([]);
    expect(alerts.active()).toEqual([]);
  });

  it("clears a stopped dependency in one evaluate() long after its last call", () => {
    const alerts = new BurnRateAlerts();
    traffic(alerts, 99, 0, 20, always);
    expect(alerts.active()).toEqual([DEP]);
    const cleared = alerts.evaluate(T0 + 2 * 3_600_000);
    expect(cleared.map((c) => [c.kind, c.short.calls, c.long.calls])).toEqual([["cleared", 0, 0]]);
    expect(alerts.evaluate(T0 + 3 * 3_600_000)).toEqual([]);
  });

  it("treats a 100 % target as a zero budget: any failure burns infinitely", () => {
    const alerts = new BurnRateAlerts();
    expect(traffic(alerts, 100, 0, 30, never)).toEqual([]);
    const raised = traffic(alerts, 100, 30, 31, always);
    expect(raised).toHaveLength(1);
    expect(raised[0]).toMatchObject({
      kind: "raised",
      budget: 0,
      short: { calls: 31, failures: 1, burnRate: Number.POSITIVE_INFINITY },
      long: { calls: 31, failures: 1, burnRate: Number.POSITIVE_INFINITY },
    });
    expect(raised[0]!.reason).toContain("burn rate infinite over 5 min");
    // The failure's bucket (seconds 30..39) leaves the short window at second 330.
    const cleared = traffic(alerts, 100, 31, 400, never);
    expect(cleared.map((c) => [c.kind, secondOf(c), c.short.burnRate])).toEqual([
      ["cleared", 330, 0],
    ]);
    expect(cleared[0]!.long.burnRate).toBe(Number.POSITIVE_INFINITY);
  });

  it("takes a burn rate exactly on the threshold as reaching it despite binary rounding", () => {
    // 1 failure in 100 calls at 99.8 % is a burn of exactly 5, computed as 4.99999999999993.
    const options = { burnRateThreshold: 5, minimumCalls: 100 };
    const onIt = new BurnRateAlerts(options);
    expect(traffic(onIt, 99.8, 0, 100, (s) => s === 99).map((c) => c.kind)).toEqual(["raised"]);
    const under = new BurnRateAlerts(options);
    expect(traffic(under, 99.8, 0, 101, (s) => s === 100)).toEqual([]);
  });

  describe("with one-second buckets, a 3 s short and a 6 s long window", () => {
    // A 50 % target (budget 0.5), threshold 1: a window reaches it when half its calls fail.
    const options = { bucketMs: 1_000, shortWindowMs: 3_000, longWindowMs: 6_000 };
    const make = () => new BurnRateAlerts({ ...options, minimumCalls: 1, burnRateThreshold: 1 });
    const at = (alerts: BurnRateAlerts, ms: number, failure: boolean) =>
      alerts.record(DEP, 50, failure, T0 + ms).map((c) => ({
        kind: c.kind,
        short: [c.short.calls, c.short.failures],
        long: [c.long.calls, c.long.failures],
      }));

    it("drops each bucket from each window exactly at the window's edge", () => {
      const alerts = make();
      expect(at(alerts, 0, true)).toEqual([{ kind: "raised", short: [1, 1], long: [1, 1] }]);
      // Buckets 0..2 make up the short window: one failure in two calls still reaches 1.
      expect(at(alerts, 2_999, false)).toEqual([]);
      // Bucket 0 leaves the short window but not the long one.
      expect(at(alerts, 3_000, false)).toEqual([{ kind: "cleared", short: [2, 0], long: [3, 1] }]);
      // Bucket 0 has left the long window too (1 failure in 3 calls); counting it would raise.
      expect(at(alerts, 6_000, true)).toEqual([]);
      expect(at(alerts, 6_001, true)).toEqual([{ kind: "raised", short: [2, 2], long: [4, 2] }]);
      // A pause longer than the long window empties both.
      expect(at(alerts, 60_000, false)).toEqual([{ kind: "cleared", short: [1, 0], long: [1, 0] }]);
    });

    it("puts a late outcome in its own bucket, and drops one older than the long window", () => {
      const alerts = make();
      expect(at(alerts, 10_000, false)).toEqual([]);
      expect(at(alerts, 4_000, true)).toEqual([]); // bucket 4: six buckets back, outside
      expect(at(alerts, 7_000, true)).toEqual([]); // bucket 7: in the long window only
      expect(at(alerts, 8_000, true)).toEqual([{ kind: "raised", short: [2, 1], long: [3, 2] }]);
      expect(at(alerts, 10_999, true)).toEqual([]);
      // When bucket 11 begins, bucket 8 leaves the short window; bucket 7 is still in the long one.
      expect(at(alerts, 11_000, false)).toEqual([{ kind: "cleared", short: [3, 1], long: [5, 3] }]);
    });
  });

  it("keeps dependencies apart", () => {
    const alerts = new BurnRateAlerts();
    const changes: AlertChange[] = [];
    for (let s = 0; s < 60; s++) {
      const ms = T0 + s * SECOND_MS;
      changes.push(...alerts.record("b.api", 99, false, ms));
      changes.push(...alerts.record("a.api", 99, true, ms));
      if (s >= 30) changes.push(...alerts.record("c.api", 99.9, true, ms));
    }
    expect(changes.map((c) => [c.dependency, c.kind, secondOf(c)])).toEqual([
      ["a.api", "raised", 19],
      ["c.api", "raised", 49],
    ]);
    expect(alerts.active()).toEqual(["a.api", "c.api"]);

    alerts.forget("a.api");
    expect(alerts.active()).toEqual(["c.api"]);
    // Forgotten counts are gone: a.api needs minimumCalls again before it raises.
    const again = traffic(alerts, 99, 60, 100, always, "a.api");
    expect(again.map((c) => [c.dependency, secondOf(c)])).toEqual([["a.api", 79]]);
    expect(alerts.active()).toEqual(["a.api", "c.api"]);
  });
});
