/**
 * Converters between the domain core's plain types and the bulwark.v1 wire messages. Unix
 * milliseconds travel as int64 (bigint in the generated code) and become numbers here, once.
 */
import { create } from "@bufbuild/protobuf";
import { type AuditRecord, AuditRecordSchema } from "../../gen/bulwark/v1/audit_pb.ts";
import {
  BreakerState,
  type BreakerStatus,
  BreakerStatusSchema,
  type BreakerTransition,
  BreakerTransitionSchema,
} from "../../gen/bulwark/v1/breaker_types_pb.ts";
import { type Event, EventSchema } from "../../gen/bulwark/v1/event_pb.ts";
import { BreakerScope, Jitter, type Policy, PolicySchema } from "../../gen/bulwark/v1/policy_pb.ts";
import type { AuditRecordRow } from "../audit/audit-store.ts";
import type { BreakerStateName } from "../domain/breaker-engine.ts";
import type { BreakerView } from "../domain/breaker-registry.ts";
import type { JitterMode, PolicySpec } from "../domain/policy.ts";
import type { DomainEvent } from "../events/domain-event.ts";
import type { StoredTransition } from "../storage/breaker-store.ts";

const JITTER: Record<JitterMode, Jitter> = {
  full: Jitter.FULL,
  decorrelated: Jitter.DECORRELATED,
  none: Jitter.NONE,
};

const STATE: Record<BreakerStateName, BreakerState> = {
  closed: BreakerState.CLOSED,
  open: BreakerState.OPEN,
  "half-open": BreakerState.HALF_OPEN,
};

export function stateToWire(state: BreakerStateName): BreakerState {
  return STATE[state];
}

export function policyToWire(p: PolicySpec): Policy {
  return create(PolicySchema, {
    dependency: p.dependency,
    revision: BigInt(p.revision),
    sla: {
      latencyObjectiveMs: p.latencyObjectiveMs,
      availabilityTargetPercent: p.availabilityTargetPercent,
    },
    timeoutMs: p.timeoutMs,
    deadlineMs: p.deadlineMs,
    retry: { ...p.retry, jitter: JITTER[p.retry.jitter] },
    breaker: {
      ...p.breaker,
      scope: p.breaker.scope === "service" ? BreakerScope.SERVICE : BreakerScope.DEPENDENCY,
    },
    queue: { ...p.queue, maxAgeMs: BigInt(p.queue.maxAgeMs) },
    updatedAtUnixMs: BigInt(p.updatedAtMs),
    updatedBy: p.updatedBy,
  });
}

export function breakerToWire(v: BreakerView): BreakerStatus {
  return create(BreakerStatusSchema, {
    dependency: v.dependency,
    service: v.service,
    state: STATE[v.state],
    openUntilUnixMs: BigInt(v.openUntilMs),
    consecutiveOpens: v.consecutiveOpens,
    window: {
      calls: v.calls,
      failures: v.failures,
      failureRatePercent: v.failureRatePercent,
      consecutiveFailures: v.consecutiveFailures,
    },
    policyRevision: BigInt(v.policyRevision),
    changedAtUnixMs: BigInt(v.changedAtMs),
    reason: v.reason,
    permitsInFlight: v.permitsInFlight,
  });
}

export function transitionToWire(t: StoredTransition): BreakerTransition {
  return create(BreakerTransitionSchema, {
    sequence: BigInt(t.sequence),
    dependency: t.dependency,
    service: t.service,
    from: STATE[t.from],
    to: STATE[t.to],
    atUnixMs: BigInt(t.atMs),
    reason: t.reason,
    window: t.window,
    policyRevision: BigInt(t.policyRevision),
    openUntilUnixMs: BigInt(t.openUntilMs),
  });
}

export function eventToWire(e: DomainEvent): Event {
  const envelope = {
    eventId: e.eventId,
    correlationId: e.correlationId,
    causationId: e.causationId,
    atUnixMs: BigInt(e.atMs),
  };
  switch (e.kind) {
    case "breaker-transition":
      return create(EventSchema, {
        ...envelope,
        kind: { case: "breakerTransition", value: transitionToWire(e.transition) },
      });
    case "policy-changed":
      return create(EventSchema, {
        ...envelope,
        kind: { case: "policyChanged", value: { policy: policyToWire(e.policy) } },
      });
    case "policy-deleted":
      return create(EventSchema, {
        ...envelope,
        kind: {
          case: "policyDeleted",
          value: { dependency: e.dependency, revision: BigInt(e.revision), deletedBy: e.deletedBy },
        },
      });
    case "alert": {
      const a = e.alert;
      const win = (w: typeof a.short) => ({
        windowMs: BigInt(w.windowMs),
        calls: w.calls,
        failures: w.failures,
        burnRate: w.burnRate,
      });
      return create(EventSchema, {
        ...envelope,
        kind: {
          case: "alertChanged",
          value: {
            dependency: a.dependency,
            active: a.kind === "raised",
            reason: a.reason,
            shortWindow: win(a.short),
            longWindow: win(a.long),
            threshold: a.threshold,
            budget: a.budget,
          },
        },
      });
    }
  }
}

export function auditRecordToWire(r: AuditRecordRow): AuditRecord {
  return create(AuditRecordSchema, {
    sequence: BigInt(r.sequence),
    eventId: r.eventId,
    eventType: r.eventType,
    aggregateId: r.aggregateId,
    payloadHash: r.payloadHash,
    producer: r.producer,
    principal: r.principal,
    timestampUnixMs: BigInt(r.timestampMs),
    traceId: r.traceId,
    causationId: r.causationId,
    prevHash: r.prevHash,
    hash: r.hash,
  });
}
