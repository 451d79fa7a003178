/**
 * What guarding a call costs the service that makes it: a no-op wrapped by Bulwark (on the fast
 * path, and in strict mode with one Acquire per attempt), beside a bare call and the same no-op
 * wrapped by opossum and by cockatiel, measured side by side in one run; and what reporting the
 * call's outcome to the control plane adds (batched, in the background). Figures are CPU time of
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
/**
 * Bulwark's rounds flush every this many calls, fewer than the SDK queues (MAX_PENDING_OUTCOMES):
 * every outcome is then encoded and sent within the CPU time measured, none dropped.
 */
const FLUSH_EVERY = 5_000;
const STRICT_CALLS = 3_000;
const ROUNDS = 7;
/** Long enough never to fire: the figures are for the success path. */
const TIMEOUT_MS = 10_000;

const noop = async () => 1;

async function cpuNsPerCall(
  calls: number,
  fn: () => Promise<unknown>,
  after?: () => Promise<void>,
): Promise<number> {
  const before = process.cpuUsage();
  for (let i = 0; i < calls; i++) {
    await fn();
    if (after !== undefined && (i + 1) % FLUSH_EVERY === 0) await after();
  }
  await after?.();
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
    // `fast` runs faster than any control plane can take outcomes (its queue overflows and drops
    // the oldest; the call costs the same either way); `reported` flushes its queue as it goes,
    // so every outcome is also encoded and sent within the time measured.
    const fast = createBulwark({ url: server.url, service: "bench" });
    const reported = createBulwark({ url: server.url, service: "bench-reported" });
    const strict = createBulwark({ url: server.url, service: "bench-strict", strict: true });
    await Promise.all([fast.ready(), reported.ready(), strict.ready()]);
    const opossum = new CircuitBreaker(noop, { timeout: TIMEOUT_MS });
    const cockatiel = circuitBreaker(handleAll, {
      halfOpenAfter: TIMEOUT_MS,
      breaker: new ConsecutiveBreaker(5),
    });

    type Contender = [string, number, () => Promise<unknown>, (() => Promise<void>)?];
    const contenders: Contender[] = [
      ["bare async call (baseline)", LOCAL_CALLS, noop],
      ["cockatiel circuit breaker", LOCAL_CALLS, () => cockatiel.execute(noop)],
      ["opossum, with its timeout", LOCAL_CALLS, () => opossum.fire()],
      ["Bulwark fast path, the call", LOCAL_CALLS, () => fast.call("bench.noop", noop)],
      [
        "Bulwark fast path, with its report",
        LOCAL_CALLS,
        () => reported.call("bench.noop", noop),
        () => reported.flush(),
      ],
      [
        "Bulwark strict (Acquire per attempt)",
        STRICT_CALLS,
        () => strict.call("bench.noop", noop),
        () => strict.flush(),
      ],
    ];
    const samples = new Map<string, number[]>(contenders.map(([name]) => [name, []]));
    for (const [, calls, fn, after] of contenders) await cpuNsPerCall(calls, fn, after);
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, calls, fn, after] of contenders) {
        samples.get(name)!.push(await cpuNsPerCall(calls, fn, after));
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
      "fast-path call target: no more than opossum",
      median("Bulwark fast path, the call") <= opossumNs ? "met" : "not met",
    );
    line(
      "reporting one outcome (encode and send)",
      `${fmt(median("Bulwark fast path, with its report") - median("Bulwark fast path, the call"))} ns`,
    );
    line(
      "outcomes dropped with reports (must be 0)",
      fmt(reported.reportsDropped + strict.reportsDropped),
    );
    opossum.shutdown();
    await Promise.all([fast.close(), reported.close(), strict.close()]);
  } finally {
    await server.kill();
    tmp.remove();
  }
}
