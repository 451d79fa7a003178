/**
 * The breaker this instance runs on its own while it cannot follow the fleet (control plane or
 * event source down). It is the server's own engine (server/domain/breaker-engine.ts, pure
 * logic), run on the last known policy and seeded with the last known fleet state, so local and
 * fleet decisions follow the same rules. This is the one place the SDK uses server code; the
 * engine imports nothing but its window and policy types.
 *
 * Known shortcomings: a local breaker starts with an empty window (the fleet's window figures are
 * not followed, only its state), counts only this instance's outcomes, and grants this
 * instance its own HALF_OPEN probes, so a fleet cut off from its control plane probes once per
 * instance rather than once in all. Following the window figures would let it start full.
 */
import {
  acquire,
  type Breaker,
  type CountedResult,
  createBreaker,
  record,
} from "../server/domain/breaker-engine.ts";
import type { PolicySpec } from "../server/domain/policy.ts";
import { normalizePolicy } from "../server/domain/policy-validation.ts";
import type { FollowedBreaker, FollowedPolicy } from "./fleet-state.ts";

/** A local decision. `permitId` is set for a local HALF_OPEN probe. */
export type LocalDecision =
  | { kind: "allow"; permitId: string }
  | { kind: "reject"; retryAtMs: number };

interface LocalBreaker {
  breaker: Breaker;
  spec: PolicySpec;
  /** An operator's forced state, which the engine does not decide on. */
  forced: "forced-open" | "disabled" | "metrics-only" | undefined;
  /** The fleet state it started from; a newer one starts it afresh. */
  seed: FollowedBreaker | undefined;
}

/** The decision that lets every attempt through (shared: the allow path allocates nothing). */
const ALLOW: LocalDecision = { kind: "allow", permitId: "" };

/** The engine's policy from the wire policy; undefined when it cannot be read. */
function specOf(policy: FollowedPolicy): PolicySpec | undefined {
  try {
    return { ...normalizePolicy(policy.wire), revision: policy.revision };
  } catch {
    return undefined;
  }
}

/** Local breakers per dependency, created on first use and dropped when the fleet is back. */
export class LocalBreakers {
  private readonly breakers = new Map<string, LocalBreaker>();
  private permits = 0;

  get size(): number {
    return this.breakers.size;
  }

  /** Forgets every local breaker: the fleet's state is authoritative again. */
  clear(): void {
    this.breakers.clear();
  }

  /**
   * Decides one attempt. `seed` is the fleet's last known state of the breaker, from which a new
   * local breaker starts (an OPEN breaker stays open until its time, then probes locally).
   */
  admit(policy: FollowedPolicy, seed: FollowedBreaker | undefined, nowMs: number): LocalDecision {
    const local = this.breakerFor(policy, seed, nowMs);
    if (local === undefined) return ALLOW;
    if (local.forced === "forced-open") return { kind: "reject", retryAtMs: 0 };
    if (local.forced !== undefined) return ALLOW;
    const { decision } = acquire(local.breaker, local.spec, nowMs, `local-${++this.permits}`);
    switch (decision.kind) {
      case "allow":
        return ALLOW;
      case "probe":
        return { kind: "allow", permitId: decision.permitId };
      case "reject":
        return { kind: "reject", retryAtMs: decision.retryAtMs };
    }
  }

  /** Counts one outcome in the dependency's local breaker, if it has one. */
  record(
    dependency: string,
    result: CountedResult,
    permitId: string,
    errorType: string,
    nowMs: number,
  ): void {
    const local = this.breakers.get(dependency);
    if (local === undefined || local.forced === "disabled") return;
    record(local.breaker, local.spec, { result, permitId, errorType }, nowMs);
  }

  private breakerFor(
    policy: FollowedPolicy,
    seed: FollowedBreaker | undefined,
    nowMs: number,
  ): LocalBreaker | undefined {
    const known = this.breakers.get(policy.dependency);
    if (known !== undefined && known.spec.revision === policy.revision && known.seed === seed) {
      return known;
    }
    const spec = specOf(policy);
    if (spec === undefined) return undefined;
    const breaker = createBreaker(policy.dependency, "", spec, nowMs);
    let forced: LocalBreaker["forced"];
    switch (seed?.state) {
      case "open":
        breaker.phase = { kind: "open", untilMs: seed.openUntilMs };
        breaker.consecutiveOpens = seed.consecutiveOpens;
        break;
      case "half-open":
        breaker.phase = { kind: "half-open", permits: new Map(), succeeded: 0 };
        breaker.consecutiveOpens = seed.consecutiveOpens;
        break;
      case "forced-open":
      case "disabled":
      case "metrics-only":
        forced = seed.state;
        break;
      default:
        break;
    }
    const local: LocalBreaker = { breaker, spec, forced, seed };
    this.breakers.set(policy.dependency, local);
    return local;
  }
}
