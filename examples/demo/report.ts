/**
 * Turns what the demo observed into its report: per phase the traffic and what Bulwark did with
 * it, every breaker transition, and a check of the promise that matters most: once the breaker
 * opened during an outage, the upstream saw only the half-open probes.
 */
import type { Arrival, PhaseStats } from "../flaky-openai/flaky-openai-server.ts";
import { phaseAt, type Scenario } from "../flaky-openai/scenario.ts";
import type { AttemptRecord, RequestRecord, SdkEventRecord } from "./messages.ts";

export interface TransitionRecord {
  atMs: number;
  from: string;
  to: string;
  reason: string;
  calls: number;
  failureRatePercent: number;
}

/**
 * One phase's figures. Every request figure counts the requests that started in the phase, so a
 * row adds up: requests = successes + fallbacks + errors, and rejections and retries belong to
 * those same requests.
 */
export interface PhaseReport {
  name: string;
  mode: string;
  /** Phase start and end, relative to the scenario start, in ms. */
  startMs: number;
  endMs: number;
  requests: number;
  successes: number;
  fallbacks: number;
  errors: number;
  retries: number;
  breakerRejections: number;
  upstreamCalls: number;
  latencyMs: { p50: number; p95: number; p99: number };
  /** Set for phases in which the breaker opened. */
  afterOpen?: {
    /** When the breaker first opened in this phase, relative to the scenario start. */
    openedAtMs: number;
    upstreamCalls: number;
    /** Upstream calls that were half-open probes. */
    probes: number;
    /** Upstream calls the server allowed while the breaker was still closed (in flight). */
    admittedBeforeOpen: number;
    /**
     * Upstream calls admitted by an SDK on its own because the control plane did not answer
     * within the acquire timeout (the SDK keeps serving then; see README).
     */
    local: number;
    /** Upstream calls not matched to any attempt an SDK made: must be 0. */
    unexpected: number;
  };
}

export interface DemoReport {
  scenario: string;
  startedAt: string;
  instances: number;
  requestsPerSecond: number;
  phases: PhaseReport[];
  transitions: (TransitionRecord & { atRelativeMs: number })[];
  totals: { requests: number; successes: number; fallbacks: number; errors: number };
}

export interface Observations {
  scenario: Scenario;
  startedAtMs: number;
  instances: number;
  requestsPerSecond: number;
  stats: PhaseStats[];
  arrivals: Arrival[];
  requests: RequestRecord[];
  attempts: AttemptRecord[];
  events: SdkEventRecord[];
  transitions: TransitionRecord[];
}

/** Nearest-rank percentile of sorted values; 0 for none. */
function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[rank]! * 10) / 10;
}

function spanOf(traceparent: string): string {
  return traceparent.split("-")[2] ?? "";
}

export function buildReport(o: Observations): DemoReport {
  const phaseOf = (atMs: number) => phaseAt(o.scenario, Math.max(0, atMs - o.startedAtMs)).index;
  const attemptsBySpan = new Map(o.attempts.map((a) => [a.spanId, a]));
  let startMs = 0;
  const phases = o.scenario.phases.map((phase, index): PhaseReport => {
    const endMs = index === o.scenario.phases.length - 1 ? Infinity : startMs + phase.durationMs;
    const inPhase = (atMs: number) => phaseOf(atMs) === index;
    const requests = o.requests.filter((r) => inPhase(r.startedAtMs));
    const latencies = requests.map((r) => r.latencyMs).sort((a, b) => a - b);
    const report: PhaseReport = {
      name: phase.name,
      mode: phase.mode,
      startMs,
      endMs: Number.isFinite(endMs) ? endMs : startMs + phase.durationMs,
      requests: requests.length,
      successes: requests.filter((r) => r.outcome === "success").length,
      fallbacks: requests.filter((r) => r.outcome === "fallback").length,
      errors: requests.filter((r) => r.outcome === "error").length,
      retries: requests.reduce((sum, r) => sum + r.retries, 0),
      breakerRejections: requests.filter((r) => r.rejected).length,
      upstreamCalls: o.stats[index]?.requests ?? 0,
      latencyMs: {
        p50: percentile(latencies, 50),
        p95: percentile(latencies, 95),
        p99: percentile(latencies, 99),
      },
    };
    const opened = o.transitions.find((t) => t.to === "open" && inPhase(t.atMs));
    if (opened !== undefined) {
      // Until the breaker closes again, if it does within the phase.
      const closedAtMs =
        o.transitions.find((t) => t.to === "closed" && t.atMs > opened.atMs)?.atMs ?? Infinity;
      const after = o.arrivals.filter(
        (a) => a.phaseIndex === index && a.atMs >= opened.atMs && a.atMs < closedAtMs,
      );
      let probes = 0;
      let admittedBeforeOpen = 0;
      let local = 0;
      let unexpected = 0;
      // An ALLOW from the server was necessarily given while the breaker was still CLOSED, and
      // an attempt admitted from the followed (`fleet`) state was admitted before the instance
      // heard of the opening: either arriving after the opening was in flight, or slipped
      // through while the transition travelled. Anything admitted by the local breaker, or not
      // matched to an attempt the SDK made, is unexpected.
      for (const arrival of after) {
        const attempt = attemptsBySpan.get(spanOf(arrival.traceparent));
        if (attempt?.admission === "probe") probes++;
        else if (attempt?.admission === "allow" || attempt?.admission === "fleet")
          admittedBeforeOpen++;
        else if (attempt?.admission === "local") local++;
        else unexpected++;
      }
      report.afterOpen = {
        openedAtMs: opened.atMs - o.startedAtMs,
        upstreamCalls: after.length,
        probes,
        admittedBeforeOpen,
        local,
        unexpected,
      };
    }
    startMs += phase.durationMs;
    return report;
  });
  const total = (outcome: RequestRecord["outcome"]) =>
    o.requests.filter((r) => r.outcome === outcome).length;
  return {
    scenario: o.scenario.name,
    startedAt: new Date(o.startedAtMs).toISOString(),
    instances: o.instances,
    requestsPerSecond: o.requestsPerSecond,
    phases,
    transitions: o.transitions.map((t) => ({ ...t, atRelativeMs: t.atMs - o.startedAtMs })),
    totals: {
      requests: o.requests.length,
      successes: total("success"),
      fallbacks: total("fallback"),
      errors: total("error"),
    },
  };
}

function pad(value: string | number, width: number): string {
  return String(value).padStart(width);
}

/** The report as text for the terminal. */
export function formatReport(r: DemoReport): string {
  const lines: string[] = [];
  lines.push(
    `Scenario ${r.scenario}: ${r.instances} instances × ${r.requestsPerSecond} req/s, started ${r.startedAt}`,
    "",
    `${"phase".padEnd(12)}${pad("time", 12)}${pad("requests", 10)}${pad("ok", 7)}${pad("retries", 9)}` +
      `${pad("rejected", 10)}${pad("fallback", 10)}${pad("errors", 8)}${pad("upstream", 10)}` +
      `${pad("p50 ms", 9)}${pad("p95 ms", 9)}${pad("p99 ms", 9)}`,
  );
  for (const p of r.phases) {
    const time = `${(p.startMs / 1000).toFixed(0)}-${(p.endMs / 1000).toFixed(0)}s`;
    lines.push(
      `${p.name.padEnd(12)}${pad(time, 12)}${pad(p.requests, 10)}${pad(p.successes, 7)}` +
        `${pad(p.retries, 9)}${pad(p.breakerRejections, 10)}${pad(p.fallbacks, 10)}` +
        `${pad(p.errors, 8)}${pad(p.upstreamCalls, 10)}${pad(p.latencyMs.p50, 9)}` +
        `${pad(p.latencyMs.p95, 9)}${pad(p.latencyMs.p99, 9)}`,
    );
  }
  lines.push("", "Breaker transitions:");
  if (r.transitions.length === 0) lines.push("  (none)");
  for (const t of r.transitions) {
    lines.push(
      `  +${(t.atRelativeMs / 1000).toFixed(3).padStart(7)}s  ${t.from.padEnd(9)} -> ${t.to.padEnd(9)} ${t.reason}`,
    );
  }
  for (const p of r.phases) {
    if (p.afterOpen === undefined) continue;
    const a = p.afterOpen;
    lines.push(
      "",
      `In phase "${p.name}", after the breaker opened at +${(a.openedAtMs / 1000).toFixed(3)}s, the upstream received ${a.upstreamCalls} call(s): ` +
        `${a.probes} half-open probe(s), ${a.admittedBeforeOpen} already in flight when it opened, ` +
        `${a.local} admitted locally while the control plane did not answer, ${a.unexpected} other.`,
    );
  }
  lines.push(
    "",
    `Totals: ${r.totals.requests} requests, ${r.totals.successes} answered by the upstream, ` +
      `${r.totals.fallbacks} degraded to the fallback, ${r.totals.errors} failed.`,
  );
  return lines.join("\n");
}
