/**
 * A count-based sliding window of call outcomes: the last `size` counted outcomes, each a
 * success or a failure and each fast or slow, with the counts kept up to date in O(1) per
 * outcome and no allocation.
 */
import type { SlidingWindow, WindowShape } from "./sliding-window.ts";

const FAILED = 1;
const SLOW = 2;

export class OutcomeWindow implements SlidingWindow {
  readonly shape: WindowShape;
  /** Per outcome: bit 0 failure, bit 1 slow. */
  private bits: Uint8Array;
  private head = 0;
  private filled = 0;
  private failed = 0;
  private slowed = 0;

  constructor(readonly size: number) {
    this.bits = new Uint8Array(size);
    this.shape = { kind: "count", size };
  }

  /** Outcomes in the window. */
  get calls(): number {
    return this.filled;
  }

  /** Failures in the window. */
  get failures(): number {
    return this.failed;
  }

  /** Slow outcomes in the window. */
  get slowCalls(): number {
    return this.slowed;
  }

  /** Failure rate in percent; 0 for an empty window. */
  get failureRatePercent(): number {
    return this.filled === 0 ? 0 : (this.failed * 100) / this.filled;
  }

  /** Slow-call rate in percent; 0 for an empty window. */
  get slowCallRatePercent(): number {
    return this.filled === 0 ? 0 : (this.slowed * 100) / this.filled;
  }

  /** Adds one outcome, evicting the oldest once the window is full. */
  push(failure: boolean, slow = false, _nowMs = 0): void {
    this.pushBits((failure ? FAILED : 0) | (slow ? SLOW : 0));
  }

  /** A count window holds the last `size` outcomes whatever their age. */
  advance(_nowMs: number): void {}

  private pushBits(bits: number): void {
    if (this.filled === this.size) {
      const old = this.bits[this.head]!;
      this.failed -= old & FAILED;
      this.slowed -= (old & SLOW) >> 1;
    } else {
      this.filled++;
    }
    this.bits[this.head] = bits;
    this.failed += bits & FAILED;
    this.slowed += (bits & SLOW) >> 1;
    this.head = (this.head + 1) % this.size;
  }

  clear(): void {
    this.bits.fill(0);
    this.head = 0;
    this.filled = 0;
    this.failed = 0;
    this.slowed = 0;
  }

  /**
   * Outcomes oldest first, one digit each: '0' fast success, '1' fast failure, '2' slow success,
   * '3' slow failure: the stored form (files written before slow calls were kept hold only '0'
   * and '1', which read back the same).
   */
  serialize(): string {
    let out = "";
    const start = (this.head - this.filled + this.size) % this.size;
    for (let i = 0; i < this.filled; i++) out += String(this.bits[(start + i) % this.size]);
    return out;
  }

  /** Rebuilds a window of `size` from serialize()'s form, keeping the newest outcomes. */
  static deserialize(size: number, stored: string): OutcomeWindow {
    const window = new OutcomeWindow(size);
    for (const ch of stored.slice(-size)) window.pushBits((ch.charCodeAt(0) - 48) & 3);
    return window;
  }

  /** The same outcomes in a window of another size (newest kept when it shrinks). */
  resized(size: number): OutcomeWindow {
    return size === this.size ? this : OutcomeWindow.deserialize(size, this.serialize());
  }
}
