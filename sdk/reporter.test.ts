import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type OutcomeFields, REPORT_BATCH_SIZE, REPORT_INTERVAL_MS, Reporter } from "./reporter.ts";

const outcome = (attempt: number) => ({ dependency: "dep", attempt }) as unknown as OutcomeFields;

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("Reporter", () => {
  it("sends a batch once it is full, or once its first outcome has waited the interval", async () => {
    const sent: number[] = [];
    const reporter = new Reporter(
      async (batch) => {
        sent.push(batch.length);
      },
      () => {},
    );
    for (let i = 0; i < REPORT_BATCH_SIZE + 3; i++) reporter.add(outcome(i));
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toEqual([REPORT_BATCH_SIZE, 3]);
    reporter.add(outcome(1));
    await vi.advanceTimersByTimeAsync(REPORT_INTERVAL_MS - 1);
    expect(sent).toEqual([REPORT_BATCH_SIZE, 3]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([REPORT_BATCH_SIZE, 3, 1]);
  });

  it("keeps at most its capacity, dropping and counting the oldest, and sends them on resume", async () => {
    let up = false;
    const sent: number[] = [];
    const drops: [number, number][] = [];
    const reporter = new Reporter(
      async (batch) => {
        if (!up) throw new Error("unreachable");
        sent.push(...batch.map((o) => o.attempt));
      },
      (count, total) => drops.push([count, total]),
      4,
    );
    reporter.add(outcome(1));
    await vi.advanceTimersByTimeAsync(REPORT_INTERVAL_MS);
    for (let i = 2; i <= 6; i++) reporter.add(outcome(i));
    expect(reporter.dropped).toBe(2);
    up = true;
    reporter.resume();
    await reporter.settle();
    expect(sent).toEqual([3, 4, 5, 6]);
    expect(drops).toEqual([[2, 2]]);
  });
});
