import type { FollowedBreaker } from "./fleet-state.ts";

/**
 * How one attempt was admitted: by the server (`allow`, `probe`), from the fleet's followed
 * state without asking (`fleet`), or by the local breaker while the fleet cannot be followed
 * (`local`, with a local probe permit when it is HALF_OPEN).
 */
export type Admission =
  | { kind: "allow" }
  | { kind: "probe"; permitId: string }
  | { kind: "fleet" }
  | { kind: "local"; permitId: string }
  | { kind: "reject"; retryAtMs: number };

/** Shared admissions: the fast path allocates none. */
export const FLEET: Admission = { kind: "fleet" };
export const LOCAL: Admission = { kind: "local", permitId: "" };
export const FORCED_OPEN: Admission = { kind: "reject", retryAtMs: 0 };
/** A rejection while the fleet probes and the server cannot be asked. */
export const HOLD: Admission = { kind: "reject", retryAtMs: 0 };

/**
 * The admission the followed state of a breaker gives without asking the server, or undefined
 * when only the server can decide: CLOSED, DISABLED and METRICS_ONLY admit; OPEN rejects until
 * its time and FORCED_OPEN until an operator resets it; HALF_OPEN (and OPEN past its time, which
 * the server is about to move to HALF_OPEN) needs a permit. A breaker the server does not hold
 * yet is CLOSED. Known shortcoming: between a transition on the server and its arrival here,
 * attempts are still admitted from the old state (the slip measured by test/slip.test.ts); the
 * `strict` option asks the server every time instead. `nowMs` (Unix ms) is read from the clock
 * when not given, and only for OPEN.
 */
export function admitFromFleet(
  breaker: FollowedBreaker | undefined,
  nowMs?: number,
): Admission | undefined {
  if (breaker === undefined) return FLEET;
  switch (breaker.state) {
    case "closed":
    case "disabled":
    case "metrics-only":
      return FLEET;
    case "forced-open":
      return FORCED_OPEN;
    case "open":
      return (nowMs ?? Date.now()) < breaker.openUntilMs
        ? { kind: "reject", retryAtMs: breaker.openUntilMs }
        : undefined;
    default:
      return undefined;
  }
}
