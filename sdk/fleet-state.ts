import {
  BreakerState,
  type BreakerStatus,
  type BreakerTransition,
} from "../gen/bulwark/v1/breaker_types_pb.ts";
import type { Event } from "../gen/bulwark/v1/event_pb.ts";
import { BreakerScope, type Policy } from "../gen/bulwark/v1/policy_pb.ts";
import { type CallPolicy, callPolicyFromWire } from "./policy.ts";

/** A breaker state as the SDK names it. */
export type FleetBreakerState =
  | "closed"
  | "open"
  | "half-open"
  | "forced-open"
  | "disabled"
  | "metrics-only";

const STATE_NAMES: Record<number, FleetBreakerState> = {
  [BreakerState.CLOSED]: "closed",
  [BreakerState.OPEN]: "open",
  [BreakerState.HALF_OPEN]: "half-open",
  [BreakerState.FORCED_OPEN]: "forced-open",
  [BreakerState.DISABLED]: "disabled",
  [BreakerState.METRICS_ONLY]: "metrics-only",
};

/** The wire state as a name; an unknown (newer) state reads as HALF_OPEN, which asks the server. */
export function stateName(state: BreakerState): FleetBreakerState {
  return STATE_NAMES[state] ?? "half-open";
}

/** One breaker of the fleet as the SDK last heard of it. */
export interface FollowedBreaker {
  dependency: string;
  /** Empty for a dependency-wide breaker. */
  service: string;
  state: FleetBreakerState;
  /** While OPEN: when the server moves it to HALF_OPEN (Unix ms); 0 otherwise. */
  openUntilMs: number;
  consecutiveOpens: number;
  changedAtMs: number;
  reason: string;
  policyRevision: number;
  /** Sequence of the transition that set this state; 0 when it came from a listing. */
  sequence: number;
}

/** One dependency's policy as the SDK last heard of it. */
export interface FollowedPolicy {
  dependency: string;
  revision: number;
  /** The policy as the server stores it. */
  wire: Policy;
  /** What a guarded call needs of it. */
  call: CallPolicy;
  /** Breakers are kept per calling service. */
  perService: boolean;
}

/** How a change reached the SDK. */
export type ChangeOrigin = "transition" | "resync";

/** A change of the followed state, in the order it was applied. */
export type FleetChange =
  | {
      kind: "breaker";
      breaker: FollowedBreaker;
      /** The state before, when one was known. */
      from: FleetBreakerState | undefined;
      origin: ChangeOrigin;
    }
  | { kind: "policy"; policy: FollowedPolicy; origin: ChangeOrigin }
  | { kind: "policy-deleted"; dependency: string; revision: number; origin: ChangeOrigin };

function keyOf(dependency: string, service: string): string {
  return `${dependency}\u0000${service}`;
}

function breakerFromStatus(s: BreakerStatus): FollowedBreaker {
  return {
    dependency: s.dependency,
    service: s.service,
    state: stateName(s.state),
    openUntilMs: Number(s.openUntilUnixMs),
    consecutiveOpens: s.consecutiveOpens,
    changedAtMs: Number(s.changedAtUnixMs),
    reason: s.reason,
    policyRevision: Number(s.policyRevision),
    sequence: 0,
  };
}

function policyFromWire(p: Policy): FollowedPolicy {
  return {
    dependency: p.dependency,
    revision: Number(p.revision),
    wire: p,
    call: callPolicyFromWire(p),
    perService: p.breaker?.scope === BreakerScope.SERVICE,
  };
}

function sameBreaker(a: FollowedBreaker, b: FollowedBreaker): boolean {
  return a.state === b.state && a.openUntilMs === b.openUntilMs && a.changedAtMs === b.changedAtMs;
}

/**
 * The fleet's policies and breakers as this instance follows them (Watch or NATS). Listings
 * replace it whole; events move it on, and an event older than what is held is ignored: policies
 * by revision, breakers by transition sequence. Every applied change goes to the listeners, in
 * order.
 */
export class FleetState {
  private readonly policies = new Map<string, FollowedPolicy>();
  /** Revision of each deleted policy, so a late event cannot bring it back. */
  private readonly deletedRevisions = new Map<string, number>();
  private readonly breakers = new Map<string, FollowedBreaker>();
  /** The dependency-wide breakers (service ""), by dependency: the same objects as above. */
  private readonly wide = new Map<string, FollowedBreaker>();
  private readonly listeners = new Set<(change: FleetChange) => void>();
  /** A listing has been applied: the state is complete, if perhaps stale. */
  synced = false;

  onChange(listener: (change: FleetChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  policy(dependency: string): FollowedPolicy | undefined {
    return this.policies.get(dependency);
  }

  /** The breaker the given service's calls to `dependency` go through, if the server holds one. */
  breakerFor(dependency: string, service: string): FollowedBreaker | undefined {
    const policy = this.policies.get(dependency);
    // Looked up on every attempt: the dependency-wide key needs no string to be built.
    if (policy === undefined || !policy.perService) return this.wide.get(dependency);
    return this.breakers.get(keyOf(dependency, service));
  }

  allPolicies(): IterableIterator<FollowedPolicy> {
    return this.policies.values();
  }

  allBreakers(): IterableIterator<FollowedBreaker> {
    return this.breakers.values();
  }

  /**
   * Replaces everything with a listing (a Watch snapshot or ListPolicies + ListBreakers) and
   * reports what differs from what was held, so a follower learns what changed while it was not
   * listening.
   */
  applyListing(policies: readonly Policy[], breakers: readonly BreakerStatus[]): void {
    const listedPolicies = new Set<string>();
    for (const p of policies) {
      listedPolicies.add(p.dependency);
      const known = this.policies.get(p.dependency);
      if (known !== undefined && known.revision === Number(p.revision)) continue;
      const followed = policyFromWire(p);
      this.policies.set(p.dependency, followed);
      this.deletedRevisions.delete(p.dependency);
      this.emit({ kind: "policy", policy: followed, origin: "resync" });
    }
    for (const [dependency, known] of this.policies) {
      if (listedPolicies.has(dependency)) continue;
      this.policies.delete(dependency);
      this.deletedRevisions.set(dependency, known.revision);
      this.emit({ kind: "policy-deleted", dependency, revision: known.revision, origin: "resync" });
    }
    const listedBreakers = new Set<string>();
    for (const s of breakers) {
      const key = keyOf(s.dependency, s.service);
      listedBreakers.add(key);
      const known = this.breakers.get(key);
      const listed = breakerFromStatus(s);
      // Unchanged: the held object stays (its sequence, and the local breaker seeded from it).
      if (known !== undefined && sameBreaker(known, listed)) continue;
      this.setBreaker(key, listed);
      this.emit({ kind: "breaker", breaker: listed, from: known?.state, origin: "resync" });
    }
    for (const [key, known] of this.breakers) {
      if (listedBreakers.has(key)) continue;
      // The server no longer holds it (its policy went, or changed scope): calls find it closed.
      this.deleteBreaker(key, known);
      if (known.state !== "closed") {
        const closed: FollowedBreaker = {
          ...known,
          state: "closed",
          openUntilMs: 0,
          reason: "no longer held by the control plane",
        };
        this.emit({ kind: "breaker", breaker: closed, from: known.state, origin: "resync" });
      }
    }
    this.synced = true;
  }

  /** Applies one event; returns false when it was older than what is held and was ignored. */
  applyEvent(event: Event): boolean {
    switch (event.kind.case) {
      case "breakerTransition":
        return this.applyTransition(event.kind.value);
      case "policyChanged": {
        const p = event.kind.value.policy;
        if (p === undefined) return false;
        const revision = Number(p.revision);
        const known = this.policies.get(p.dependency)?.revision ?? 0;
        const deleted = this.deletedRevisions.get(p.dependency) ?? 0;
        if (revision <= known || revision <= deleted) return false;
        const followed = policyFromWire(p);
        this.policies.set(p.dependency, followed);
        this.deletedRevisions.delete(p.dependency);
        this.emit({ kind: "policy", policy: followed, origin: "transition" });
        return true;
      }
      case "policyDeleted": {
        const { dependency } = event.kind.value;
        const revision = Number(event.kind.value.revision);
        const known = this.policies.get(dependency);
        if (known === undefined || known.revision > revision) return false;
        this.policies.delete(dependency);
        this.deletedRevisions.set(dependency, revision);
        for (const [key, b] of this.breakers)
          if (b.dependency === dependency) this.deleteBreaker(key, b);
        this.emit({ kind: "policy-deleted", dependency, revision, origin: "transition" });
        return true;
      }
      default:
        return false;
    }
  }

  private applyTransition(t: BreakerTransition): boolean {
    const key = keyOf(t.dependency, t.service);
    const known = this.breakers.get(key);
    const sequence = Number(t.sequence);
    if (known !== undefined && known.sequence >= sequence) return false;
    const to = stateName(t.to);
    const next: FollowedBreaker = {
      dependency: t.dependency,
      service: t.service,
      state: to,
      openUntilMs: to === "open" ? Number(t.openUntilUnixMs) : 0,
      consecutiveOpens:
        to === "open"
          ? (known?.consecutiveOpens ?? 0) + 1
          : to === "closed"
            ? 0
            : (known?.consecutiveOpens ?? 0),
      changedAtMs: Number(t.atUnixMs),
      reason: t.reason,
      policyRevision: Number(t.policyRevision),
      sequence,
    };
    this.setBreaker(key, next);
    this.emit({ kind: "breaker", breaker: next, from: known?.state, origin: "transition" });
    return true;
  }

  private setBreaker(key: string, breaker: FollowedBreaker): void {
    this.breakers.set(key, breaker);
    if (breaker.service === "") this.wide.set(breaker.dependency, breaker);
  }

  private deleteBreaker(key: string, breaker: FollowedBreaker): void {
    this.breakers.delete(key);
    if (breaker.service === "") this.wide.delete(breaker.dependency);
  }

  private emit(change: FleetChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch {
        // A listener's bug must not stop the state from following the fleet.
      }
    }
  }
}

/**
 * Which of the transitions received while a listing was taken are newer than it. A listed
 * breaker carries no transition sequence (a known shortcoming of the contract: BreakerStatus
 * would need the sequence of the transition that set it), so the listing is placed among the
 * buffered transitions by time and state: those before the last one that matches the listed
 * state (same target state, same time) or older than the listed change are already in it.
 */
export function newerThanListing(
  buffered: readonly BreakerTransition[],
  listed: BreakerStatus | undefined,
): BreakerTransition[] {
  if (listed === undefined) return [...buffered];
  const changedAtMs = Number(listed.changedAtUnixMs);
  let matched = -1;
  buffered.forEach((t, i) => {
    if (t.to === listed.state && Number(t.atUnixMs) === changedAtMs) matched = i;
  });
  return buffered.filter((t, i) => i > matched && Number(t.atUnixMs) >= changedAtMs);
}
