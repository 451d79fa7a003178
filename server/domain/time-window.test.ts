import { describe, expect, it } from "vitest";
import { reshapeWindow } from "./sliding-window.ts";
import { TimeWindow } from "./time-window.ts";

/** A whole second, so bucket boundaries are easy to see. */
const T0 = 1_700_000_000_000;

function counts(w: TimeWindow): [number, number, number] {
  return [w.calls, w.failures, w.slowCalls];
}

describe("TimeWindow", () => {
  it("starts empty with rates of 0", () => {
    const w = new TimeWindow(10_000);
    expect(counts(w)).toEqual([0, 0, 0]);
    expect([w.failureRatePercent, w.slowCallRatePercent]).toEqual([0, 0]);
    expect(w.serialize()).toBe("");
    expect(w.shape).toEqual({ kind: "time", durationMs: 10_000 });
  });

  it("counts calls, failures and slow calls with their rates", () => {
    const w = new TimeWindow(10_000);
    w.push(true, false, T0);
    w.push(false, true, T0 + 300);
    w.push(true, true, T0 + 1_200);
    w.push(false, false, T0 + 2_900);
    expect(counts(w)).toEqual([4, 2, 2]);
    expect(w.failureRatePercent).toBe(50);
    expect(w.slowCallRatePercent).toBe(50);
  });

  it("lets a second's outcomes fall out once the window has moved past it", () => {
    const w = new TimeWindow(3_000);
    w.push(true, false, T0); // second 0
    w.push(true, false, T0 + 1_000); // second 1
    w.push(false, false, T0 + 2_999); // second 2
    expect(counts(w)).toEqual([3, 2, 0]);
    // Second 3 begins: second 0 leaves whole.
    w.advance(T0 + 3_000);
    expect(counts(w)).toEqual([2, 1, 0]);
    w.advance(T0 + 4_500);
    expect(counts(w)).toEqual([1, 0, 0]);
    w.advance(T0 + 5_000);
    expect(counts(w)).toEqual([0, 0, 0]);
  });

  it("empties entirely after a pause longer than the window", () => {
    const w = new TimeWindow(5_000);
    for (let i = 0; i < 5; i++) w.push(true, true, T0 + i * 1_000);
    w.push(false, false, T0 + 60_000);
    expect(counts(w)).toEqual([1, 0, 0]);
  });

  it("counts outcomes with a clock that went back into the newest second", () => {
    const w = new TimeWindow(2_000);
    w.push(true, false, T0 + 5_000);
    w.push(true, false, T0 + 1_000);
    expect(counts(w)).toEqual([2, 2, 0]);
    w.advance(T0 + 7_000);
    expect(counts(w)).toEqual([0, 0, 0]);
  });

  it("clear() empties it and it fills again", () => {
    const w = new TimeWindow(2_000);
    w.push(true, true, T0);
    w.clear();
    expect(counts(w)).toEqual([0, 0, 0]);
    w.push(false, true, T0 + 10);
    expect(counts(w)).toEqual([1, 0, 1]);
  });

  describe("serialize / deserialize", () => {
    it("round-trips the buckets and keeps ageing them on the same clock", () => {
      const w = new TimeWindow(4_000);
      w.push(true, false, T0);
      w.push(false, true, T0 + 1_500);
      w.push(true, true, T0 + 3_100);
      const restored = TimeWindow.deserialize(4_000, w.serialize());
      expect(counts(restored)).toEqual(counts(w));
      expect(restored.serialize()).toBe(w.serialize());
      w.advance(T0 + 5_000);
      restored.advance(T0 + 5_000);
      expect(counts(restored)).toEqual(counts(w));
      expect(counts(restored)).toEqual([1, 1, 1]);
    });

    it("keeps only the buckets that fit a shorter window", () => {
      const w = new TimeWindow(10_000);
      w.push(true, false, T0);
      w.push(false, false, T0 + 8_000);
      w.push(false, true, T0 + 9_000);
      const shorter = TimeWindow.deserialize(3_000, w.serialize());
      expect(counts(shorter)).toEqual([2, 0, 1]);
    });

    it("starts empty from a form it cannot read", () => {
      for (const stored of ["", "0101", "x;1:2/3/4", "5;0:1/2/0", "-3;0:1/0/0"]) {
        const w = TimeWindow.deserialize(5_000, stored);
        expect(w.failures <= w.calls, stored).toBe(true);
        if (stored !== "5;0:1/2/0") expect(counts(w), stored).toEqual([0, 0, 0]);
      }
    });
  });

  it("changes shape keeping the outcomes, and starts empty when the kind changes", () => {
    const w = new TimeWindow(5_000);
    w.push(true, false, T0);
    w.push(true, false, T0 + 4_000);
    expect(reshapeWindow(w, { kind: "time", durationMs: 5_000 })).toBe(w);
    const longer = reshapeWindow(w, { kind: "time", durationMs: 60_000 });
    expect([longer.calls, longer.failures]).toEqual([2, 2]);
    const counted = reshapeWindow(w, { kind: "count", size: 10 });
    expect(counted.shape).toEqual({ kind: "count", size: 10 });
    expect(counted.calls).toBe(0);
  });
});
