import { describe, expect, it } from "vitest";
import { OutcomeWindow } from "./outcome-window.ts";

/** Pushes outcomes written as in the stored form: '1' a failure, '0' a success. */
function pushAll(window: OutcomeWindow, outcomes: string): OutcomeWindow {
  for (const ch of outcomes) window.push(ch === "1");
  return window;
}

describe("OutcomeWindow", () => {
  it("starts empty with a failure rate of 0", () => {
    const window = new OutcomeWindow(5);
    expect(window.calls).toBe(0);
    expect(window.failures).toBe(0);
    expect(window.failureRatePercent).toBe(0);
    expect(window.serialize()).toBe("");
  });

  it("counts outcomes until full, then evicts the oldest", () => {
    const window = pushAll(new OutcomeWindow(3), "101");
    expect([window.calls, window.failures]).toEqual([3, 2]);

    window.push(false); // evicts the first failure
    expect([window.calls, window.failures]).toEqual([3, 1]);
    window.push(false); // evicts the success
    expect([window.calls, window.failures]).toEqual([3, 1]);
    window.push(false); // evicts the second failure
    expect([window.calls, window.failures]).toEqual([3, 0]);
    window.push(true);
    expect([window.calls, window.failures]).toEqual([3, 1]);
    expect(window.serialize()).toBe("001");
  });

  it("works with a window of one outcome", () => {
    const window = new OutcomeWindow(1);
    window.push(true);
    expect([window.calls, window.failures]).toEqual([1, 1]);
    window.push(false);
    expect([window.calls, window.failures]).toEqual([1, 0]);
  });

  it("reports the failure rate in percent of the outcomes held", () => {
    const window = pushAll(new OutcomeWindow(10), "100");
    expect(window.failureRatePercent).toBeCloseTo(100 / 3, 10);
    pushAll(window, "1");
    expect(window.failureRatePercent).toBe(50);
    pushAll(window, "111111");
    expect(window.failureRatePercent).toBe(80);
  });

  it("clear() empties the window", () => {
    const window = pushAll(new OutcomeWindow(4), "110011");
    window.clear();
    expect([window.calls, window.failures, window.failureRatePercent]).toEqual([0, 0, 0]);
    expect(window.serialize()).toBe("");
    pushAll(window, "10");
    expect(window.serialize()).toBe("10");
  });

  describe("serialize / deserialize", () => {
    it("writes outcomes oldest first", () => {
      expect(pushAll(new OutcomeWindow(8), "1100").serialize()).toBe("1100");
    });

    it("writes the held outcomes oldest first after the ring wrapped around", () => {
      const window = pushAll(new OutcomeWindow(4), "100110");
      expect(window.serialize()).toBe("0110");
    });

    it("round-trips a partly filled window", () => {
      const window = pushAll(new OutcomeWindow(6), "101");
      const restored = OutcomeWindow.deserialize(6, window.serialize());
      expect(restored.serialize()).toBe("101");
      expect([restored.calls, restored.failures]).toEqual([3, 2]);
    });

    it("round-trips a wrapped window and keeps evicting in the right order", () => {
      const window = pushAll(new OutcomeWindow(4), "1110001");
      const restored = OutcomeWindow.deserialize(4, window.serialize());
      expect(restored.serialize()).toBe(window.serialize());
      expect([restored.calls, restored.failures]).toEqual([window.calls, window.failures]);

      // The same pushes on both must keep them identical.
      pushAll(window, "00");
      pushAll(restored, "00");
      expect(restored.serialize()).toBe(window.serialize());
      expect(restored.serialize()).toBe("0100");
      expect(restored.failures).toBe(1);
    });

    it("keeps only the newest outcomes when the stored form is longer than the window", () => {
      const restored = OutcomeWindow.deserialize(3, "11000");
      expect(restored.serialize()).toBe("000");
      expect([restored.calls, restored.failures]).toEqual([3, 0]);
    });

    it("restores an empty window from an empty string", () => {
      const restored = OutcomeWindow.deserialize(3, "");
      expect([restored.calls, restored.failures]).toEqual([0, 0]);
    });
  });

  describe("resized", () => {
    it("returns the same window when the size does not change", () => {
      const window = pushAll(new OutcomeWindow(4), "10");
      expect(window.resized(4)).toBe(window);
    });

    it("keeps the newest outcomes when shrinking", () => {
      const window = pushAll(new OutcomeWindow(6), "111000");
      const smaller = window.resized(4);
      expect(smaller.size).toBe(4);
      expect(smaller.serialize()).toBe("1000");
      expect([smaller.calls, smaller.failures]).toEqual([4, 1]);
      // The original is left as it was.
      expect(window.serialize()).toBe("111000");
    });

    it("keeps every outcome when growing, and then holds more", () => {
      const window = pushAll(new OutcomeWindow(3), "01101"); // holds "101"
      const larger = window.resized(5);
      expect(larger.serialize()).toBe("101");
      pushAll(larger, "111");
      expect(larger.serialize()).toBe("01111");
      expect([larger.calls, larger.failures]).toEqual([5, 4]);
    });
  });
});

describe("OutcomeWindow: slow calls", () => {
  it("counts slow outcomes and their rate, evicting them with their outcome", () => {
    const window = new OutcomeWindow(3);
    window.push(false, true);
    window.push(true, true);
    window.push(false, false);
    expect([window.calls, window.failures, window.slowCalls]).toEqual([3, 1, 2]);
    expect(window.slowCallRatePercent).toBeCloseTo(200 / 3, 10);
    window.push(false, false); // evicts the first slow success
    expect([window.calls, window.failures, window.slowCalls]).toEqual([3, 1, 1]);
  });

  it("stores slow outcomes as '2' and '3' and reads the older '0'/'1' form the same", () => {
    const window = new OutcomeWindow(5);
    window.push(false, true);
    window.push(true, true);
    window.push(true, false);
    expect(window.serialize()).toBe("231");
    const restored = OutcomeWindow.deserialize(5, window.serialize());
    expect([restored.calls, restored.failures, restored.slowCalls]).toEqual([3, 2, 2]);
    const legacy = OutcomeWindow.deserialize(5, "0110");
    expect([legacy.calls, legacy.failures, legacy.slowCalls]).toEqual([4, 2, 0]);
  });
});
