/**
 * Per-attempt timeouts on one shared timer. A Node timer per attempt costs about as much as the
 * rest of a guarded call on the fast path (setTimeout and clearTimeout together ~300 ns: a Timeout
 * object, an async id, and, when a duration's list empties, a priority-queue removal that the
 * next attempt adds back). Here an attempt is linked into a list of attempts with the same
 * duration (so each list is ordered by due time), unlinked in O(1) when it ends, and one timer is
 * armed for the earliest due time; while the earliest attempt ends before it, the timer is left
 * alone and fires once to re-arm. A timeout fires no earlier than its time and, like setTimeout,
 * within about a millisecond after it (later when the event loop is busy).
 */

// Imported rather than read from the global, whose lazy getter runs on every read.
import { performance } from "node:perf_hooks";

/** Something with a timeout: `timedOut()` is called once its time has come, unless removed. */
export abstract class Timed {
  /** Monotonic time (performance.now()) at which it times out. */
  dueAtMs = 0;
  /** The list it is in while its timeout is pending. */
  timeoutList: TimeoutList | undefined = undefined;
  timeoutPrev: Timed | undefined = undefined;
  timeoutNext: Timed | undefined = undefined;

  abstract timedOut(): void;
}

/** The pending timeouts of one duration, oldest (so due first) at the head. */
class TimeoutList {
  head: Timed | undefined;
  tail: Timed | undefined;

  push(t: Timed): void {
    t.timeoutList = this;
    t.timeoutPrev = this.tail;
    t.timeoutNext = undefined;
    if (this.tail === undefined) this.head = t;
    else this.tail.timeoutNext = t;
    this.tail = t;
  }

  unlink(t: Timed): void {
    const { timeoutPrev: prev, timeoutNext: next } = t;
    if (prev === undefined) this.head = next;
    else prev.timeoutNext = next;
    if (next === undefined) this.tail = prev;
    else next.timeoutPrev = prev;
    t.timeoutList = undefined;
    t.timeoutPrev = undefined;
    t.timeoutNext = undefined;
  }
}

/**
 * The pending timeouts of a process's attempts. Known shortcoming: a list emptied by attempts that
 * ended in time stays in the map until the timer next fires (at most one per distinct duration
 * in whole ms, so a few thousand small objects at worst).
 */
export class AttemptTimeouts {
  /** One list per duration in ms; an empty list is dropped when the timer next fires. */
  private readonly lists = new Map<number, TimeoutList>();
  private timer: NodeJS.Timeout | undefined;
  /** When the armed timer is due (monotonic ms); Infinity when none is armed. */
  private timerDueAtMs = Number.POSITIVE_INFINITY;
  private pending = 0;

  /**
   * Calls `t.timedOut()` `timeoutMs` after `nowMs` (performance.now(), read by the caller) unless
   * `remove(t)` comes first. `timeoutMs` should be a whole number of milliseconds: lists are kept
   * per duration.
   */
  add(t: Timed, timeoutMs: number, nowMs: number): void {
    let list = this.lists.get(timeoutMs);
    if (list === undefined) {
      list = new TimeoutList();
      this.lists.set(timeoutMs, list);
    }
    t.dueAtMs = nowMs + timeoutMs;
    list.push(t);
    // A pending timeout keeps the process alive, as its own timer would; an idle one does not.
    if (this.pending++ === 0) this.timer?.ref();
    if (t.dueAtMs < this.timerDueAtMs) this.arm(t.dueAtMs, nowMs);
  }

  /** Cancels a pending timeout; does nothing when there is none. */
  remove(t: Timed): void {
    const list = t.timeoutList;
    if (list === undefined) return;
    list.unlink(t);
    if (--this.pending === 0) this.timer?.unref();
  }

  private arm(dueAtMs: number, nowMs: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerDueAtMs = dueAtMs;
    this.timer = setTimeout(this.fire, Math.max(1, Math.ceil(dueAtMs - nowMs)));
    if (this.pending === 0) this.timer.unref();
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.timerDueAtMs = Number.POSITIVE_INFINITY;
    const nowMs = performance.now();
    // Collected first: a timed-out attempt's abort listeners may start attempts of their own.
    const due: Timed[] = [];
    let nextDueAtMs = Number.POSITIVE_INFINITY;
    for (const [timeoutMs, list] of this.lists) {
      let t = list.head;
      while (t !== undefined && t.dueAtMs <= nowMs) {
        this.remove(t);
        due.push(t);
        t = list.head;
      }
      if (t === undefined) this.lists.delete(timeoutMs);
      else if (t.dueAtMs < nextDueAtMs) nextDueAtMs = t.dueAtMs;
    }
    if (nextDueAtMs < this.timerDueAtMs) this.arm(nextDueAtMs, nowMs);
    for (const t of due) t.timedOut();
  };
}

/** The timeouts of every attempt in this process. */
export const attemptTimeouts = new AttemptTimeouts();
