/**
 * What guarding a call costs the service that makes it: a no-op wrapped by Bulwark (on the fast
 * path, and in strict mode with one Acquire per attempt), beside a bare call and the same no-op
 * wrapped by opossum and by cockatiel, measured side by side in one run. Figures are CPU time of
 * this process per call (user + system), the median of alternating rounds: on a shared two-core
 * machine wall-clock time mostly measures the neighbours.
 */
import { join } from "node:path";
import { ConsecutiveBreaker, circuitBreaker, handleAll } from "cockatiel";
import CircuitBreaker from "opossum";
import { createBulwark } from "../sdk/index.ts";
import { clientsFor, spawnServerProcess, tempDir, testPolicy } from "../test/harness.ts";
import { fmt, line, percentile } from "./stats.ts";

const LOCAL_CALLS = 50_000;
const STRICT_CALLS = 3_000;
const ROUNDS = 7;
/** Long enough never to fire: the figures are for the success path. */
const TIMEOUT_MS = 10_000;

const noop = async () => 1;

async function cpuNsPerCall(calls: number, fn: () => Promise<unknown>): Promise<number> {
  const before = process.cpuUsage();
  for (let i = 0; i < calls; i++) await fn();
  const used = process.cpuUsage(before);
  return ((used.user + used.system) * 1000) / calls;
}

export async function guardedCallBench(): Promise<void> {
  const tmp = tempDir("bulwark-bench-");
  const server = await spawnServerProcess(join(tmp.dir, "calls.db"), 0, [], { quiet: true });
  try {
    process.stdout.write("\nGuarded call overhead (CPU ns per call, median of rounds)\n");
    await clientsFor(server.url).policies.putPolicy({
      policy: testPolicy("bench.noop", {
        timeoutMs: 5_000,
        breaker: { windowSize: 10_000, minimumCalls: 10_000 },
      }),
    });
    const fast = createBulwark({ url: server.url, service: "bench" });
    const strict = createBulwark({ url: server.url, service: "bench-strict", strict: true });
    await Promise.all([fast.ready(), strict.ready()]);
    const opossum = new CircuitBreaker(noop, { timeout: TIMEOUT_MS });
    const cockatiel = circuitBreaker(handleAll, {
      halfOpenAfter: TIMEOUT_MS,
      breaker: new ConsecutiveBreaker(5),
    });

    const contenders: [string, number, () => Promise<unknown>][] = [
      ["bare async call (baseline)", LOCAL_CALLS, noop],
      ["cockatiel circuit breaker", LOCAL_CALLS, () => cockatiel.execute(noop)],
      ["opossum, with its timeout", LOCAL_CALLS, () => opossum.fire()],
      ["Bulwark fast path (fleet state, local)", LOCAL_CALLS, () => fast.call("bench.noop", noop)],
      ["Bulwark strict (Acquire per attempt)", STRICT_CALLS, () => strict.call("bench.noop", noop)],
    ];
    const samples = new Map<string, number[]>(contenders.map(([name]) => [name, []]));
    for (const [, calls, fn] of contenders) await cpuNsPerCall(Math.min(calls, 5_000), fn);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, calls, fn] of contenders) {
        samples.get(name)!.push(await cpuNsPerCall(calls, fn));
      }
    }
    const median = (name: string) => percentile(samples.get(name)!, 50);
    const bare = median("bare async call (baseline)");
    const opossumNs = median("opossum, with its timeout");
    for (const [name] of contenders) {
      const ns = median(name);
      const versus =
        name.startsWith("Bulwark") || name.startsWith("cockatiel")
          ? { name: "opossum", ratio: ns / opossumNs }
          : name.startsWith("opossum")
            ? { name: "bare", ratio: ns / bare }
            : undefined;
      line(name, `${fmt(ns)} ns`, versus);
    }
    line(
      "fast-path target: no more than opossum",
      median("Bulwark fast path (fleet state, local)") <= opossumNs ? "met" : "not met",
    );
    opossum.shutdown();
    await Promise.all([fast.close(), strict.close()]);
  } finally {
    await server.kill();
    tmp.remove();
  }
}
