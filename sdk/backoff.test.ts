import { describe, expect, it } from "vitest";
import { backoffMs } from "./backoff.ts";
import type { JitterMode, RetryPolicy } from "./policy.ts";

function retryPolicy(jitter: JitterMode, overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  return {
    maxAttempts: 6,
    initialBackoffMs: 100,
    maxBackoffMs: 1_000,
    backoffMultiplier: 2,
    jitter,
    maxRetryAfterMs: 30_000,
    ...overrides,
  };
}

/** A `random` that always returns `value`. */
const fixed = (value: number) => () => value;

const noRandom = () => {
  throw new Error("random() must not be called");
};

describe("backoffMs with no jitter", () => {
  it("grows by the multiplier from the initial back-off up to the cap", () => {
    const policy = retryPolicy("none");
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffMs(policy, n, 0, noRandom))).toEqual([
      100, 200, 400, 800, 1_000, 1_000,
    ]);
  });

  it("uses the policy's multiplier", () => {
    const policy = retryPolicy("none", { backoffMultiplier: 3 });
    expect([1, 2, 3, 4].map((n) => backoffMs(policy, n, 0, noRandom))).toEqual([
      100, 300, 900, 1_000,
    ]);
  });

  it("stays at the initial back-off with a multiplier of 1", () => {
    const policy = retryPolicy("none", { backoffMultiplier: 1 });
    expect(backoffMs(policy, 5, 0, noRandom)).toBe(100);
  });

  it("does not depend on the previous wait", () => {
    const policy = retryPolicy("none");
    expect(backoffMs(policy, 2, 900, noRandom)).toBe(200);
  });
});

describe("backoffMs with full jitter", () => {
  it("scales the capped exponential back-off by random()", () => {
    const policy = retryPolicy("full");
    expect([1, 2, 3, 4, 5].map((n) => backoffMs(policy, n, 0, fixed(0.5)))).toEqual([
      50, 100, 200, 400, 500,
    ]);
  });

  it("ranges from 0 to just under the capped back-off", () => {
    const policy = retryPolicy("full");
    expect(backoffMs(policy, 3, 0, fixed(0))).toBe(0);
    expect(backoffMs(policy, 3, 0, fixed(0.999_999))).toBe(399);
    expect(backoffMs(policy, 10, 0, fixed(0.999_999))).toBe(999);
  });

  it("returns whole milliseconds", () => {
    const policy = retryPolicy("full", { initialBackoffMs: 7 });
    expect(backoffMs(policy, 1, 0, fixed(0.5))).toBe(3);
  });
});

describe("backoffMs with decorrelated jitter", () => {
  it("starts at the initial back-off when there was no previous wait", () => {
    const policy = retryPolicy("decorrelated");
    expect(backoffMs(policy, 1, 0, fixed(0))).toBe(100);
    expect(backoffMs(policy, 1, 0, fixed(0.9))).toBe(100);
  });

  it("draws between the initial back-off and three times the previous wait", () => {
    const policy = retryPolicy("decorrelated");
    // [100, 600): 100 + 0.5 × 500
    expect(backoffMs(policy, 2, 200, fixed(0.5))).toBe(350);
    expect(backoffMs(policy, 2, 200, fixed(0))).toBe(100);
    expect(backoffMs(policy, 2, 200, fixed(0.999_999))).toBe(599);
  });

  it("grows from wait to wait and is capped", () => {
    const policy = retryPolicy("decorrelated");
    const waits: number[] = [];
    let previous = 0;
    for (let retry = 1; retry <= 6; retry++) {
      previous = backoffMs(policy, retry, previous, fixed(0.9));
      waits.push(previous);
    }
    // 100; 100 + 0.9 × 200 = 280; 100 + 0.9 × 740 = 766; then capped at 1 000.
    expect(waits).toEqual([100, 280, 766, 1_000, 1_000, 1_000]);
  });

  it("never exceeds the cap even when the previous wait did", () => {
    const policy = retryPolicy("decorrelated");
    expect(backoffMs(policy, 3, 5_000, fixed(0.999_999))).toBe(1_000);
  });
});
