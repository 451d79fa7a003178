/**
 * The types of the breaker engine (breaker-engine.ts, which re-exports them): a breaker and its
 * phase, what goes in (outcomes) and what comes out (decisions, transitions, effects).
 */
import type { SlidingWindow } from "./sliding-window.ts";

export type BreakerStateName =
  | "closed"
  | "open"
  | "half-open"
  | "forced-open"
  | "disabled"
  | "metrics-only";

/** The operator states, set and left only through force() in breaker-engine.ts. */
export type ForcedStateName = "forced-open" | "disabled" | "metrics-only";

/** What an operator asks ForceBreaker to do. */
export type ForceAction = ForcedStateName | "reset";

/** A probe permit granted in HALF_OPEN. */
export interface Permit {
  expiresAtMs: number;
  /** Returned by an outcome. */
  settled: boolean;
}

export type BreakerPhase =
  | { kind: "closed" }
  | { kind: "open"; untilMs: number }
  | { kind: "half-open"; permits: Map<string, Permit>; succeeded: number }
  | { kind: ForcedStateName };

export interface Breaker {
  dependency: string;
  /** Empty unless the policy scopes breakers per calling service. */
  service: string;
  phase: BreakerPhase;
  window: SlidingWindow;
  consecutiveFailures: number;
  /** Opens in a row without closing; the open wait grows with it. */
  consecutiveOpens: number;
  changedAtMs: number;
  reason: string;
  policyRevision: number;
  /** The operator who forced the current state; empty unless the phase is a forced one. */
  forcedBy: string;
}

export interface WindowFigures {
  calls: number;
  failures: number;
  failureRatePercent: number;
  consecutiveFailures: number;
  slowCalls: number;
  slowCallRatePercent: number;
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
  /** Who caused it: the operator for a forced state, "bulwark" (SERVER_ACTOR) otherwise. */
  actor: string;
}

/** What an outcome counts as in the window. */
export type CountedResult = "success" | "failure" | "timeout" | "not-counted";

export interface OutcomeInput {
  result: CountedResult;
  /** Set when the attempt was a HALF_OPEN probe. */
  permitId: string;
  /** Short error class for the transition reason, e.g. "http_503". */
  errorType: string;
  /** How long the attempt took; compared with the policy's slowCallMs. Default 0. */
  latencyMs?: number;
  /** HTTP (or gRPC) status of the answer; 429 and 503 may carry a back-off signal. Default 0. */
  statusCode?: number;
  /** The dependency's Retry-After, in milliseconds from when it answered. Default 0: none. */
  retryAfterMs?: number;
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
