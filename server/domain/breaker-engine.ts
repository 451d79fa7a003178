/**
 * The circuit breaker as pure logic: a breaker, a policy, an outcome or a request and the current
 * time go in; the breaker is updated and the transitions it went through come out. No I/O and no
 * timers: the caller owns the clock, persistence and publishing (domain/breaker-registry.ts), so
 * every rule here is tested with a fake clock.
 *
 * Triggers that open a CLOSED breaker:
 * - failure rate over the sliding window (count- or time-based) >= the threshold, once the
 *   window holds `minimumCalls`;
 * - slow-call rate (calls slower than `slowCallMs`) >= its threshold, once the window holds
 *   `minimumCalls`; off while `slowCallMs` is 0;
 * - `consecutiveFailures` failures in a row, once the window holds `minimumCalls`;
 * - the back-off signal: a FAILURE with status 429 or 503 that carries Retry-After. It does NOT
 *   wait for `minimumCalls`: the dependency said explicitly that it wants no calls, and one
 *   answer saying so is worth more than any rate. It opens until now + min(Retry-After,
 *   `maxRetryAfterOpenMs`); off while that cap is 0. When the breaker is OPEN already, a later
 *   Retry-After time extends the open time (it never shortens it). In HALF_OPEN a probe that
 *   gets it reopens the breaker until the Retry-After time instead of the growing wait. Outcomes
 *   that are not probes are ignored in HALF_OPEN, as every other non-probe outcome is.
 *
 * Operator states (set only by {@link force}, left only by another force):
 * - forced-open: every attempt is rejected; outcomes are not counted.
 * - disabled: every attempt is allowed; outcomes still fill the window (so Get shows what the
 *   dependency does while the breaker is off) but no trigger is evaluated.
 * - metrics-only: every attempt is allowed; outcomes fill the window and a trigger that would
 *   open the breaker is written into its reason ("would open: ..."), but it does not open.
 *   Known shortcoming: while a trigger holds, that note is rebuilt (a new string) for every
 *   outcome; caching it per trigger would make this state as cheap as CLOSED.
 *
 * Known shortcoming: the back-off signal believes the reporter. One outcome from any caller
 * allowed to Report opens the fleet's breaker for up to `maxRetryAfterOpenMs`; binding service
 * tokens to their service names, or requiring the signal from two services, would narrow that.
 */

import { backOffWaitMs, describeBackOff, describeTrigger } from "./breaker-triggers.ts";
import type {
  AcquireDecision,
  Breaker,
  BreakerPhase,
  Effect,
  ForceAction,
  OutcomeInput,
  Transition,
  WindowFigures,
} from "./breaker-types.ts";
import type { PolicySpec } from "./policy.ts";
import { createWindow, reshapeWindow, shapeOf } from "./sliding-window.ts";

/**
 * A probe permit lapses this long after the policy's attempt timeout when no outcome returned it:
 * outcomes travel in batches, so the report of a probe that used its whole timeout arrives a
 * little after the timeout itself.
 */
export const PERMIT_GRACE_MS = 2_000;

/**
 * A Retry-After answer while OPEN extends the open time only by at least this much. Retry-After
 * has one-second resolution, and each extension is a stored and published transition: without
 * the step every batch of late 429s would publish one for a few milliseconds.
 */
export const BACK_OFF_EXTEND_STEP_MS = 1_000;

/** The actor of transitions the server decides itself (triggers, timers, probes). */
export const SERVER_ACTOR = "bulwark";

export type {
  AcquireDecision,
  Breaker,
  BreakerPhase,
  BreakerStateName,
  CountedResult,
  Effect,
  ForceAction,
  ForcedStateName,
  OutcomeInput,
  Permit,
  Transition,
  WindowFigures,
} from "./breaker-types.ts";

// Shared answers of the hot paths, so that counting an outcome allocates nothing. Nobody may
// push into their `transitions`: they are frozen.
const NONE: Effect = Object.freeze({
  transitions: Object.freeze([]) as never,
  stateChanged: false,
});
const COUNTED: Effect = Object.freeze({
  transitions: Object.freeze([]) as never,
  stateChanged: false,
  counted: true,
});
const PERMIT_RETURNED: Effect = Object.freeze({
  transitions: Object.freeze([]) as never,
  stateChanged: true,
});
const PROBE_COUNTED: Effect = Object.freeze({
  transitions: Object.freeze([]) as never,
  stateChanged: true,
  counted: true,
});

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
    window: createWindow(shapeOf(policy.breaker)),
    consecutiveFailures: 0,
    consecutiveOpens: 0,
    changedAtMs: nowMs,
    reason: "created",
    policyRevision: policy.revision,
    forcedBy: "",
  };
}

/**
 * The window's figures. With `nowMs`, a time window first lets outcomes older than the window
 * fall out, so the figures are those of the last window_duration_ms.
 */
export function figuresOf(breaker: Breaker, nowMs?: number): WindowFigures {
  const w = breaker.window;
  if (nowMs !== undefined) w.advance(nowMs);
  return {
    calls: w.calls,
    failures: w.failures,
    failureRatePercent: w.failureRatePercent,
    consecutiveFailures: breaker.consecutiveFailures,
    slowCalls: w.slowCalls,
    slowCallRatePercent: w.slowCallRatePercent,
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
  actor = SERVER_ACTOR,
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
    actor,
  };
}

/** Opens the breaker for `waitMs`, or for the growing wait when `waitMs` is undefined. */
function open(
  breaker: Breaker,
  policy: PolicySpec,
  nowMs: number,
  reason: string,
  waitMs?: number,
): Transition {
  const figures = figuresOf(breaker);
  breaker.consecutiveOpens++;
  const untilMs = nowMs + (waitMs ?? openWaitMs(policy, breaker.consecutiveOpens));
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
  if (breaker.phase.kind !== "open" || nowMs < breaker.phase.untilMs) return NONE;
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

const ALLOW: { decision: AcquireDecision } & Effect = Object.freeze({
  decision: Object.freeze({ kind: "allow" }) as AcquireDecision,
  transitions: Object.freeze([]) as never,
  stateChanged: false,
});

/**
 * Decides whether one attempt may go out. `newPermitId` is used when a probe permit is granted.
 * An OPEN breaker whose wait is over moves to HALF_OPEN here too, so a late timer never rejects a
 * call that should have been a probe. FORCED_OPEN rejects with retryAtMs 0 (no known time);
 * DISABLED and METRICS_ONLY allow every attempt.
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
    case "disabled":
    case "metrics-only":
      return effect === NONE ? ALLOW : { decision: ALLOW.decision, ...effect };
    case "open":
      return { decision: { kind: "reject", retryAtMs: phase.untilMs }, ...effect };
    case "forced-open":
      return { decision: { kind: "reject", retryAtMs: 0 }, ...effect };
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

/** Puts one counted outcome into the window and the run of consecutive failures. */
function fill(breaker: Breaker, policy: PolicySpec, outcome: OutcomeInput, nowMs: number): void {
  const failure = outcome.result !== "success";
  const slowCallMs = policy.breaker.slowCallMs;
  const slow = slowCallMs > 0 && (outcome.latencyMs ?? 0) > slowCallMs;
  breaker.window.push(failure, slow, nowMs);
  breaker.consecutiveFailures = failure ? breaker.consecutiveFailures + 1 : 0;
}

/**
 * Counts one outcome. In CLOSED it fills the window and may open the breaker; in HALF_OPEN only
 * probes holding a live permit count: all permitted probes succeeding close it, any failed probe
 * reopens it with a longer wait (or until its Retry-After time), and a probe that is not counted
 * (cancelled, the caller's own error) gives its permit back. Outcomes that arrive while OPEN, and
 * non-probe outcomes in HALF_OPEN, come from attempts admitted before the breaker opened and are
 * not counted; only a back-off signal while OPEN is heard (it may extend the open time). The
 * operator states are described at the top of this file.
 */
export function record(
  breaker: Breaker,
  policy: PolicySpec,
  outcome: OutcomeInput,
  nowMs: number,
): Effect {
  const phase = breaker.phase;
  switch (phase.kind) {
    case "closed": {
      if (outcome.result === "not-counted") return NONE;
      fill(breaker, policy, outcome, nowMs);
      const backOffMs = backOffWaitMs(policy, outcome);
      if (backOffMs > 0) {
        const reason = describeBackOff(outcome, backOffMs);
        const t = open(breaker, policy, nowMs, reason, backOffMs);
        return { transitions: [t], stateChanged: true, counted: true };
      }
      // Evaluated after successes too: the call that brings the window to minimumCalls may be a
      // success while the rate is already over the threshold.
      const trigger = describeTrigger(breaker, policy);
      if (trigger === undefined) return COUNTED;
      return {
        transitions: [open(breaker, policy, nowMs, trigger)],
        stateChanged: true,
        counted: true,
      };
    }

    case "open": {
      const backOffMs = backOffWaitMs(policy, outcome);
      const untilMs = nowMs + backOffMs;
      if (backOffMs === 0 || untilMs < phase.untilMs + BACK_OFF_EXTEND_STEP_MS) return NONE;
      const reason = `${describeBackOff(outcome, backOffMs)} extends the open time`;
      const t = moveTo(breaker, { kind: "open", untilMs }, nowMs, reason, figuresOf(breaker));
      return { transitions: [t], stateChanged: true };
    }

    case "half-open": {
      const permit = outcome.permitId === "" ? undefined : phase.permits.get(outcome.permitId);
      // A lapsed permit was already given back by its expiry and possibly granted again: its late
      // outcome must not decide for the probe that replaced it.
      if (permit === undefined || permit.settled || permit.expiresAtMs <= nowMs) return NONE;
      permit.settled = true;
      // A probe the caller cancelled, or that met the caller's own error, says nothing about the
      // dependency: its permit comes back so another attempt can probe.
      if (outcome.result === "not-counted") {
        phase.permits.delete(outcome.permitId);
        return PERMIT_RETURNED;
      }
      if (outcome.result !== "success") {
        const backOffMs = backOffWaitMs(policy, outcome);
        const t =
          backOffMs > 0
            ? open(
                breaker,
                policy,
                nowMs,
                `probe ${describeBackOff(outcome, backOffMs)}`,
                backOffMs,
              )
            : open(breaker, policy, nowMs, `probe failed (${outcome.errorType || outcome.result})`);
        return { transitions: [t], stateChanged: true, counted: true };
      }
      phase.succeeded++;
      if (phase.succeeded >= policy.breaker.halfOpenPermits) {
        const reason = `${phase.succeeded} of ${policy.breaker.halfOpenPermits} probes succeeded`;
        return { transitions: [close(breaker, nowMs, reason)], stateChanged: true, counted: true };
      }
      return PROBE_COUNTED;
    }

    case "forced-open":
      return NONE;

    case "disabled":
      if (outcome.result === "not-counted") return NONE;
      fill(breaker, policy, outcome, nowMs);
      return COUNTED;

    case "metrics-only": {
      if (outcome.result === "not-counted") return NONE;
      fill(breaker, policy, outcome, nowMs);
      const backOffMs = backOffWaitMs(policy, outcome);
      const trigger =
        backOffMs > 0 ? describeBackOff(outcome, backOffMs) : describeTrigger(breaker, policy);
      // The note goes out with the window counters (group-committed): it is not a transition.
      if (trigger !== undefined) breaker.reason = `would open: ${trigger}`;
      return COUNTED;
    }
  }
}

const FORCE_LABELS: Record<ForceAction, string> = {
  "forced-open": "forced open",
  disabled: "disabled",
  "metrics-only": "metrics only",
  reset: "reset",
};

/**
 * An operator's ForceBreaker: the transition is the operator's (`actor`) and carries their
 * `reason`. RESET returns the breaker to CLOSED with an empty window and the growing wait
 * started over; the other actions enter their state from any state (again from itself too, so
 * each request is one recorded transition), keeping the window, and drop any probe permits.
 */
export function force(
  breaker: Breaker,
  action: ForceAction,
  actor: string,
  reason: string,
  nowMs: number,
): Effect {
  const figures = figuresOf(breaker, nowMs);
  const text = `${FORCE_LABELS[action]}: ${reason}`;
  if (action === "reset") {
    breaker.consecutiveOpens = 0;
    breaker.consecutiveFailures = 0;
    breaker.window.clear();
    breaker.forcedBy = "";
    const t = moveTo(breaker, { kind: "closed" }, nowMs, text, figures, actor);
    return { transitions: [t], stateChanged: true };
  }
  breaker.forcedBy = actor;
  const t = moveTo(breaker, { kind: action }, nowMs, text, figures, actor);
  return { transitions: [t], stateChanged: true };
}

/**
 * Applies a new policy revision: the window takes the new shape, keeping its newest outcomes
 * when the kind stays (a change between count and time windows starts an empty one).
 */
export function applyPolicy(breaker: Breaker, policy: PolicySpec): void {
  breaker.window = reshapeWindow(breaker.window, shapeOf(policy.breaker));
  breaker.policyRevision = policy.revision;
}
