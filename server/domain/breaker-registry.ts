import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { EventHub } from "../events/event-hub.ts";
import type { BreakerStore, StoredTransition } from "../storage/breaker-store.ts";
import {
  type AcquireDecision,
  acquire,
  applyPolicy,
  type Breaker,
  type CountedResult,
  createBreaker,
  type Effect,
  type ForceAction,
  figuresOf,
  force,
  permitsInFlight,
  record,
  type Transition,
  tick,
} from "./breaker-engine.ts";
import { InvalidArgumentError, ResourceExhaustedError } from "./errors.ts";
import type { PolicySpec } from "./policy.ts";
import type { PolicyRegistry } from "./policy-registry.ts";

/**
 * Window counters are group-committed at this interval: a crash loses at most this much of the
 * outcomes, while transitions and permits are always written before they are acknowledged.
 */
export const WINDOW_FLUSH_INTERVAL_MS = 50;

/** One outcome as the registry needs it. */
export interface ReportedOutcome {
  dependency: string;
  service: string;
  permitId: string;
  result: CountedResult;
  errorType: string;
  latencyMs: number;
  statusCode: number;
  retryAfterMs: number;
  traceId: string;
  /** The application event that led to the call, if the caller named one. */
  causationId: string;
}

/** Who and what caused a transition. */
interface Cause {
  traceId: string;
  /** Empty: the breaker's previous transition is named as the cause. */
  causationId: string;
  principal: string;
}

/**
 * Per-service breakers one dependency may have. Each calling service name makes one, so the cap
 * keeps a caller that invents names from growing the server's memory without bound.
 */
export const MAX_SERVICE_BREAKERS_PER_DEPENDENCY = 1_000;

/** The principal of transitions the server's own timer makes. */
const SERVER_PRINCIPAL = "bulwark-server";

/** A breaker's state as served by Get, List and Watch. */
export interface BreakerView {
  dependency: string;
  service: string;
  state: Breaker["phase"]["kind"];
  openUntilMs: number;
  consecutiveOpens: number;
  calls: number;
  failures: number;
  failureRatePercent: number;
  consecutiveFailures: number;
  slowCalls: number;
  slowCallRatePercent: number;
  policyRevision: number;
  changedAtMs: number;
  reason: string;
  permitsInFlight: number;
  /** The operator who forced the current state; empty otherwise. */
  forcedBy: string;
}

export interface AcquireAnswer {
  decision: AcquireDecision;
  state: Breaker["phase"]["kind"];
  policyRevision: number;
}

function serverCause(): Cause {
  return { traceId: "", causationId: "", principal: SERVER_PRINCIPAL };
}

function keyOf(dependency: string, service: string): string {
  return `${dependency}\u0000${service}`;
}

/**
 * Holds every breaker of the fleet, applies the engine to Acquire and Report, persists what
 * changed before answering, runs the OPEN → HALF_OPEN timers and publishes transitions.
 */
export class BreakerRegistry {
  private readonly breakers = new Map<string, Breaker>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Event id of each breaker's last transition, so the next one can name it as its cause. */
  private readonly lastEventIds = new Map<string, string>();
  private readonly dirty = new Set<Breaker>();
  /** Per-service breakers per dependency, to bound how many callers can make. */
  private readonly serviceBreakers = new Map<string, number>();
  private readonly flushTimer: NodeJS.Timeout;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: BreakerStore,
    private readonly policies: PolicyRegistry,
    private readonly hub: EventHub,
    private readonly clock: () => number,
    private readonly logger: Logger,
  ) {
    const nowMs = clock();
    for (const breaker of store.loadAll()) {
      const policy = policies.get(breaker.dependency);
      if (policy === undefined) continue;
      applyPolicy(breaker, policy);
      this.breakers.set(keyOf(breaker.dependency, breaker.service), breaker);
      if (breaker.service !== "") {
        const count = this.serviceBreakers.get(breaker.dependency) ?? 0;
        this.serviceBreakers.set(breaker.dependency, count + 1);
      }
    }
    // Resume every breaker where it was: an OPEN one whose wait ran out while the server was
    // down moves to HALF_OPEN now, the others get their timer for the remaining wait.
    for (const breaker of this.breakers.values()) {
      this.commit([breaker], tick(breaker, nowMs), serverCause());
      this.schedule(breaker);
    }
    this.flushTimer = setInterval(() => this.flushWindows(), WINDOW_FLUSH_INTERVAL_MS);
    this.flushTimer.unref();
    this.unsubscribe = hub.subscribe((event) => {
      if (event.kind === "policy-changed") this.onPolicyChanged(event.policy);
      else if (event.kind === "policy-deleted") this.onPolicyDeleted(event.dependency);
    });
  }

  private breakerFor(policy: PolicySpec, service: string): Breaker {
    const breaker = this.findOrCreate(policy, service);
    if (breaker === undefined) {
      throw new ResourceExhaustedError(
        `dependency ${policy.dependency} already has ${MAX_SERVICE_BREAKERS_PER_DEPENDENCY} per-service breakers; no more are created`,
      );
    }
    return breaker;
  }

  /** The breaker for the policy and calling service; undefined past the per-service cap. */
  private findOrCreate(policy: PolicySpec, service: string): Breaker | undefined {
    const scoped = policy.breaker.scope === "service" ? service : "";
    const key = keyOf(policy.dependency, scoped);
    let breaker = this.breakers.get(key);
    if (breaker === undefined) {
      if (scoped !== "") {
        const count = this.serviceBreakers.get(policy.dependency) ?? 0;
        if (count >= MAX_SERVICE_BREAKERS_PER_DEPENDENCY) return undefined;
        this.serviceBreakers.set(policy.dependency, count + 1);
      }
      breaker = createBreaker(policy.dependency, scoped, policy, this.clock());
      this.breakers.set(key, breaker);
    }
    return breaker;
  }

  acquire(dependency: string, service: string, traceId: string, principal: string): AcquireAnswer {
    const policy = this.policies.require(dependency);
    const breaker = this.breakerFor(policy, service);
    // Only a HALF_OPEN breaker (or an OPEN one about to become it) grants a permit: the others
    // skip making an id nobody would use.
    const kind = breaker.phase.kind;
    const permitId = kind === "half-open" || kind === "open" ? randomUUID() : "";
    const result = acquire(breaker, policy, this.clock(), permitId);
    this.commit([breaker], result, { traceId, causationId: "", principal });
    return {
      decision: result.decision,
      state: breaker.phase.kind,
      policyRevision: policy.revision,
    };
  }

  /** Counts a batch of outcomes; returns how many counted towards a window. */
  report(outcomes: readonly ReportedOutcome[], principal: string): number {
    const nowMs = this.clock();
    const changed = new Set<Breaker>();
    const transitions: Transition[] = [];
    const causes: Cause[] = [];
    let counted = 0;
    for (const outcome of outcomes) {
      const policy = this.policies.get(outcome.dependency);
      // A policy deleted while the batch was in flight: nothing left to count against.
      if (policy === undefined) continue;
      // A service past the per-service cap gets no breaker: its outcomes are not counted (the
      // answer's `counted` says so), and the other outcomes of the batch still are.
      const breaker = this.findOrCreate(policy, outcome.service);
      if (breaker === undefined) continue;
      const effect = record(breaker, policy, outcome, nowMs);
      if (effect.counted === true) counted++;
      if (effect.stateChanged) changed.add(breaker);
      else if (effect.counted === true) this.dirty.add(breaker);
      for (const t of effect.transitions) {
        transitions.push(t);
        causes.push({ traceId: outcome.traceId, causationId: outcome.causationId, principal });
      }
    }
    if (changed.size > 0) {
      const stored = this.store.save(changed, transitions);
      for (const b of changed) {
        this.dirty.delete(b);
        this.schedule(b);
      }
      for (const [i, t] of stored.entries()) this.announce(t, causes[i] ?? serverCause());
    }
    return counted;
  }

  /**
   * An operator's ForceBreaker. `service` names the breaker of a per-service policy and must be
   * empty for a dependency-wide one. The transition is stored before this returns, then
   * published and audited with `principal` as its actor.
   */
  force(
    dependency: string,
    service: string,
    action: ForceAction,
    reason: string,
    principal: string,
    traceId: string,
  ): BreakerView {
    const policy = this.policies.require(dependency);
    const perService = policy.breaker.scope === "service";
    if (perService && service === "") {
      throw new InvalidArgumentError(
        "service",
        `is required: the policy of ${dependency} keeps one breaker per calling service`,
      );
    }
    if (!perService && service !== "") {
      throw new InvalidArgumentError(
        "service",
        `must be empty: the policy of ${dependency} keeps one breaker for every service`,
      );
    }
    const breaker = this.breakerFor(policy, service);
    const effect = force(breaker, action, principal, reason, this.clock());
    this.commit([breaker], effect, { traceId, causationId: "", principal });
    return this.view(breaker);
  }

  /** A breaker's state; one not seen yet is CLOSED and empty, and reading it creates nothing. */
  get(dependency: string, service: string): BreakerView {
    const policy = this.policies.require(dependency);
    const scoped = policy.breaker.scope === "service" ? service : "";
    const breaker =
      this.breakers.get(keyOf(dependency, scoped)) ??
      createBreaker(dependency, scoped, policy, this.clock());
    return this.view(breaker);
  }

  list(): BreakerView[] {
    return [...this.breakers.values()].map((b) => this.view(b));
  }

  listTransitions(dependency: string, afterSequence: number, limit: number): StoredTransition[] {
    return this.store.listTransitions(dependency, afterSequence, limit);
  }

  /** Writes pending window counters and stops the timers. */
  close(): void {
    clearInterval(this.flushTimer);
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    this.unsubscribe();
    this.flushWindows();
  }

  private view(b: Breaker): BreakerView {
    const nowMs = this.clock();
    // A time window's outcomes age out as the clock moves, not only when new ones arrive.
    const figures = figuresOf(b, nowMs);
    return {
      dependency: b.dependency,
      service: b.service,
      state: b.phase.kind,
      openUntilMs: b.phase.kind === "open" ? b.phase.untilMs : 0,
      consecutiveOpens: b.consecutiveOpens,
      ...figures,
      policyRevision: b.policyRevision,
      changedAtMs: b.changedAtMs,
      reason: b.reason,
      permitsInFlight: permitsInFlight(b, nowMs),
      forcedBy: b.forcedBy,
    };
  }

  /** Persists an engine effect on `breakers` before the caller answers, then publishes. */
  private commit(breakers: Breaker[], effect: Effect, cause: Cause): void {
    if (!effect.stateChanged) return;
    const stored = this.store.save(breakers, effect.transitions);
    for (const b of breakers) {
      this.dirty.delete(b);
      this.schedule(b);
    }
    for (const t of stored) this.announce(t, cause);
  }

  private announce(transition: StoredTransition, cause: Cause): void {
    const key = keyOf(transition.dependency, transition.service);
    const eventId = randomUUID();
    const causationId = cause.causationId || (this.lastEventIds.get(key) ?? "");
    const traceId = cause.traceId;
    this.lastEventIds.set(key, eventId);
    this.logger.info(
      {
        dependency: transition.dependency,
        service: transition.service || undefined,
        from: transition.from,
        to: transition.to,
        reason: transition.reason,
        window: transition.window,
        traceId: traceId || undefined,
      },
      "breaker transition",
    );
    this.hub.publish({
      kind: "breaker-transition",
      transition,
      eventId,
      correlationId: traceId,
      causationId,
      atMs: transition.atMs,
      principal: cause.principal,
    });
  }

  /** Arms the OPEN → HALF_OPEN timer of an open breaker (on the server's clock, not lazily). */
  private schedule(breaker: Breaker): void {
    const key = keyOf(breaker.dependency, breaker.service);
    const existing = this.timers.get(key);
    if (existing !== undefined) clearTimeout(existing);
    this.timers.delete(key);
    if (breaker.phase.kind !== "open") return;
    const delayMs = Math.max(0, breaker.phase.untilMs - this.clock());
    const timer = setTimeout(() => {
      this.timers.delete(key);
      try {
        this.commit([breaker], tick(breaker, this.clock()), serverCause());
      } catch (err) {
        this.logger.error({ err, dependency: breaker.dependency }, "breaker timer failed");
      }
      // Timers run on a monotonic clock and may fire a millisecond before the wall-clock time
      // they were set for; a breaker still OPEN then gets its timer again for the rest.
      if (breaker.phase.kind === "open" && !this.timers.has(key)) this.schedule(breaker);
    }, delayMs);
    this.timers.set(key, timer);
  }

  private flushWindows(): void {
    if (this.dirty.size === 0) return;
    try {
      this.store.save(this.dirty, []);
      this.dirty.clear();
    } catch (err) {
      this.logger.error({ err }, "window flush failed; will retry");
    }
  }

  private onPolicyChanged(policy: PolicySpec): void {
    const perService = policy.breaker.scope === "service";
    const stale: Breaker[] = [];
    for (const breaker of this.breakers.values()) {
      if (breaker.dependency !== policy.dependency) continue;
      // A change of scope leaves the breakers of the old scope without callers: drop them.
      if ((breaker.service !== "") !== perService) stale.push(breaker);
      else {
        applyPolicy(breaker, policy);
        this.dirty.add(breaker);
      }
    }
    if (stale.length > 0) {
      for (const b of stale) this.forget(b);
      this.store.remove(stale);
    }
  }

  private forget(breaker: Breaker): void {
    const key = keyOf(breaker.dependency, breaker.service);
    this.breakers.delete(key);
    this.dirty.delete(breaker);
    const timer = this.timers.get(key);
    if (timer !== undefined) clearTimeout(timer);
    this.timers.delete(key);
    if (breaker.service !== "") {
      const count = this.serviceBreakers.get(breaker.dependency) ?? 1;
      this.serviceBreakers.set(breaker.dependency, count - 1);
    }
  }

  private onPolicyDeleted(dependency: string): void {
    for (const breaker of [...this.breakers.values()]) {
      if (breaker.dependency === dependency) this.forget(breaker);
    }
    this.serviceBreakers.delete(dependency);
  }
}
