import { describe, expect, it } from "vitest";
import { AttemptTimeouts, Timed } from "./attempt-timeouts.ts";

class Probe extends Timed {
  firedAtMs: number | undefined;

  constructor(private readonly onFire?: () => void) {
    super();
  }

  timedOut(): void {
    this.firedAtMs = performance.now();
    this.onFire?.();
  }
}

const until = async (done: () => boolean, limitMs = 2_000): Promise<void> => {
  const startedMs = performance.now();
  while (!done()) {
    if (performance.now() - startedMs > limitMs) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
};

describe("AttemptTimeouts", () => {
  it("fires each timeout at or after its time, whatever the order of durations", async () => {
    const timeouts = new AttemptTimeouts();
    const nowMs = performance.now();
    const long = new Probe();
    const short = new Probe();
    const middle = new Probe();
    timeouts.add(long, 60, nowMs);
    timeouts.add(short, 10, nowMs);
    timeouts.add(middle, 30, nowMs);
    await until(() => long.firedAtMs !== undefined);
    for (const [probe, ms] of [
      [short, 10],
      [middle, 30],
      [long, 60],
    ] as const) {
      expect(probe.firedAtMs).toBeGreaterThanOrEqual(nowMs + ms);
    }
    expect(short.firedAtMs!).toBeLessThanOrEqual(middle.firedAtMs!);
    expect(middle.firedAtMs!).toBeLessThanOrEqual(long.firedAtMs!);
  });

  it("never fires a removed timeout, and fires the others of its list", async () => {
    const timeouts = new AttemptTimeouts();
    const nowMs = performance.now();
    const removed = new Probe();
    const kept = new Probe();
    timeouts.add(removed, 15, nowMs);
    timeouts.add(kept, 15, nowMs + 1);
    timeouts.remove(removed);
    timeouts.remove(removed);
    await until(() => kept.firedAtMs !== undefined);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(removed.firedAtMs).toBeUndefined();
    expect(removed.timeoutList).toBeUndefined();
  });

  it("fires a shorter timeout added after a longer one was armed", async () => {
    const timeouts = new AttemptTimeouts();
    const long = new Probe();
    const short = new Probe();
    timeouts.add(long, 5_000, performance.now());
    const addedMs = performance.now();
    timeouts.add(short, 10, addedMs);
    await until(() => short.firedAtMs !== undefined);
    expect(short.firedAtMs! - addedMs).toBeGreaterThanOrEqual(10);
    expect(long.firedAtMs).toBeUndefined();
    timeouts.remove(long);
  });

  it("keeps firing when a timed-out entry adds another from its callback", async () => {
    const timeouts = new AttemptTimeouts();
    const second = new Probe();
    const first = new Probe(() => timeouts.add(second, 5, performance.now()));
    timeouts.add(first, 5, performance.now());
    await until(() => second.firedAtMs !== undefined);
    expect(second.firedAtMs!).toBeGreaterThanOrEqual(first.firedAtMs! + 5);
  });
});
