/**
 * A count-based sliding window of call outcomes: the last `size` counted outcomes, each a
 * success or a failure, with the failure count kept up to date in O(1) per outcome.
 */
export class OutcomeWindow {
  private bits: Uint8Array;
  private head = 0;
  private filled = 0;
  private failed = 0;

  constructor(readonly size: number) {
    this.bits = new Uint8Array(size);
  }

  /** Outcomes in the window. */
  get calls(): number {
    return this.filled;
  }

  /** Failures in the window. */
  get failures(): number {
    return this.failed;
  }

  /** Failure rate in percent; 0 for an empty window. */
  get failureRatePercent(): number {
    return this.filled === 0 ? 0 : (this.failed * 100) / this.filled;
  }

  /** Adds one outcome, evicting the oldest once the window is full. */
  push(failure: boolean): void {
    const bit = failure ? 1 : 0;
    if (this.filled === this.size) {
      this.failed -= this.bits[this.head]!;
    } else {
      this.filled++;
    }
    this.bits[this.head] = bit;
    this.failed += bit;
    this.head = (this.head + 1) % this.size;
  }

  clear(): void {
    this.bits.fill(0);
    this.head = 0;
    this.filled = 0;
    this.failed = 0;
  }

  /** Outcomes oldest first, as '0' (success) and '1' (failure): the stored form. */
  serialize(): string {
    let out = "";
    const start = (this.head - this.filled + this.size) % this.size;
    for (let i = 0; i < this.filled; i++) out += this.bits[(start + i) % this.size] ? "1" : "0";
    return out;
  }

  /** Rebuilds a window of `size` from serialize()'s form, keeping the newest outcomes. */
  static deserialize(size: number, stored: string): OutcomeWindow {
    const window = new OutcomeWindow(size);
    for (const ch of stored.slice(-size)) window.push(ch === "1");
    return window;
  }

  /** The same outcomes in a window of another size (newest kept when it shrinks). */
  resized(size: number): OutcomeWindow {
    return size === this.size ? this : OutcomeWindow.deserialize(size, this.serialize());
  }
}
