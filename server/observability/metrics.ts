import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { BreakerStateName } from "../domain/breaker-types.ts";

/** Prefix of every metric this server exposes, process metrics included. */
export const METRIC_PREFIX = "bulwark_";

/**
 * Upper bounds (seconds) of `bulwark_call_latency_seconds`. Calls to external APIs take from a
 * few milliseconds (a cache or a fast REST API) to tens of seconds (an LLM completion), so the
 * bounds run from 5 ms to 30 s in roughly 1-2.5-5 steps per decade. histogram_quantile
 * interpolates linearly inside a bucket, so a p95/p99 is off by at most that bucket's width;
 * the extra 20 s bound narrows the slow end where LLM timeouts live. A quantile that falls
 * beyond 30 s reads as 30 s (the highest finite bound).
 */
export const CALL_LATENCY_BUCKETS_SECONDS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30,
];

/**
 * Upper bounds (seconds) of `bulwark_rpc_duration_seconds`, 0.1 ms to 1 s: an Acquire or Report
 * served from memory takes well under a millisecond, one that waits on a SQLite commit a few
 * milliseconds, and anything near a second is a problem worth seeing.
 */
export const RPC_DURATION_BUCKETS_SECONDS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
];

/**
 * Most distinct dependency×service label sets one metric keeps before new ones are counted under
 * {@link OTHER_LABEL}. Dependency and service names come from clients, and every label set is a
 * series held in this process and in Prometheus forever; a misbehaving client that invents names
 * would otherwise grow both without bound. 1000 is far above a real fleet's dependency count.
 */
export const MAX_LABEL_SETS = 1000;

/**
 * Label value that stands for every dependency/service past {@link MAX_LABEL_SETS}, and for a
 * result outside {@link OUTCOME_RESULTS}. It cannot clash with a real name: names start with a
 * letter or digit. Totals stay correct; only the breakdown of the overflow is lost.
 */
export const OTHER_LABEL = "_other";

/** Values of the `result` label of `bulwark_outcomes_total`. */
export const OUTCOME_RESULTS = [
  "success",
  "failure",
  "timeout",
  "rejected",
  "cancelled",
  "ignored",
] as const;

/** Results whose latency says something about the dependency and feed the latency histogram. */
const TIMED_RESULTS: ReadonlySet<string> = new Set(["success", "failure", "timeout"]);
const KNOWN_RESULTS: ReadonlySet<string> = new Set(OUTCOME_RESULTS);

/** Value of `bulwark_breaker_state` per state; fixed, since dashboards and alerts compare them. */
export const BREAKER_STATE_VALUES: Readonly<Record<BreakerStateName, number>> = {
  closed: 0,
  open: 1,
  "half-open": 2,
  "forced-open": 3,
  disabled: 4,
  "metrics-only": 5,
};

/** Decision of one Acquire: the `decision` label of `bulwark_acquire_total`. */
export type AcquireDecisionName = "allow" | "reject" | "probe";

/** What an idempotency Begin found: the `outcome` label of `bulwark_idempotency_begins_total`. */
export type BeginOutcomeName = "new" | "taken-over" | "completed" | "in-progress" | "conflict";

/** One call outcome as the metrics need it. */
export interface OutcomeSample {
  dependency: string;
  service: string;
  /** One of {@link OUTCOME_RESULTS}; anything else is counted as {@link OTHER_LABEL}. */
  result: string;
  /** How long the call took, in milliseconds; ignored unless finite and not negative. */
  latencyMs: number;
}

/** One breaker as the state gauge needs it. */
export interface BreakerStateSample {
  dependency: string;
  /** Empty for a breaker shared by every service of the dependency. */
  service: string;
  state: BreakerStateName;
}

export interface ServerMetricsOptions {
  /** Every breaker that exists now; called at each scrape, so it must be cheap and synchronous. */
  breakers: () => readonly BreakerStateSample[];
  /**
   * Also expose the process metrics of prom-client (CPU, memory, event-loop lag, GC). Default:
   * true. Known shortcoming: prom-client starts a GC observer and an event-loop monitor per
   * registry that it never stops, so tests that make many instances may turn this off.
   */
  processMetrics?: boolean;
}

const MS_PER_SECOND = 1000;

/**
 * Severity order for the overflow breaker series: open (by the breaker or an operator) is the
 * state an alert must not miss; the states that let every call through rank lowest.
 */
const STATE_SEVERITY: readonly BreakerStateName[] = [
  "closed",
  "disabled",
  "metrics-only",
  "half-open",
  "open",
  "forced-open",
];

function pairKey(dependency: string, service: string): string {
  return `${dependency}\u0000${service}`;
}

/** Admits label sets up to a limit; past it, callers use {@link OTHER_LABEL}. */
class LabelGuard {
  private readonly admitted = new Set<string>();

  /** True when `key` has (or now gets) a series of its own. */
  admit(key: string): boolean {
    if (this.admitted.has(key)) return true;
    if (this.admitted.size >= MAX_LABEL_SETS) return false;
    this.admitted.add(key);
    return true;
  }

  /** Forgets keys outside `present`, for series that are dropped along with their subject. */
  retain(present: ReadonlySet<string>): void {
    for (const key of this.admitted) if (!present.has(key)) this.admitted.delete(key);
  }
}

/**
 * The Prometheus metrics of one control-plane server, in a registry of its own rather than
 * prom-client's global one, so several servers (and tests) can run in one process without
 * sharing series. Recording never throws on odd input: metrics must not fail a request.
 */
export class ServerMetrics {
  /** The registry holding every metric below; exposed for tests and custom exporters. */
  readonly registry = new Registry();
  private readonly breakers: () => readonly BreakerStateSample[];
  private readonly outcomes: Counter<"dependency" | "service" | "result">;
  private readonly callLatency: Histogram<"dependency" | "result">;
  private readonly acquires: Counter<"dependency" | "decision">;
  private readonly transitions: Counter<"dependency" | "to">;
  private readonly breakerState: Gauge<"dependency" | "service">;
  private readonly rpcDuration: Histogram<"method" | "code">;
  private readonly alerts: Gauge<"dependency">;
  private readonly idempotencyBegins: Counter<"outcome">;
  private readonly outcomeGuard = new LabelGuard();
  private readonly latencyGuard = new LabelGuard();
  private readonly acquireGuard = new LabelGuard();
  private readonly transitionGuard = new LabelGuard();
  private readonly stateGuard = new LabelGuard();
  private readonly alertGuard = new LabelGuard();

  constructor(options: ServerMetricsOptions) {
    this.breakers = options.breakers;
    const registers = [this.registry];
    if (options.processMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
    }
    this.outcomes = new Counter({
      name: "bulwark_outcomes_total",
      help: "Call outcomes reported by services, by dependency, service and result.",
      labelNames: ["dependency", "service", "result"],
      registers,
    });
    this.callLatency = new Histogram({
      name: "bulwark_call_latency_seconds",
      help: "Latency of calls to dependencies that completed, failed or timed out, in seconds.",
      labelNames: ["dependency", "result"],
      buckets: [...CALL_LATENCY_BUCKETS_SECONDS],
      registers,
    });
    this.acquires = new Counter({
      name: "bulwark_acquire_total",
      help: "Acquire decisions by dependency; the reject series counts calls the breaker refused.",
      labelNames: ["dependency", "decision"],
      registers,
    });
    this.transitions = new Counter({
      name: "bulwark_breaker_transitions_total",
      help: "Breaker state transitions by dependency and the state entered.",
      labelNames: ["dependency", "to"],
      registers,
    });
    this.breakerState = new Gauge({
      name: "bulwark_breaker_state",
      help: "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only.",
      labelNames: ["dependency", "service"],
      registers,
      collect: () => this.fillBreakerStates(),
    });
    this.rpcDuration = new Histogram({
      name: "bulwark_rpc_duration_seconds",
      help: "Duration of RPCs served by the control plane, by method and gRPC code, in seconds.",
      labelNames: ["method", "code"],
      buckets: [...RPC_DURATION_BUCKETS_SECONDS],
      registers,
    });
    this.alerts = new Gauge({
      name: "bulwark_alerts_active",
      help: "1 while an alert is raised for the dependency, 0 once it has cleared.",
      labelNames: ["dependency"],
      registers,
    });
    this.idempotencyBegins = new Counter({
      name: "bulwark_idempotency_begins_total",
      help: "Idempotency ledger Begins by outcome: new, taken-over, completed (a replay), in-progress, conflict.",
      labelNames: ["outcome"],
      registers,
    });
  }

  /** Counts one idempotency Begin by what it found. */
  recordIdempotencyBegin(outcome: BeginOutcomeName): void {
    this.idempotencyBegins.inc({ outcome });
  }

  /**
   * Counts reported outcomes and feeds the latency histogram with the success, failure and
   * timeout ones (rejected, cancelled and ignored calls say nothing about the dependency's speed).
   */
  recordOutcomes(outcomes: readonly OutcomeSample[]): void {
    for (const outcome of outcomes) {
      const result = KNOWN_RESULTS.has(outcome.result) ? outcome.result : OTHER_LABEL;
      const own = this.outcomeGuard.admit(pairKey(outcome.dependency, outcome.service));
      this.outcomes.inc({
        dependency: own ? outcome.dependency : OTHER_LABEL,
        service: own ? outcome.service : OTHER_LABEL,
        result,
      });
      const { latencyMs } = outcome;
      if (!TIMED_RESULTS.has(result) || !Number.isFinite(latencyMs) || latencyMs < 0) continue;
      this.callLatency.observe(
        { dependency: this.guarded(this.latencyGuard, outcome.dependency), result },
        latencyMs / MS_PER_SECOND,
      );
    }
  }

  /** Counts one Acquire decision for `dependency`. */
  recordAcquire(dependency: string, decision: AcquireDecisionName): void {
    this.acquires.inc({ dependency: this.guarded(this.acquireGuard, dependency), decision });
  }

  /** Counts one breaker transition of `dependency` into state `to`. */
  recordTransition(dependency: string, to: BreakerStateName): void {
    this.transitions.inc({ dependency: this.guarded(this.transitionGuard, dependency), to });
  }

  /**
   * Observes one served RPC. `method` is `package.Service/Method`, `code` the gRPC code name
   * (`OK`, `InvalidArgument`, ...), `durationMs` the time from request to answer in milliseconds.
   * No cardinality guard: both come from the fixed set of routes and codes.
   */
  recordRpc(method: string, code: string, durationMs: number): void {
    if (!Number.isFinite(durationMs) || durationMs < 0) return;
    this.rpcDuration.observe({ method, code }, durationMs / MS_PER_SECOND);
  }

  /** Raises (1) or clears (0) the alert gauge of `dependency`; a cleared series stays at 0. */
  setAlert(dependency: string, active: boolean): void {
    this.alerts.set({ dependency: this.guarded(this.alertGuard, dependency) }, active ? 1 : 0);
  }

  /** Every metric in the Prometheus text exposition format, with the matching content type. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private guarded(guard: LabelGuard, dependency: string): string {
    return guard.admit(dependency) ? dependency : OTHER_LABEL;
  }

  /**
   * Rebuilds the state gauge from the callback at scrape time, so a breaker that is gone loses
   * its series. Breakers past the limit share one `_other` series holding the most severe of
   * their states (forced open over open over half-open over the rest), so an alert on open still
   * fires.
   */
  private fillBreakerStates(): void {
    const samples = this.breakers();
    this.stateGuard.retain(new Set(samples.map((b) => pairKey(b.dependency, b.service))));
    this.breakerState.reset();
    let overflow: BreakerStateName | undefined;
    for (const { dependency, service, state } of samples) {
      if (this.stateGuard.admit(pairKey(dependency, service))) {
        this.breakerState.set({ dependency, service }, BREAKER_STATE_VALUES[state]);
      } else if (
        overflow === undefined ||
        STATE_SEVERITY.indexOf(state) > STATE_SEVERITY.indexOf(overflow)
      ) {
        overflow = state;
      }
    }
    if (overflow !== undefined) {
      this.breakerState.set(
        { dependency: OTHER_LABEL, service: OTHER_LABEL },
        BREAKER_STATE_VALUES[overflow],
      );
    }
  }
}
