import type { FleetState } from "../fleet-state.ts";
import type { BreakerGate } from "./breaker-gate.ts";

/**
 * The workers' breaker gate over the state the SDK already follows for its fast path (NATS or
 * Watch, resynced after every reconnection; see fleet-follower.ts): no stream of its own. A
 * breaker the SDK has not heard of counts as closed; the worker's guarded call still asks the
 * server (or the local breaker) before each attempt, so a stale "closed" costs at most one
 * rejected attempt, which the worker holds without using up a delivery.
 */
export class FleetBreakerGate implements BreakerGate {
  private readonly listeners = new Set<() => void>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly state: FleetState,
    private readonly service: string,
  ) {
    this.unsubscribe = state.onChange((change) => {
      if (change.kind !== "breaker" && change.kind !== "policy-deleted") return;
      for (const listener of this.listeners) {
        try {
          listener();
        } catch {
          // A listener's bug must not stop the gate.
        }
      }
    });
  }

  isOpen(dependency: string): boolean {
    return this.openUntilMs(dependency) > Date.now();
  }

  openUntilMs(dependency: string): number {
    const breaker = this.state.breakerFor(dependency, this.service);
    if (breaker === undefined) return 0;
    if (breaker.state === "forced-open") return Number.POSITIVE_INFINITY;
    return breaker.state === "open" ? breaker.openUntilMs : 0;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.unsubscribe();
    this.listeners.clear();
  }
}
