/**
 * A time-based sliding window of call outcomes: the counted outcomes of the last `durationMs`,
 * kept in one-second buckets. Pushing an outcome and letting time pass are O(1) amortized and
 * allocate nothing; the window covers between `durationMs - 1000` and `durationMs` of history,
 * since the oldest bucket leaves whole.
 */
import type { SlidingWindow, WindowShape } from "./sliding-window.ts";

const SECOND_MS = 1_000;

export class TimeWindow implements SlidingWindow {
  readonly shape: WindowShape;
  private readonly seconds: number;
  private readonly bucketCalls: Uint32Array;
  private readonly bucketFailures: Uint32Array;
  private readonly bucketSlow: Uint32Array;
  /** The Unix second of the newest bucket; -1 while nothing was pushed or advanced. */
  private headSecond = -1;
  private totalCalls = 0;
  private totalFailures = 0;
  private totalSlow = 0;

  /** `durationMs` is a whole number of seconds, at least one (policy validation sees to it). */
  constructor(readonly durationMs: number) {
    this.seconds = Math.max(1, Math.floor(durationMs / SECOND_MS));
    this.bucketCalls = new Uint32Array(this.seconds);
    this.bucketFailures = new Uint32Array(this.seconds);
    this.bucketSlow = new Uint32Array(this.seconds);
    this.shape = { kind: "time", durationMs };
  }

  get calls(): number {
    return this.totalCalls;
  }

  get failures(): number {
    return this.totalFailures;
  }

  get slowCalls(): number {
    return this.totalSlow;
  }

  get failureRatePercent(): number {
    return this.totalCalls === 0 ? 0 : (this.totalFailures * 100) / this.totalCalls;
  }

  get slowCallRatePercent(): number {
    return this.totalCalls === 0 ? 0 : (this.totalSlow * 100) / this.totalCalls;
  }

  /**
   * Empties the buckets of the seconds between the newest bucket and `nowMs`. A clock that went
   * back leaves the window as it is: outcomes then count into the newest bucket.
   */
  advance(nowMs: number): void {
    const second = Math.floor(nowMs / SECOND_MS);
    if (second <= this.headSecond) return;
    if (this.headSecond < 0 || second - this.headSecond >= this.seconds) {
      this.clearCounts();
    } else {
      for (let s = this.headSecond + 1; s <= second; s++) this.evict(s % this.seconds);
    }
    this.headSecond = second;
  }

  push(failure: boolean, slow: boolean, nowMs: number): void {
    this.advance(nowMs);
    const i = this.headSecond % this.seconds;
    this.bucketCalls[i]!++;
    this.totalCalls++;
    if (failure) {
      this.bucketFailures[i]!++;
      this.totalFailures++;
    }
    if (slow) {
      this.bucketSlow[i]!++;
      this.totalSlow++;
    }
  }

  clear(): void {
    this.clearCounts();
    this.headSecond = -1;
  }

  private clearCounts(): void {
    this.bucketCalls.fill(0);
    this.bucketFailures.fill(0);
    this.bucketSlow.fill(0);
    this.totalCalls = 0;
    this.totalFailures = 0;
    this.totalSlow = 0;
  }

  private evict(i: number): void {
    this.totalCalls -= this.bucketCalls[i]!;
    this.totalFailures -= this.bucketFailures[i]!;
    this.totalSlow -= this.bucketSlow[i]!;
    this.bucketCalls[i] = 0;
    this.bucketFailures[i] = 0;
    this.bucketSlow[i] = 0;
  }

  /**
   * `head;age:calls/failures/slow;...`: the newest bucket's Unix second, then each non-empty
   * bucket by its age in seconds (0 = the newest). Empty window: the empty string.
   */
  serialize(): string {
    if (this.headSecond < 0 || this.totalCalls === 0) return "";
    let out = String(this.headSecond);
    for (let age = 0; age < this.seconds; age++) {
      const i = (this.headSecond - age) % this.seconds;
      const calls = this.bucketCalls[i]!;
      if (calls === 0) continue;
      out += `;${age}:${calls}/${this.bucketFailures[i]}/${this.bucketSlow[i]}`;
    }
    return out;
  }

  /**
   * Rebuilds a window of `durationMs` from serialize()'s form, keeping the buckets that fit.
   * Anything unreadable (a count window's form after the policy changed kind) starts empty.
   */
  static deserialize(durationMs: number, stored: string): TimeWindow {
    const window = new TimeWindow(durationMs);
    const [head, ...buckets] = stored.split(";");
    const headSecond = Number(head);
    if (stored === "" || !Number.isSafeInteger(headSecond) || headSecond < 0) return window;
    window.headSecond = headSecond;
    for (const bucket of buckets) {
      const m = /^(\d+):(\d+)\/(\d+)\/(\d+)$/.exec(bucket);
      if (m === null) continue;
      const [age, calls, failures, slow] = m.slice(1).map(Number) as [
        number,
        number,
        number,
        number,
      ];
      if (age >= window.seconds || failures > calls || slow > calls) continue;
      const i = (headSecond - age) % window.seconds;
      window.bucketCalls[i] = calls;
      window.bucketFailures[i] = failures;
      window.bucketSlow[i] = slow;
      window.totalCalls += calls;
      window.totalFailures += failures;
      window.totalSlow += slow;
    }
    return window;
  }
}
