/**
 * `npm run demo`: the control plane on a temporary SQLite file, a flaky OpenAI-compatible
 * upstream playing a scenario (healthy → full outage → recovery by default), and several service
 * instances, each its own process, calling it through the official `openai` client guarded by
 * the Bulwark SDK. Shows progress while it runs and ends with a report (also written as JSON).
 */
import { type ChildProcess, fork } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { BreakerService } from "../../gen/bulwark/v1/breaker_pb.ts";
import { BreakerState } from "../../gen/bulwark/v1/breaker_types_pb.ts";
import { PolicyService } from "../../gen/bulwark/v1/policy_pb.ts";
import { DEFAULT_ACQUIRE_TIMEOUT_MS } from "../../sdk/index.ts";
import { startServer } from "../../server/bulwark-server.ts";
import { startFlakyOpenAI } from "../flaky-openai/flaky-openai-server.ts";
import {
  loadScenarioFile,
  phaseAt,
  type Scenario,
  ScenarioError,
} from "../flaky-openai/scenario.ts";
import type {
  AttemptRecord,
  InstanceMessage,
  RequestRecord,
  SdkEventRecord,
  StartMessage,
} from "./messages.ts";
import { buildReport, formatReport, type TransitionRecord } from "./report.ts";

const DEPENDENCY = "openai.chat";
/** Three instances show that breaker state and probes are shared across processes. */
const DEFAULT_INSTANCES = 3;
/** 10 requests per second per instance: enough traffic to fill the window within a second. */
const DEFAULT_RPS = 10;
const DEFAULT_SCENARIO = new URL("../scenarios/demo.json", import.meta.url).pathname;
const PROGRESS_INTERVAL_MS = 1_000;

const USAGE = `Usage: npm run demo -- [--scenario FILE] [--instances N] [--rps N] [--out FILE]
  --scenario FILE  scenario of timed fault phases (default examples/scenarios/demo.json)
  --instances N    service instances, each its own process, 1..16 (default ${DEFAULT_INSTANCES})
  --rps N          requests per second per instance, 1..200 (default ${DEFAULT_RPS})
  --out FILE       where to write the JSON report (default: in a new temporary directory)
  --acquire-timeout-ms N  the SDK's wait for the control plane before deciding locally
                   (default ${DEFAULT_ACQUIRE_TIMEOUT_MS})`;

function usageError(message: string): never {
  process.stderr.write(`demo: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function intFlag(flag: string, text: string | undefined, dflt: number, min: number, max: number) {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) {
    usageError(`--${flag} must be an integer in [${min}, ${max}]; got ${JSON.stringify(text)}`);
  }
  return n;
}

let values: Record<string, string | boolean | undefined>;
try {
  values = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      scenario: { type: "string" },
      instances: { type: "string" },
      rps: { type: "string" },
      "acquire-timeout-ms": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean" },
    },
  }).values;
} catch (err) {
  usageError((err as Error).message);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const instances = intFlag(
  "instances",
  values.instances as string | undefined,
  DEFAULT_INSTANCES,
  1,
  16,
);
const rps = intFlag("rps", values.rps as string | undefined, DEFAULT_RPS, 1, 200);
const acquireTimeoutMs = intFlag(
  "acquire-timeout-ms",
  values["acquire-timeout-ms"] as string | undefined,
  DEFAULT_ACQUIRE_TIMEOUT_MS,
  1,
  60_000,
);
let scenario: Scenario;
try {
  scenario = loadScenarioFile((values.scenario as string | undefined) ?? DEFAULT_SCENARIO);
} catch (err) {
  if (err instanceof ScenarioError || (err as NodeJS.ErrnoException).code !== undefined) {
    usageError(`--scenario: ${(err as Error).message}`);
  }
  throw err;
}
const durationMs = scenario.phases.reduce((sum, p) => sum + p.durationMs, 0);
if (values.out !== undefined) {
  // Checked before the run, not after it: a report that cannot be written is a wasted run.
  try {
    accessSync(dirname(resolve(values.out as string)), constants.W_OK);
  } catch (err) {
    usageError(`--out: cannot write to ${values.out as string}: ${(err as Error).message}`);
  }
}

const workDir = mkdtempSync(join(tmpdir(), "bulwark-demo-"));
const outPath = (values.out as string | undefined) ?? join(workDir, "report.json");
const logPath = join(workDir, "server.log");
const say = (line: string) => process.stdout.write(`${line}\n`);

const server = await startServer({
  dbPath: join(workDir, "bulwark.db"),
  host: "127.0.0.1",
  port: 0,
  metrics: { host: "127.0.0.1", port: 0 },
  logger: pino({ level: "info" }, pino.destination({ dest: logPath, sync: false })),
});
const transport = createGrpcTransport({ baseUrl: server.url });
const policies = createClient(PolicyService, transport);
const breakers = createClient(BreakerService, transport);
await policies.putPolicy(
  {
    policy: {
      dependency: DEPENDENCY,
      sla: { latencyObjectiveMs: 3_000, availabilityTargetPercent: 99.5 },
      timeoutMs: 2_000,
      retry: { maxAttempts: 3, initialBackoffMs: 100, maxBackoffMs: 1_000 },
      breaker: {
        windowSize: 20,
        minimumCalls: 10,
        failureRateThresholdPercent: 50,
        openWaitMs: 3_000,
        openWaitMultiplier: 1.5,
        maxOpenWaitMs: 8_000,
        halfOpenPermits: 1,
      },
    },
  },
  { headers: { "x-bulwark-principal": "demo-operator" } },
);

say(`Bulwark demo — scenario "${scenario.name}", ${(durationMs / 1000).toFixed(0)} s`);
say(
  values.out === undefined
    ? `  control plane ${server.url} (SQLite, server log and report in ${workDir})`
    : `  control plane ${server.url} (SQLite and server log in ${workDir}, removed at the end)`,
);
say(`  metrics ${server.metricsUrl}/metrics while the demo runs`);

// Follow breaker transitions as any subscriber would: snapshot first, then events.
const transitions: TransitionRecord[] = [];
let breakerState = "closed";
const stateName = (s: BreakerState) =>
  s === BreakerState.OPEN ? "open" : s === BreakerState.HALF_OPEN ? "half-open" : "closed";
const watchAbort = new AbortController();
const watching = (async () => {
  try {
    for await (const msg of breakers.watch(
      { dependencies: [DEPENDENCY] },
      { signal: watchAbort.signal },
    )) {
      if (msg.kind.case !== "event" || msg.kind.value.kind.case !== "breakerTransition") continue;
      const t = msg.kind.value.kind.value;
      breakerState = stateName(t.to);
      transitions.push({
        atMs: Number(t.atUnixMs),
        from: stateName(t.from),
        to: stateName(t.to),
        reason: t.reason,
        calls: t.window?.calls ?? 0,
        failureRatePercent: t.window?.failureRatePercent ?? 0,
      });
    }
  } catch {
    // ends when the demo aborts the stream
  }
})();

// Start the instances; each loads its modules, says it is ready, then waits for the start.
const requests: RequestRecord[] = [];
const attempts: AttemptRecord[] = [];
const events: SdkEventRecord[] = [];
const children: ChildProcess[] = [];
const ready: Promise<void>[] = [];
const done: Promise<void>[] = [];
for (let i = 0; i < instances; i++) {
  const child = fork(new URL("./instance.ts", import.meta.url).pathname, [], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.push(child);
  ready.push(
    new Promise((resolve) =>
      child.on("message", (m: InstanceMessage) => m.type === "ready" && resolve()),
    ),
  );
  done.push(
    new Promise((resolve) => {
      child.on("message", (m: InstanceMessage) => {
        if (m.type === "records") {
          requests.push(...m.requests);
          attempts.push(...m.attempts);
          events.push(...m.events);
        }
      });
      child.once("exit", () => resolve());
    }),
  );
}
await Promise.all(ready);

const upstream = await startFlakyOpenAI({ scenario });
say(`  flaky upstream ${upstream.baseUrl}; ${instances} service instances × ${rps} req/s`);
say("");
for (const [i, child] of children.entries()) {
  const start: StartMessage = {
    type: "start",
    config: {
      controlPlaneUrl: server.url,
      upstreamBaseUrl: upstream.baseUrl,
      service: `demo-svc-${i + 1}`,
      dependency: DEPENDENCY,
      requestsPerSecond: rps,
      acquireTimeoutMs,
      durationMs,
    },
  };
  child.send(start);
}

let shown = { requests: 0, ok: 0, fallback: 0, arrivals: 0 };
const progress = setInterval(() => {
  const elapsedMs = Date.now() - upstream.startedAtMs;
  const { phase } = phaseAt(scenario, elapsedMs);
  const ok = requests.filter((r) => r.outcome === "success").length;
  const fallback = requests.filter((r) => r.outcome === "fallback").length;
  const arrivals = upstream.stats().reduce((sum, s) => sum + s.requests, 0);
  say(
    `  +${String(Math.round(elapsedMs / 1000)).padStart(3)}s  ${phase.name.padEnd(10)} ` +
      `requests ${String(requests.length - shown.requests).padStart(4)}  ` +
      `ok ${String(ok - shown.ok).padStart(4)}  fallback ${String(fallback - shown.fallback).padStart(4)}  ` +
      `upstream ${String(arrivals - shown.arrivals).padStart(4)}  breaker ${breakerState}`,
  );
  shown = { requests: requests.length, ok, fallback, arrivals };
}, PROGRESS_INTERVAL_MS);

await Promise.all(done);
clearInterval(progress);
// Let the last transitions reach the watcher before the report is cut.
await new Promise((r) => setTimeout(r, 200));
watchAbort.abort();
await watching;

const report = buildReport({
  scenario,
  startedAtMs: upstream.startedAtMs,
  instances,
  requestsPerSecond: rps,
  stats: upstream.stats(),
  arrivals: upstream.arrivals(),
  requests,
  attempts,
  events,
  transitions,
});
await upstream.close();
await server.close();

say("");
say(formatReport(report));
writeFileSync(outPath, `${JSON.stringify(report, null, 2)}\n`);
say("");
say(`Report written to ${outPath}`);
if (values.out !== undefined) rmSync(workDir, { recursive: true, force: true });
