import { randomUUID } from "node:crypto";
import type { EventHub } from "../events/event-hub.ts";
import type { PolicyStore } from "../storage/policy-store.ts";
import { NotFoundError } from "./errors.ts";
import type { PolicySpec } from "./policy.ts";

/**
 * The policies the server enforces: read from memory, written through to SQLite, and published
 * once committed.
 */
export class PolicyRegistry {
  private readonly cache = new Map<string, PolicySpec>();

  constructor(
    private readonly store: PolicyStore,
    private readonly hub: EventHub,
    private readonly clock: () => number,
  ) {
    for (const policy of store.list()) this.cache.set(policy.dependency, policy);
  }

  get(dependency: string): PolicySpec | undefined {
    return this.cache.get(dependency);
  }

  /** Like get, but NotFoundError when the dependency has no policy. */
  require(dependency: string): PolicySpec {
    const policy = this.cache.get(dependency);
    if (policy === undefined) throw new NotFoundError(`no policy for dependency ${dependency}`);
    return policy;
  }

  list(): PolicySpec[] {
    return [...this.cache.values()].sort((a, b) => a.dependency.localeCompare(b.dependency));
  }

  put(
    spec: PolicySpec,
    expectedRevision: number | undefined,
    principal: string,
    traceId: string,
  ): PolicySpec {
    const nowMs = this.clock();
    const { policy: stored, changed } = this.store.put(spec, expectedRevision, principal, nowMs);
    if (!changed) return stored;
    this.cache.set(stored.dependency, stored);
    this.hub.publish({
      kind: "policy-changed",
      policy: stored,
      eventId: randomUUID(),
      correlationId: traceId,
      causationId: "",
      atMs: nowMs,
      principal,
    });
    return stored;
  }

  delete(
    dependency: string,
    expectedRevision: number | undefined,
    principal: string,
    traceId: string,
  ): number {
    const revision = this.store.delete(dependency, expectedRevision);
    this.cache.delete(dependency);
    this.hub.publish({
      kind: "policy-deleted",
      dependency,
      revision,
      deletedBy: principal,
      eventId: randomUUID(),
      correlationId: traceId,
      causationId: "",
      atMs: this.clock(),
      principal,
    });
    return revision;
  }
}
