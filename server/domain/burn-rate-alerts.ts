/**
 * Error-budget burn-rate alerts per dependency over a short and a long window. Pure: outcomes and
 * the time go in, alert changes come out; the caller owns the timer that calls evaluate(), and
 * publishing. The burn rate is how many times faster than "exactly on budget" failures spend the
 * error budget. A long window alone reacts late and stays raised long after recovery; a short one
 * alone fires on every blip. Raising only when both reach the threshold, and clearing as soon as
 * the short one is back under it, gives a signal both stable and quick to reset.
 */

/** Five minutes: holds hundreds of a busy dependency's calls, and clears minutes after recovery. */
export const DEFAULT_SHORT_WINDOW_MS = 5 * 60_000;
/** One hour: a burn must last a good part of an hour before it pages, so brief spikes never do. */
export const DEFAULT_LONG_WINDOW_MS = 60 * 60_000;
/**
 * At 14.4 times the sustainable rate a 30-day budget (720 h) lasts 50 hours, so one hour of it
 * spends 2 % of the month's budget: fast enough that someone should look now, not next week.
 */
export const DEFAULT_BURN_RATE_THRESHOLD = 14.4;
/** Under 20 calls one failure moves the failure rate by over 5 points: noise, not a trend. */
export const DEFAULT_ALERT_MINIMUM_CALLS = 20;
/** Ten seconds: window edges move in steps small beside five minutes; an hour costs 360 buckets. */
export const DEFAULT_BUCKET_MS = 10_000;
/** Bounds memory per dependency (two counters per bucket) and the catch-up work after a pause. */
export const MAX_BUCKETS = 10_000;

const DAY_MS = 86_400_000;
/**
 * A burn rate this close below the threshold still reaches it: budgets such as 1 - 0.999 are not
 * exact in binary floating point, and a rate exactly on the threshold must not miss by rounding.
 */
const RELATIVE_TOLERANCE = 1e-9;

export interface BurnRateOptions {
  /** The window that raises quickly and clears quickly, in ms. Default 5 min. */
  shortWindowMs: number;
  /** The window that proves the burn is sustained, in ms. Default 1 h. */
  longWindowMs: number;
  /** Burn rate both windows must reach to raise; the short one to stay raised. Default 14.4. */
  burnRateThreshold: number;
  /**
   * Counted calls each window must hold before its burn rate is trusted. Default 20. One failure
   * in n calls burns 1 / (n * budget), so with the defaults a single failure among 20 calls does
   * reach the threshold for targets above 99.65 %; raise minimumCalls for such targets.
   */
  minimumCalls: number;
  /**
   * Width of the time buckets counts are kept in, in ms; divides both windows. Default 10 s.
   * Memory per dependency is longWindowMs / bucketMs buckets. A window is the current bucket and
   * the ones before it, so it reaches back between windowMs - bucketMs and windowMs.
   */
  bucketMs: number;
}

/** One window's figures at the moment of a change. */
export interface WindowFigures {
  windowMs: number;
  /** Counted calls (successes and failures) in the window. */
  calls: number;
  failures: number;
  /** (failures / calls) / budget; Infinity when the budget is zero and a call failed. */
  burnRate: number;
}

/** An alert raised or cleared for one dependency, with the figures that decided it. */
export interface AlertChange {
  kind: "raised" | "cleared";
  dependency: string;
  atMs: number;
  reason: string;
  short: WindowFigures;
  long: WindowFigures;
  threshold: number;
  /** The error budget as a fraction of calls, e.g. 0.001 for a 99.9 % target. */
  budget: number;
}

/** Throws a RangeError naming the option unless `value` is a multiple of `step` in [min, max]. */
function checkInteger(name: string, value: number, min: number, max: number, step = 1): void {
  if (!Number.isInteger(value) || value % step !== 0 || value < min || value > max) {
    const what = step === 1 ? "an integer" : `a multiple of bucketMs (${step})`;
    throw new RangeError(`options.${name} must be ${what} in [${min}, ${max}]; got ${value}`);
  }
}

/** Fills in defaults into a new object; a RangeError names the bad option, its value and range. */
export function normalizeBurnRateOptions(options: Partial<BurnRateOptions> = {}): BurnRateOptions {
  const bucketMs = options.bucketMs ?? DEFAULT_BUCKET_MS;
  const longWindowMs = options.longWindowMs ?? DEFAULT_LONG_WINDOW_MS;
  const shortWindowMs = options.shortWindowMs ?? DEFAULT_SHORT_WINDOW_MS;
  const burnRateThreshold = options.burnRateThreshold ?? DEFAULT_BURN_RATE_THRESHOLD;
  const minimumCalls = options.minimumCalls ?? DEFAULT_ALERT_MINIMUM_CALLS;
  checkInteger("bucketMs", bucketMs, 1, DAY_MS);
  checkInteger("longWindowMs", longWindowMs, 2 * bucketMs, MAX_BUCKETS * bucketMs, bucketMs);
  checkInteger("shortWindowMs", shortWindowMs, bucketMs, longWindowMs - bucketMs, bucketMs);
  checkInteger("minimumCalls", minimumCalls, 1, 1_000_000_000);
  if (!Number.isFinite(burnRateThreshold) || burnRateThreshold <= 0) {
    const got = burnRateThreshold;
    throw new RangeError(`options.burnRateThreshold must be a finite number > 0; got ${got}`);
  }
  return { shortWindowMs, longWindowMs, burnRateThreshold, minimumCalls, bucketMs };
}

/**
 * The error budget of an availability target: the fraction of calls allowed to fail. A 100 %
 * target gives a zero budget, against which any failure burns infinitely fast (burnRate is
 * Infinity, which JSON writes as null); with no failure the burn rate is 0.
 */
export function errorBudget(availabilityTargetPercent: number): number {
  const target = availabilityTargetPercent;
  if (!(target >= 0 && target <= 100)) {
    throw new RangeError(`availabilityTargetPercent must be a number in [0, 100]; got ${target}`);
  }
  // Subtracting first keeps whole-number targets exact: 99 gives exactly 0.01.
  return (100 - target) / 100;
}

function burnRate(failures: number, calls: number, budget: number): number {
  if (failures === 0) return 0;
  return budget === 0 ? Number.POSITIVE_INFINITY : failures / calls / budget;
}

function figures(windowMs: number, calls: number, failures: number, budget: number): WindowFigures {
  return { windowMs, calls, failures, burnRate: burnRate(failures, calls, budget) };
}

function rateText(rate: number): string {
  return Number.isFinite(rate) ? rate.toFixed(2) : "infinite";
}

function spanText(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000} min` : `${ms / 1000} s`;
}

/** One dependency's counts and alert. */
class DependencyState {
  /** From the latest outcome's target; it applies to the whole window. */
  budget = 0;
  /** Per-bucket counts; bucket k lives in slot k mod the long window's bucket count. */
  readonly calls: Uint32Array;
  readonly failures: Uint32Array;
  newestBucket: number;
  shortCalls = 0;
  shortFailures = 0;
  longCalls = 0;
  longFailures = 0;
  raised = false;
  /** While raised: when the short window fell under minimumCalls; undefined otherwise. */
  quietSinceMs: number | undefined = undefined;

  constructor(buckets: number, newestBucket: number) {
    this.calls = new Uint32Array(buckets);
    this.failures = new Uint32Array(buckets);
    this.newestBucket = newestBucket;
  }
}

/**
 * Raises an alert for a dependency when the burn rate over both windows reaches the threshold,
 * each window holding at least minimumCalls; clears it when the short window's burn rate drops
 * under the threshold, or when the short window has held fewer than minimumCalls calls for a
 * whole short window (traffic stopped). Changes are edge-triggered: one per raise or clear.
 *
 * Known limit: there is no hysteresis, so a short-window burn hovering at the threshold can
 * raise and clear repeatedly; a lower clearing threshold would fix it.
 */
export class BurnRateAlerts {
  readonly options: BurnRateOptions;
  private readonly longBuckets: number;
  private readonly shortBuckets: number;
  private readonly shortSpan: string;
  private readonly longSpan: string;
  private readonly states = new Map<string, DependencyState>();

  constructor(options: Partial<BurnRateOptions> = {}) {
    const o = normalizeBurnRateOptions(options);
    this.options = o;
    this.longBuckets = o.longWindowMs / o.bucketMs;
    this.shortBuckets = o.shortWindowMs / o.bucketMs;
    this.shortSpan = spanText(o.shortWindowMs);
    this.longSpan = spanText(o.longWindowMs);
  }

  /**
   * Counts one outcome (failure true for failures and timeouts; uncounted results are not passed
   * in) and returns the change it caused, if any. O(1) amortized: the running sums are adjusted
   * as buckets leave the windows. An outcome older than the newest one seen still lands in its own
   * bucket; one older than the long window is dropped.
   */
  record(
    dependency: string,
    availabilityTargetPercent: number,
    failure: boolean,
    nowMs: number,
  ): AlertChange[] {
    const budget = errorBudget(availabilityTargetPercent);
    const bucket = Math.floor(nowMs / this.options.bucketMs);
    let state = this.states.get(dependency);
    if (state === undefined) {
      state = new DependencyState(this.longBuckets, bucket);
      this.states.set(dependency, state);
    }
    state.budget = budget;
    this.advance(state, bucket);

    const age = state.newestBucket - bucket;
    if (age < this.longBuckets) {
      const slot = this.slotOf(bucket);
      const failed = failure ? 1 : 0;
      state.calls[slot]! += 1;
      state.failures[slot]! += failed;
      state.longCalls += 1;
      state.longFailures += failed;
      if (age < this.shortBuckets) {
        state.shortCalls += 1;
        state.shortFailures += failed;
      }
    }
    const change = this.judge(dependency, state, nowMs);
    return change === undefined ? [] : [change];
  }

  /** Lets time pass without traffic: buckets leave the windows and alerts may clear (or raise). */
  evaluate(nowMs: number): AlertChange[] {
    const changes: AlertChange[] = [];
    const bucket = Math.floor(nowMs / this.options.bucketMs);
    for (const [dependency, state] of this.states) {
      this.advance(state, bucket);
      const change = this.judge(dependency, state, nowMs);
      if (change !== undefined) changes.push(change);
      // Nothing left to judge: the next outcome starts this dependency afresh.
      if (!state.raised && state.longCalls === 0) this.states.delete(dependency);
    }
    return changes;
  }

  /** Dependencies whose alert is raised, sorted. */
  active(): string[] {
    return [...this.states]
      .filter(([, state]) => state.raised)
      .map(([name]) => name)
      .sort();
  }

  /** Drops a dependency's counts and alert without an event (e.g. its policy was deleted). */
  forget(dependency: string): void {
    this.states.delete(dependency);
  }

  private slotOf(bucket: number): number {
    const slot = bucket % this.longBuckets;
    return slot < 0 ? slot + this.longBuckets : slot;
  }

  /** Moves the newest bucket up to `bucket`, taking what leaves each window out of its sums. */
  private advance(state: DependencyState, bucket: number): void {
    // After one long window every bucket has left both windows; further steps change nothing.
    const last = Math.min(bucket, state.newestBucket + this.longBuckets);
    for (let k = state.newestBucket + 1; k <= last; k++) {
      const leavingShort = this.slotOf(k - this.shortBuckets);
      state.shortCalls -= state.calls[leavingShort]!;
      state.shortFailures -= state.failures[leavingShort]!;
      // The bucket one long window older than k shares k's slot.
      const leavingLong = this.slotOf(k);
      state.longCalls -= state.calls[leavingLong]!;
      state.longFailures -= state.failures[leavingLong]!;
      state.calls[leavingLong] = 0;
      state.failures[leavingLong] = 0;
      const quiet = state.shortCalls < this.options.minimumCalls;
      if (state.raised && quiet && state.quietSinceMs === undefined) {
        state.quietSinceMs = k * this.options.bucketMs;
      }
    }
    state.newestBucket = Math.max(state.newestBucket, bucket);
  }

  private judge(dependency: string, s: DependencyState, nowMs: number): AlertChange | undefined {
    const { minimumCalls, shortWindowMs, longWindowMs } = this.options;
    const threshold = this.options.burnRateThreshold;
    const floor = threshold * (1 - RELATIVE_TOLERANCE);
    const shortRate = burnRate(s.shortFailures, s.shortCalls, s.budget);
    const span = this.shortSpan;
    let reason: string;
    if (!s.raised) {
      if (s.shortCalls < minimumCalls || s.longCalls < minimumCalls || shortRate < floor) return;
      const longRate = burnRate(s.longFailures, s.longCalls, s.budget);
      if (longRate < floor) return;
      reason =
        `burn rate ${rateText(shortRate)} over ${span} and ` +
        `${rateText(longRate)} over ${this.longSpan} reached ${threshold}`;
    } else if (s.shortCalls >= minimumCalls) {
      s.quietSinceMs = undefined;
      if (shortRate >= floor) return;
      reason = `burn rate over ${span} fell to ${rateText(shortRate)}`;
    } else {
      if (s.quietSinceMs === undefined || nowMs - s.quietSinceMs < shortWindowMs) return;
      reason = `traffic stopped: under ${minimumCalls} calls per ${span} for ${span}`;
    }
    s.raised = !s.raised;
    s.quietSinceMs = undefined;
    const kind = s.raised ? "raised" : "cleared";
    const short = figures(shortWindowMs, s.shortCalls, s.shortFailures, s.budget);
    const long = figures(longWindowMs, s.longCalls, s.longFailures, s.budget);
    return { kind, dependency, atMs: nowMs, reason, short, long, threshold, budget: s.budget };
  }
}
