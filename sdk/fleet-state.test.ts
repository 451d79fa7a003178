import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  BreakerState,
  BreakerStatusSchema,
  type BreakerTransition,
  BreakerTransitionSchema,
} from "../gen/bulwark/v1/breaker_types_pb.ts";
import { type Event, EventSchema } from "../gen/bulwark/v1/event_pb.ts";
import { type Policy, PolicySchema } from "../gen/bulwark/v1/policy_pb.ts";
import { admitFromFleet } from "./admission.ts";
import {
  type FleetChange,
  FleetState,
  type FollowedBreaker,
  newerThanListing,
} from "./fleet-state.ts";
import { LocalBreakers } from "./local-breakers.ts";

function policy(dependency: string, revision: number, minimumCalls = 2): Policy {
  return create(PolicySchema, {
    dependency,
    revision: BigInt(revision),
    sla: { latencyObjectiveMs: 5_000, availabilityTargetPercent: 99 },
    timeoutMs: 1_000,
    breaker: { windowSize: 4, minimumCalls, failureRateThresholdPercent: 50, openWaitMs: 1_000 },
  });
}

function transition(sequence: number, to: BreakerState, atMs: number): BreakerTransition {
  return create(BreakerTransitionSchema, {
    sequence: BigInt(sequence),
    dependency: "dep",
    to,
    atUnixMs: BigInt(atMs),
    openUntilUnixMs: to === BreakerState.OPEN ? BigInt(atMs + 1_000) : 0n,
  });
}

const event = (t: BreakerTransition): Event =>
  create(EventSchema, { kind: { case: "breakerTransition", value: t } });

function breaker(state: FollowedBreaker["state"], openUntilMs = 0): FollowedBreaker {
  return {
    dependency: "dep",
    service: "",
    state,
    openUntilMs,
    consecutiveOpens: state === "open" ? 1 : 0,
    changedAtMs: 0,
    reason: "",
    policyRevision: 1,
    sequence: 1,
  };
}

describe("admission from the followed state", () => {
  it("admits CLOSED, DISABLED and METRICS_ONLY, rejects OPEN and FORCED_OPEN, asks for HALF_OPEN", () => {
    expect(admitFromFleet(undefined, 0)).toEqual({ kind: "fleet" });
    expect(admitFromFleet(breaker("closed"), 0)).toEqual({ kind: "fleet" });
    expect(admitFromFleet(breaker("disabled"), 0)).toEqual({ kind: "fleet" });
    expect(admitFromFleet(breaker("metrics-only"), 0)).toEqual({ kind: "fleet" });
    expect(admitFromFleet(breaker("forced-open"), 0)).toEqual({ kind: "reject", retryAtMs: 0 });
    expect(admitFromFleet(breaker("open", 500), 499)).toEqual({ kind: "reject", retryAtMs: 500 });
    expect(admitFromFleet(breaker("open", 500), 500)).toBeUndefined();
    expect(admitFromFleet(breaker("half-open"), 0)).toBeUndefined();
  });
});

describe("FleetState", () => {
  it("ignores transitions and policy revisions older than what it holds", () => {
    const state = new FleetState();
    const changes: FleetChange[] = [];
    state.onChange((c) => changes.push(c));
    state.applyListing([policy("dep", 2)], []);
    expect(state.applyEvent(event(transition(5, BreakerState.OPEN, 100)))).toBe(true);
    expect(state.applyEvent(event(transition(4, BreakerState.CLOSED, 90)))).toBe(false);
    expect(state.breakerFor("dep", "svc")?.state).toBe("open");
    const older = create(EventSchema, {
      kind: { case: "policyChanged", value: { policy: policy("dep", 1) } },
    });
    expect(state.applyEvent(older)).toBe(false);
    const deleted = create(EventSchema, {
      kind: { case: "policyDeleted", value: { dependency: "dep", revision: 2n } },
    });
    expect(state.applyEvent(deleted)).toBe(true);
    // A late change from before the delete does not bring the policy back.
    const late = create(EventSchema, {
      kind: { case: "policyChanged", value: { policy: policy("dep", 2) } },
    });
    expect(state.applyEvent(late)).toBe(false);
    expect(state.policy("dep")).toBeUndefined();
    expect(changes.map((c) => c.kind)).toEqual(["policy", "breaker", "policy-deleted"]);
  });

  it("reports what a new listing changed, and nothing for what it did not", () => {
    const state = new FleetState();
    const listed = create(BreakerStatusSchema, {
      dependency: "dep",
      state: BreakerState.OPEN,
      openUntilUnixMs: 2_000n,
      changedAtUnixMs: 1_000n,
    });
    state.applyListing([policy("dep", 1)], [listed]);
    const changes: FleetChange[] = [];
    state.onChange((c) => changes.push(c));
    state.applyListing([policy("dep", 1)], [listed]);
    expect(changes).toEqual([]);
    state.applyListing([policy("dep", 1)], [{ ...listed, state: BreakerState.HALF_OPEN }]);
    expect(changes).toMatchObject([
      { kind: "breaker", from: "open", breaker: { state: "half-open" }, origin: "resync" },
    ]);
  });

  it("places a listing among transitions received while it was taken", () => {
    const listed = create(BreakerStatusSchema, {
      dependency: "dep",
      state: BreakerState.HALF_OPEN,
      changedAtUnixMs: 200n,
    });
    const before = transition(1, BreakerState.OPEN, 100);
    const same = transition(2, BreakerState.HALF_OPEN, 200);
    const after = transition(3, BreakerState.CLOSED, 200);
    expect(newerThanListing([before, same, after], listed)).toEqual([after]);
    expect(newerThanListing([after], listed)).toEqual([after]);
    expect(newerThanListing([before], listed)).toEqual([]);
    expect(newerThanListing([before, same], undefined)).toEqual([before, same]);
  });
});

describe("LocalBreakers", () => {
  const followed = (minimumCalls = 2) => {
    const state = new FleetState();
    state.applyListing([policy("dep", 1, minimumCalls)], []);
    return state.policy("dep")!;
  };

  it("opens on the engine's rules, rejects until the open wait ends, then probes", () => {
    const local = new LocalBreakers();
    const p = followed();
    expect(local.admit(p, undefined, 0)).toEqual({ kind: "allow", permitId: "" });
    local.record("dep", "failure", "", "http_503", 1);
    local.record("dep", "failure", "", "http_503", 2);
    expect(local.admit(p, undefined, 3)).toEqual({ kind: "reject", retryAtMs: 1_002 });
    const probe = local.admit(p, undefined, 1_002);
    expect(probe.kind === "allow" && probe.permitId !== "").toBe(true);
    expect(local.admit(p, undefined, 1_003).kind).toBe("reject");
    local.record("dep", "success", probe.kind === "allow" ? probe.permitId : "", "", 1_004);
    expect(local.admit(p, undefined, 1_005)).toEqual({ kind: "allow", permitId: "" });
  });

  it("starts from the fleet's last known state, forced states included", () => {
    expect(new LocalBreakers().admit(followed(), breaker("open", 500), 100)).toEqual({
      kind: "reject",
      retryAtMs: 500,
    });
    expect(new LocalBreakers().admit(followed(), breaker("forced-open"), 100).kind).toBe("reject");
    const disabled = new LocalBreakers();
    disabled.admit(followed(1), breaker("disabled"), 0);
    disabled.record("dep", "failure", "", "x", 1);
    expect(disabled.admit(followed(1), breaker("disabled"), 2).kind).toBe("allow");
    expect(new LocalBreakers().admit(followed(), breaker("metrics-only"), 0).kind).toBe("allow");
  });
});
