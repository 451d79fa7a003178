import type { Policy } from "../gen/bulwark/v1/policy_pb.ts";
import { NAME_PATTERN } from "../server/domain/names.ts";
import type { FleetBreakerState, FleetChange, FleetState, FollowedBreaker } from "./fleet-state.ts";

/**
 * Where an event comes from: `current` is the state held when the subscription started (each
 * breaker and policy once, before anything else); `transition` a change as it happened;
 * `resync` the state after a reconnect, for anything that changed while the SDK was not
 * listening.
 */
export type FleetEventOrigin = "current" | "transition" | "resync";

/** A breaker's state, for services that follow the fleet's breakers. */
export interface BreakerStateEvent {
  type: "breaker-state";
  dependency: string;
  /** The calling service for per-service breakers; empty for dependency-wide ones. */
  service: string;
  state: FleetBreakerState;
  /** The state before, when the SDK knew it. */
  from: FleetBreakerState | undefined;
  /** While OPEN: when the server lets probes through (Unix ms); 0 otherwise. */
  openUntilMs: number;
  changedAtMs: number;
  reason: string;
  /** The transition's sequence number; 0 for states read from a listing. */
  sequence: number;
  origin: FleetEventOrigin;
}

/** A policy was created or changed. */
export interface PolicyEvent {
  type: "policy";
  dependency: string;
  revision: number;
  policy: Policy;
  origin: FleetEventOrigin;
}

/** A policy was deleted. */
export interface PolicyDeletedEvent {
  type: "policy-deleted";
  dependency: string;
  revision: number;
  origin: FleetEventOrigin;
}

/** What `subscribe` and `watch` deliver. */
export type FleetEvent = BreakerStateEvent | PolicyEvent | PolicyDeletedEvent;

export type FleetEventListener = (event: FleetEvent) => void;

export interface FleetSubscribeOptions {
  /** Only events of these dependencies; all when unset or empty. */
  dependencies?: readonly string[];
}

export interface FleetWatchOptions extends FleetSubscribeOptions {
  /** Ends the iteration. */
  signal?: AbortSignal;
}

/**
 * Events an iterator may fall behind by. Past it, the queue is replaced by the current state
 * (as `resync` events): a slow reader loses intermediate transitions, never the latest state.
 */
export const MAX_WATCH_QUEUE = 10_000;

function breakerEvent(
  b: FollowedBreaker,
  from: FleetBreakerState | undefined,
  origin: FleetEventOrigin,
): BreakerStateEvent {
  return {
    type: "breaker-state",
    dependency: b.dependency,
    service: b.service,
    state: b.state,
    from,
    openUntilMs: b.openUntilMs,
    changedAtMs: b.changedAtMs,
    reason: b.reason,
    sequence: b.sequence,
    origin,
  };
}

function eventOf(change: FleetChange): FleetEvent {
  switch (change.kind) {
    case "breaker":
      return breakerEvent(change.breaker, change.from, change.origin);
    case "policy":
      return {
        type: "policy",
        dependency: change.policy.dependency,
        revision: change.policy.revision,
        policy: change.policy.wire,
        origin: change.origin,
      };
    case "policy-deleted":
      return {
        type: "policy-deleted",
        dependency: change.dependency,
        revision: change.revision,
        origin: change.origin,
      };
  }
}

/** The filter of `dependencies`; a RangeError names a value that can never match a dependency. */
function filterOf(options: FleetSubscribeOptions | undefined): (dependency: string) => boolean {
  const dependencies = options?.dependencies ?? [];
  if (!Array.isArray(dependencies)) {
    throw new RangeError("options.dependencies must be an array of dependency names");
  }
  for (const [i, d] of dependencies.entries()) {
    if (typeof d !== "string" || !NAME_PATTERN.test(d)) {
      throw new RangeError(
        `options.dependencies[${i}] is not a dependency name; got ${JSON.stringify(d)}`,
      );
    }
  }
  const only = new Set(dependencies);
  return only.size === 0 ? () => true : (dependency) => only.has(dependency);
}

/** The held state as `current` events: policies first, then breakers. */
function currentEvents(state: FleetState, wanted: (dependency: string) => boolean): FleetEvent[] {
  const out: FleetEvent[] = [];
  for (const p of state.allPolicies()) {
    if (!wanted(p.dependency)) continue;
    out.push({
      type: "policy",
      dependency: p.dependency,
      revision: p.revision,
      policy: p.wire,
      origin: "current",
    });
  }
  for (const b of state.allBreakers()) {
    if (wanted(b.dependency)) out.push(breakerEvent(b, undefined, "current"));
  }
  return out;
}

/**
 * Calls `listener` with the current state of every matching breaker and policy, then with every
 * change as the SDK applies it. Returns the unsubscribe function.
 */
export function subscribeFleet(
  state: FleetState,
  listener: FleetEventListener,
  options?: FleetSubscribeOptions,
): () => void {
  const wanted = filterOf(options);
  for (const event of currentEvents(state, wanted)) {
    try {
      listener(event);
    } catch {
      // The application owns its listener; its bug must not stop the subscription.
    }
  }
  return state.onChange((change) => {
    const event = eventOf(change);
    if (wanted(event.dependency)) listener(event);
  });
}

/** The same events as subscribeFleet, as an async iterator that ends on `signal` or `return()`. */
export function watchFleet(
  state: FleetState,
  options?: FleetWatchOptions,
): AsyncIterableIterator<FleetEvent> {
  const wanted = filterOf(options);
  let queue: FleetEvent[] = currentEvents(state, wanted);
  let wake: (() => void) | undefined;
  let done = false;
  const unsubscribe = state.onChange((change) => {
    const event = eventOf(change);
    if (!wanted(event.dependency)) return;
    if (queue.length >= MAX_WATCH_QUEUE) {
      queue = currentEvents(state, wanted).map((e) => ({ ...e, origin: "resync" }) as FleetEvent);
    } else {
      queue.push(event);
    }
    wake?.();
  });
  const finish = () => {
    done = true;
    unsubscribe();
    options?.signal?.removeEventListener("abort", finish);
    wake?.();
  };
  if (options?.signal?.aborted) finish();
  else options?.signal?.addEventListener("abort", finish, { once: true });
  const iterator: AsyncIterableIterator<FleetEvent> = {
    async next() {
      for (;;) {
        const event = queue.shift();
        if (event !== undefined) return { value: event, done: false };
        if (done) return { value: undefined, done: true };
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = undefined;
      }
    },
    async return() {
      finish();
      queue = [];
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
