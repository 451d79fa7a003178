/**
 * Deferred work throughput: jobs per second end to end (enqueue → worker pull → no-op handler as
 * a guarded call → ack) with 8 workers, against a private nats-server and the control plane in
 * its own process. Baseline in the same run: the same number of messages published to a
 * JetStream work queue and pulled and acknowledged by 8 plain consumers, without the SDK.
 */
import { join } from "node:path";
import { AckPolicy, connect, nanos, RetentionPolicy, StorageType } from "nats";
import { createBulwark } from "../sdk/index.ts";
import {
  clientsFor,
  spawnServerProcess,
  startNats,
  tempDir,
  testPolicy,
  waitFor,
} from "../test/harness.ts";
import { fmt, line } from "./stats.ts";

const JOBS = 10_000;
const WORKERS = 8;
/** Enqueues in flight at once, as a busy service would have them. */
const ENQUEUE_CONCURRENCY = 64;
/** Every run stops by itself after this long, finished or not. */
const RUN_LIMIT_MS = 120_000;
const DEPENDENCY = "bench.jobs";

async function baseline(natsUrl: string): Promise<number> {
  const nc = await connect({ servers: natsUrl });
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({
    name: "BENCH_BASELINE",
    subjects: ["bench.baseline"],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
  });
  await jsm.consumers.add("BENCH_BASELINE", {
    durable_name: "w",
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(30_000),
  });
  const js = nc.jetstream();
  const consumer = await js.consumers.get("BENCH_BASELINE", "w");
  let done = 0;
  const started = performance.now();
  const stopAt = Date.now() + RUN_LIMIT_MS;
  const workers = Array.from({ length: WORKERS }, async () => {
    while (done < JOBS && Date.now() < stopAt) {
      const batch = await consumer.fetch({ max_messages: 1, expires: 1_000 });
      for await (const m of batch) {
        m.ack();
        done++;
      }
    }
  });
  let next = 0;
  await Promise.all(
    Array.from({ length: ENQUEUE_CONCURRENCY }, async () => {
      while (next < JOBS) {
        next++;
        await js.publish("bench.baseline", new Uint8Array(32));
      }
    }),
  );
  await Promise.all(workers);
  const perS = done / ((performance.now() - started) / 1000);
  await nc.close();
  return perS;
}

/**
 * Jobs per second from the first enqueue to the last acknowledgement, with a no-op handler run
 * as a guarded call of the dependency (the default) or called directly (`guarded: false`).
 */
async function endToEnd(url: string, natsUrl: string, guarded: boolean): Promise<number> {
  const dependency = `${DEPENDENCY}.${guarded ? "guarded" : "direct"}`;
  await clientsFor(url).policies.putPolicy({ policy: testPolicy(dependency) });
  const producer = createBulwark({ url, service: "bench-producer", nats: natsUrl });
  const consumer = createBulwark({ url, service: "bench-worker", nats: natsUrl });
  try {
    let done = 0;
    // Sets up the streams and the consumer before the clock starts.
    await producer.enqueue(dependency, "warm-up");
    const workers = Array.from({ length: WORKERS }, () =>
      consumer.worker(
        dependency,
        async () => {
          done++;
        },
        { guarded },
      ),
    );
    await waitFor(() => done === 1, 10_000);
    done = 0;
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: ENQUEUE_CONCURRENCY }, async () => {
        while (next < JOBS) {
          next++;
          await producer.enqueue(dependency, { n: next });
        }
      }),
    );
    await waitFor(() => done >= JOBS, RUN_LIMIT_MS);
    const perS = done / ((performance.now() - started) / 1000);
    await Promise.all(workers.map((w) => w.stop()));
    return perS;
  } finally {
    await producer.close();
    await consumer.close();
  }
}

export async function deferredBench(): Promise<void> {
  const tmp = tempDir("bulwark-bench-");
  const nats = await startNats();
  const server = await spawnServerProcess(join(tmp.dir, "bench.db"), 0, ["--nats", nats.url], {
    quiet: true,
  });
  try {
    process.stdout.write("\nDeferred work\n");
    const basePerS = await baseline(nats.url);
    line(`plain JetStream publish, pull, ack × ${WORKERS} (baseline)`, `${fmt(basePerS)}/s`);

    for (const guarded of [true, false]) {
      const perS = await endToEnd(server.url, nats.url, guarded);
      line(
        `enqueue → ${WORKERS} workers → ack, ${guarded ? "guarded call" : "unguarded handler"} (target 2 000)`,
        `${fmt(perS)}/s`,
        { name: "plain JetStream", ratio: perS / basePerS },
      );
    }
  } finally {
    await server.kill();
    await nats.stop();
    tmp.remove();
  }
}
