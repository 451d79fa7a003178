import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AcquireDecision,
  type BreakerService,
  type WatchResponse,
  WatchResponseSchema,
} from "../../gen/bulwark/v1/breaker_pb.ts";
import { OutcomeResult } from "../../gen/bulwark/v1/breaker_types_pb.ts";
import type { CountedResult } from "../domain/breaker-engine.ts";
import type { BreakerRegistry, ReportedOutcome } from "../domain/breaker-registry.ts";
import { InvalidArgumentError, ResourceExhaustedError } from "../domain/errors.ts";
import { assertName } from "../domain/names.ts";
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
import { intArg, serviceArg, textArg } from "./request-fields.ts";

/** Largest Report batch: bounds the work one request can make the server do while it holds the event loop. */
export const MAX_REPORT_BATCH = 1_000;
/** Events a Watch subscriber may fall behind by before its stream is ended (it then resyncs). */
export const MAX_WATCH_BACKLOG = 10_000;
/**
 * Watch streams open at once. Each holds a subscription and a backlog; past the cap a new one is
 * refused with ResourceExhausted rather than letting watchers exhaust the server's memory.
 */
export const MAX_WATCHERS = 512;
/** Default and largest page of ListTransitions. */
export const DEFAULT_TRANSITIONS_LIMIT = 100;
export const MAX_TRANSITIONS_LIMIT = 1_000;
/** Length caps of free-text outcome fields. */
const MAX_ID_LENGTH = 128;

/** Each known result: its name (metrics, logs) and how the breaker counts it. */
const RESULTS: Record<number, { name: string; counted: CountedResult } | undefined> = {
  [OutcomeResult.SUCCESS]: { name: "success", counted: "success" },
  [OutcomeResult.FAILURE]: { name: "failure", counted: "failure" },
  [OutcomeResult.TIMEOUT]: { name: "timeout", counted: "timeout" },
  [OutcomeResult.REJECTED]: { name: "rejected", counted: "not-counted" },
  [OutcomeResult.CANCELLED]: { name: "cancelled", counted: "not-counted" },
  [OutcomeResult.IGNORED]: { name: "ignored", counted: "not-counted" },
};

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
    acquire(req, ctx) {
      assertName("dependency", req.dependency);
      serviceArg("service", req.service, true);
      intArg("attempt", req.attempt, 0, 1_000);
      textArg("trace_id", req.traceId, MAX_ID_LENGTH);
      textArg("request_id", req.requestId, MAX_ID_LENGTH);
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
      if (req.outcomes.length === 0 || req.outcomes.length > MAX_REPORT_BATCH) {
        throw new InvalidArgumentError(
          "outcomes",
          `must hold 1 to ${MAX_REPORT_BATCH} outcomes; got ${req.outcomes.length}`,
        );
      }
      // Validate the whole batch before counting any of it, so a bad batch changes no window.
      const outcomes: ReportedOutcome[] = req.outcomes.map((o, i) => {
        const at = `outcomes[${i}]`;
        assertName(`${at}.dependency`, o.dependency);
        serviceArg(`${at}.service`, o.service, true);
        const result = RESULTS[o.result]?.counted;
        if (result === undefined) {
          throw new InvalidArgumentError(`${at}.result`, `must be a known result; got ${o.result}`);
        }
        intArg(`${at}.attempt`, o.attempt, 0, 1_000);
        intArg(`${at}.latency_ms`, o.latencyMs, 0, 86_400_000);
        intArg(`${at}.retry_after_ms`, o.retryAfterMs, 0, 86_400_000);
        intArg(`${at}.status_code`, o.statusCode, 0, 999);
        return {
          dependency: o.dependency,
          service: o.service,
          permitId: textArg(`${at}.permit_id`, o.permitId, MAX_ID_LENGTH),
          result,
          errorType: textArg(`${at}.error_type`, o.errorType, MAX_ID_LENGTH),
          traceId: textArg(`${at}.trace_id`, o.traceId, MAX_ID_LENGTH),
          causationId: textArg(`${at}.causation_id`, o.causationId, MAX_ID_LENGTH),
        };
      });
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
      assertName("dependency", req.dependency);
      serviceArg("service", req.service, false);
      return { breaker: breakerToWire(breakers.get(req.dependency, req.service)) };
    },

    listBreakers() {
      return { breakers: breakers.list().map(breakerToWire) };
    },

    listTransitions(req) {
      if (req.dependency !== "") assertName("dependency", req.dependency);
      const limit =
        req.limit === 0
          ? DEFAULT_TRANSITIONS_LIMIT
          : intArg("limit", req.limit, 1, MAX_TRANSITIONS_LIMIT);
      if (req.afterSequence < 0n) {
        throw new InvalidArgumentError("after_sequence", `must be >= 0; got ${req.afterSequence}`);
      }
      const after = Number(req.afterSequence);
      return {
        transitions: breakers.listTransitions(req.dependency, after, limit).map(transitionToWire),
      };
    },

    async *watch(req, ctx) {
      req.dependencies.forEach((d, i) => {
        assertName(`dependencies[${i}]`, d);
      });
      if (watchers >= MAX_WATCHERS) {
        throw new ResourceExhaustedError(`${MAX_WATCHERS} Watch streams are open; retry later`);
      }
      watchers++;
      const only = new Set(req.dependencies);
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
