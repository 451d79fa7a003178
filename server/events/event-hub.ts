import type { DomainEvent } from "./domain-event.ts";

export type EventListener = (event: DomainEvent) => void;

/**
 * In-process fan-out of domain events to Watch streams and the NATS publisher. Events are
 * published only after the change they describe is committed, in commit order.
 */
export class EventHub {
  private readonly listeners = new Set<EventListener>();

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  publish(event: DomainEvent): void {
    for (const listener of this.listeners) listener(event);
  }
}
