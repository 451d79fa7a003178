/**
 * The circuit breaker as pure logic: a breaker, a policy, an outcome or a request and the current
 * time go in; the breaker is updated and the transitions it went through come out. No I/O and no
 * timers: the caller owns the clock, persistence and publishing (domain/breaker-registry.ts), so
 * every rule here is tested with a fake clock.
 */
import { OutcomeWindow } from "./outcome-window.ts";
import type { PolicySpec } from "./policy.ts";

/**
 * A probe permit lapses this long after the policy's attempt timeout when no outcome returned it:
 * outcomes travel in batches, so the report of a probe that used its whole timeout arrives a
 * little after the timeout itself.
 */
export const PERMIT_GRACE_MS = 2_000;

export type BreakerStateName = "closed" | "open" | "half-open";

/** A probe permit granted in HALF_OPEN. */
export interface Permit {
  expiresAtMs: number;
  /** Returned by an outcome. */
  settled: boolean;
}

export type BreakerPhase =
  | { kind: "closed" }
  | { kind: "open"; untilMs: number }
  | { kind: "half-open"; permits: Map<string, Permit>; succeeded: number };

export interface Breaker {
  dependency: string;
  /** Empty unless the policy scopes breakers per calling service. */
  service: string;
  phase: BreakerPhase;
  window: OutcomeWindow;
  consecutiveFailures: number;
  /** Opens in a row without closing; the open wait grows with it. */
  consecutiveOpens: number;
  changedAtMs: number;
  reason: string;
  policyRevision: number;
}

export interface WindowFigures {
  calls: number;
  failures: number;
  failureRatePercent: number;
  consecutiveFailures: number;
}

export interface Transition {
  dependency: string;
  service: string;
  from: BreakerStateName;
  to: BreakerStateName;
  atMs: number;
  reason: string;
  window: WindowFigures;
  policyRevision: number;
  /** Set for transitions to OPEN; 0 otherwise. */
  openUntilMs: number;
}

/** What an outcome counts as in the window. */
export type CountedResult = "success" | "failure" | "timeout" | "not-counted";

export interface OutcomeInput {
  result: CountedResult;
  /** Set when the attempt was a HALF_OPEN probe. */
  permitId: string;
  /** Short error class for the transition reason, e.g. "http_503". */
  errorType: string;
}

export type AcquireDecision =
  | { kind: "allow" }
  | { kind: "reject"; retryAtMs: number }
  | { kind: "probe"; permitId: string; expiresAtMs: number };

export interface Effect {
  transitions: Transition[];
  /** The breaker's state (not only its window) changed and must be stored before answering. */
  stateChanged: boolean;
  /** The outcome was counted: it entered the window or decided a probe. */
  counted?: boolean;
}

export function createBreaker(
  dependency: string,
  service: string,
  policy: PolicySpec,
  nowMs: number,
): Breaker {
  return {
    dependency,
    service,
    phase: { kind: "closed" },
    window: new OutcomeWindow(policy.breaker.windowSize),
    consecutiveFailures: 0,
    consecutiveOpens: 0,
    changedAtMs: nowMs,
    reason: "created",
    policyRevision: policy.revision,
  };
}

export function figuresOf(breaker: Breaker): WindowFigures {
  return {
    calls: breaker.window.calls,
    failures: breaker.window.failures,
    failureRatePercent: breaker.window.failureRatePercent,
    consecutiveFailures: breaker.consecutiveFailures,
  };
}

/** The open wait after `opens` consecutive opens: grows by the multiplier up to the cap. */
export function openWaitMs(policy: PolicySpec, opens: number): number {
  const { openWaitMs: base, openWaitMultiplier, maxOpenWaitMs } = policy.breaker;
  return Math.min(maxOpenWaitMs, Math.round(base * openWaitMultiplier ** Math.max(0, opens - 1)));
}

function moveTo(
  breaker: Breaker,
  phase: BreakerPhase,
  nowMs: number,
  reason: string,
  figures: WindowFigures,
): Transition {
  const from = breaker.phase.kind;
  breaker.phase = phase;
  breaker.changedAtMs = nowMs;
  breaker.reason = reason;
  return {
    dependency: breaker.dependency,
    service: breaker.service,
    from,
    to: phase.kind,
    atMs: nowMs,
    reason,
    window: figures,
    policyRevision: breaker.policyRevision,
    openUntilMs: phase.kind === "open" ? phase.untilMs : 0,
  };
}

function open(breaker: Breaker, policy: PolicySpec, nowMs: number, reason: string): Transition {
  const figures = figuresOf(breaker);
  breaker.consecutiveOpens++;
  const untilMs = nowMs + openWaitMs(policy, breaker.consecutiveOpens);
  // The window starts afresh after the breaker closes again; the figures that opened it stay in
  // the transition.
  breaker.window.clear();
  breaker.consecutiveFailures = 0;
  return moveTo(breaker, { kind: "open", untilMs }, nowMs, reason, figures);
}

function close(breaker: Breaker, nowMs: number, reason: string): Transition {
  const figures = figuresOf(breaker);
  breaker.consecutiveOpens = 0;
  breaker.consecutiveFailures = 0;
  breaker.window.clear();
  return moveTo(breaker, { kind: "closed" }, nowMs, reason, figures);
}

/** Moves an OPEN breaker whose wait is over to HALF_OPEN. The server calls it from its timer. */
export function tick(breaker: Breaker, nowMs: number): Effect {
  if (breaker.phase.kind !== "open" || nowMs < breaker.phase.untilMs) {
    return { transitions: [], stateChanged: false };
  }
  const waitedMs = nowMs - breaker.changedAtMs;
  const transition = moveTo(
    breaker,
    { kind: "half-open", permits: new Map(), succeeded: 0 },
    nowMs,
    `open wait of ${waitedMs} ms elapsed`,
    figuresOf(breaker),
  );
  return { transitions: [transition], stateChanged: true };
}

/** Permits granted and neither returned nor lapsed. */
export function permitsInFlight(breaker: Breaker, nowMs: number): number {
  if (breaker.phase.kind !== "half-open") return 0;
  let n = 0;
  for (const permit of breaker.phase.permits.values()) {
    if (!permit.settled && permit.expiresAtMs > nowMs) n++;
  }
  return n;
}

/**
 * Decides whether one attempt may go out. `newPermitId` is used when a probe permit is granted.
 * An OPEN breaker whose wait is over moves to HALF_OPEN here too, so a late timer never rejects a
 * call that should have been a probe.
 */
export function acquire(
  breaker: Breaker,
  policy: PolicySpec,
  nowMs: number,
  newPermitId: string,
): { decision: AcquireDecision } & Effect {
  const effect = tick(breaker, nowMs);
  const phase = breaker.phase;
  switch (phase.kind) {
    case "closed":
      return { decision: { kind: "allow" }, ...effect };
    case "open":
      return { decision: { kind: "reject", retryAtMs: phase.untilMs }, ...effect };
    case "half-open": {
      const granted = permitsInFlight(breaker, nowMs) + phase.succeeded;
      if (granted >= policy.breaker.halfOpenPermits) {
        return { decision: { kind: "reject", retryAtMs: 0 }, ...effect };
      }
      // Returned and lapsed permits have no further use; dropping them bounds the map.
      for (const [id, permit] of phase.permits) {
        if (permit.settled || permit.expiresAtMs <= nowMs) phase.permits.delete(id);
      }
      const expiresAtMs = nowMs + policy.timeoutMs + PERMIT_GRACE_MS;
      phase.permits.set(newPermitId, { expiresAtMs, settled: false });
      return {
        decision: { kind: "probe", permitId: newPermitId, expiresAtMs },
        transitions: effect.transitions,
        stateChanged: true,
      };
    }
  }
}

function describeTrigger(breaker: Breaker, policy: PolicySpec): string | undefined {
  const { minimumCalls, failureRateThresholdPercent, consecutiveFailures } = policy.breaker;
  const w = breaker.window;
  if (w.calls < minimumCalls) return undefined;
  if (w.failureRatePercent >= failureRateThresholdPercent) {
    return (
      `failure rate ${w.failureRatePercent.toFixed(1)}% >= ${failureRateThresholdPercent}% ` +
      `over ${w.calls} calls`
    );
  }
  if (consecutiveFailures > 0 && breaker.consecutiveFailures >= consecutiveFailures) {
    return `${breaker.consecutiveFailures} consecutive failures >= ${consecutiveFailures}`;
  }
  return undefined;
}

/**
 * Counts one outcome. In CLOSED it fills the window and may open the breaker; in HALF_OPEN only
 * probes holding a live permit count: all permitted probes succeeding close it, any failed probe
 * reopens it with a longer wait, and a probe that is not counted (cancelled, the caller's own
 * error) gives its permit back. Outcomes that arrive while OPEN, and non-probe outcomes in
 * HALF_OPEN, come from attempts admitted before the breaker opened and are not counted.
 */
export function record(
  breaker: Breaker,
  policy: PolicySpec,
  outcome: OutcomeInput,
  nowMs: number,
): Effect {
  const none: Effect = { transitions: [], stateChanged: false };
  const phase = breaker.phase;

  if (phase.kind === "half-open") {
    const permit = outcome.permitId === "" ? undefined : phase.permits.get(outcome.permitId);
    // A lapsed permit was already given back by its expiry and possibly granted again: its late
    // outcome must not decide for the probe that replaced it.
    if (permit === undefined || permit.settled || permit.expiresAtMs <= nowMs) return none;
    permit.settled = true;
    // A probe the caller cancelled, or that met the caller's own error, says nothing about the
    // dependency: its permit comes back so another attempt can probe.
    if (outcome.result === "not-counted") {
      phase.permits.delete(outcome.permitId);
      return { transitions: [], stateChanged: true };
    }
    const failure = outcome.result !== "success";
    if (failure) {
      const reason = `probe failed (${outcome.errorType || outcome.result})`;
      return {
        transitions: [open(breaker, policy, nowMs, reason)],
        stateChanged: true,
        counted: true,
      };
    }
    phase.succeeded++;
    if (phase.succeeded >= policy.breaker.halfOpenPermits) {
      const reason = `${phase.succeeded} of ${policy.breaker.halfOpenPermits} probes succeeded`;
      return { transitions: [close(breaker, nowMs, reason)], stateChanged: true, counted: true };
    }
    return { transitions: [], stateChanged: true, counted: true };
  }

  if (phase.kind === "closed" && outcome.result !== "not-counted") {
    const failure = outcome.result !== "success";
    breaker.window.push(failure);
    breaker.consecutiveFailures = failure ? breaker.consecutiveFailures + 1 : 0;
    // Evaluated after successes too: the call that brings the window to minimumCalls may be a
    // success while the rate is already over the threshold.
    const trigger = describeTrigger(breaker, policy);
    if (trigger === undefined) return { transitions: [], stateChanged: false, counted: true };
    return {
      transitions: [open(breaker, policy, nowMs, trigger)],
      stateChanged: true,
      counted: true,
    };
  }

  return none;
}

/** Applies a new policy revision: the window takes the new size, keeping its newest outcomes. */
export function applyPolicy(breaker: Breaker, policy: PolicySpec): void {
  breaker.window = breaker.window.resized(policy.breaker.windowSize);
  breaker.policyRevision = policy.revision;
}
