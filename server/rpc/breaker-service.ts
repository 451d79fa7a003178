import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AcquireDecision,
  type BreakerService,
  type WatchResponse,
  WatchResponseSchema,
} from "../../gen/bulwark/v1/breaker_pb.ts";
import type { BreakerRegistry } from "../domain/breaker-registry.ts";
import { ResourceExhaustedError } from "../domain/errors.ts";
import type { PolicyRegistry } from "../domain/policy-registry.ts";
import { type DomainEvent, dependencyOf } from "../events/domain-event.ts";
import type { EventHub } from "../events/event-hub.ts";
import {
  breakerToWire,
  eventToWire,
  policyToWire,
  stateToWire,
  transitionToWire,
} from "../wire/convert.ts";
import { callInfo } from "./call-context.ts";
import {
  RESULTS,
  validateAcquire,
  validateForceBreaker,
  validateGetBreaker,
  validateListTransitions,
  validateReport,
  validateWatch,
} from "./request-validation.ts";

/** Events a Watch subscriber may fall behind by before its stream is ended (it then resyncs). */
export const MAX_WATCH_BACKLOG = 10_000;
/**
 * Watch streams open at once. Each holds a subscription and a backlog; past the cap a new one is
 * refused with ResourceExhausted rather than letting watchers exhaust the server's memory.
 */
export const MAX_WATCHERS = 512;

/** Observers of the data path: metrics and alerts. */
export interface DataPathObservers {
  onAcquire(dependency: string, decision: "allow" | "reject" | "probe"): void;
  /** Every validated outcome of a Report, with the name of its result. */
  onOutcomes(outcomes: readonly ObservedOutcome[]): void;
}

export interface ObservedOutcome {
  dependency: string;
  service: string;
  result: string;
  latencyMs: number;
  traceId: string;
}

export function breakerService(
  breakers: BreakerRegistry,
  policies: PolicyRegistry,
  hub: EventHub,
  shutdown: AbortSignal,
  observers: DataPathObservers,
): ServiceImpl<typeof BreakerService> {
  let watchers = 0;
  return {
    forceBreaker(req, ctx) {
      const { dependency, service, action, reason } = validateForceBreaker(req);
      const info = callInfo(ctx);
      const view = breakers.force(
        dependency,
        service,
        action,
        reason,
        info.principal,
        info.traceId,
      );
      return { breaker: breakerToWire(view) };
    },
    acquire(req, ctx) {
      validateAcquire(req);
      const info = callInfo(ctx);
      const answer = breakers.acquire(
        req.dependency,
        req.service,
        req.traceId || info.traceId,
        info.principal,
      );
      const d = answer.decision;
      observers.onAcquire(req.dependency, d.kind);
      return {
        decision:
          d.kind === "allow"
            ? AcquireDecision.ALLOW
            : d.kind === "probe"
              ? AcquireDecision.PROBE
              : AcquireDecision.REJECT,
        state: stateToWire(answer.state),
        retryAtUnixMs: d.kind === "reject" ? BigInt(d.retryAtMs) : 0n,
        permitId: d.kind === "probe" ? d.permitId : "",
        permitExpiresAtUnixMs: d.kind === "probe" ? BigInt(d.expiresAtMs) : 0n,
        policyRevision: BigInt(answer.policyRevision),
      };
    },

    report(req, ctx) {
      const outcomes = validateReport(req);
      const counted = breakers.report(outcomes, callInfo(ctx).principal);
      // Only dependencies with a policy reach the metrics: invented names would fill its series.
      observers.onOutcomes(
        req.outcomes
          .filter((o) => policies.get(o.dependency) !== undefined)
          .map((o) => ({
            dependency: o.dependency,
            service: o.service,
            result: RESULTS[o.result]?.name ?? "unknown",
            latencyMs: o.latencyMs,
            traceId: o.traceId,
          })),
      );
      return { counted };
    },

    getBreaker(req) {
      const { dependency, service } = validateGetBreaker(req);
      return { breaker: breakerToWire(breakers.get(dependency, service)) };
    },

    listBreakers() {
      return { breakers: breakers.list().map(breakerToWire) };
    },

    listTransitions(req) {
      const { dependency, afterSequence, limit } = validateListTransitions(req);
      return {
        transitions: breakers
          .listTransitions(dependency, afterSequence, limit)
          .map(transitionToWire),
      };
    },

    async *watch(req, ctx) {
      const only = validateWatch(req);
      if (watchers >= MAX_WATCHERS) {
        throw new ResourceExhaustedError(`${MAX_WATCHERS} Watch streams are open; retry later`);
      }
      watchers++;
      const wanted = (dependency: string) => only.size === 0 || only.has(dependency);
      const backlog: DomainEvent[] = [];
      let overflowed = false;
      let wake: (() => void) | undefined;
      // Subscribe before taking the snapshot so no event falls between the two.
      const unsubscribe = hub.subscribe((event) => {
        if (!wanted(dependencyOf(event))) return;
        if (backlog.length >= MAX_WATCH_BACKLOG) overflowed = true;
        else backlog.push(event);
        wake?.();
      });
      const stop = AbortSignal.any([ctx.signal, shutdown]);
      const onStop = () => wake?.();
      stop.addEventListener("abort", onStop);
      try {
        yield create(WatchResponseSchema, {
          kind: {
            case: "snapshot",
            value: {
              policies: policies
                .list()
                .filter((p) => wanted(p.dependency))
                .map(policyToWire),
              breakers: breakers
                .list()
                .filter((b) => wanted(b.dependency))
                .map(breakerToWire),
            },
          },
        });
        while (!stop.aborted) {
          if (overflowed) {
            throw new ResourceExhaustedError(
              `watcher fell more than ${MAX_WATCH_BACKLOG} events behind; resubscribe`,
            );
          }
          const event = backlog.shift();
          if (event === undefined) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            wake = undefined;
            continue;
          }
          const message: WatchResponse = create(WatchResponseSchema, {
            kind: { case: "event", value: eventToWire(event) },
          });
          yield message;
        }
      } finally {
        watchers--;
        unsubscribe();
        stop.removeEventListener("abort", onStop);
      }
    },
  };
}
