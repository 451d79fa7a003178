import type { AlertChange } from "../domain/burn-rate-alerts.ts";
import type { PolicySpec } from "../domain/policy.ts";
import type { StoredTransition } from "../storage/breaker-store.ts";

/** Fields every event carries so a causal chain can be rebuilt (DESIGN §8). */
export interface EventEnvelope {
  eventId: string;
  /** The trace id of the operation the event belongs to. */
  correlationId: string;
  /** The event_id of the event that caused this one; empty when none is known. */
  causationId: string;
  atMs: number;
  /** Who caused it: the caller of the RPC, or the server itself for its own timers. */
  principal: string;
}

export type DomainEvent = EventEnvelope &
  (
    | { kind: "breaker-transition"; transition: StoredTransition }
    | { kind: "policy-changed"; policy: PolicySpec }
    | { kind: "policy-deleted"; dependency: string; revision: number; deletedBy: string }
    | { kind: "alert"; alert: AlertChange }
  );

/** The dependency an event is about. */
export function dependencyOf(event: DomainEvent): string {
  switch (event.kind) {
    case "breaker-transition":
      return event.transition.dependency;
    case "policy-changed":
      return event.policy.dependency;
    case "policy-deleted":
      return event.dependency;
    case "alert":
      return event.alert.dependency;
  }
}
