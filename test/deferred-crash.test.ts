import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { QueueSettingsSchema } from "../gen/bulwark/v1/policy_pb.ts";
import { type Bulwark, type BulwarkEvent, createBulwark } from "../sdk/index.ts";
import {
  clientsFor,
  type NatsProcess,
  ROOT,
  startNats,
  startTestServer,
  testPolicy,
  waitFor,
} from "./harness.ts";
import { type JobUpstream, postJob, startJobUpstream } from "./job-upstream.ts";

let nats: NatsProcess;
let server: Awaited<ReturnType<typeof startTestServer>>;
let upstream: JobUpstream;
const sdks: Bulwark[] = [];
const children: ChildProcess[] = [];

/** Deliveries are handed out again 1.5 s after a worker stops answering. */
const ACK_WAIT_MS = 1_500;

function spawnWorker(dependency: string, stallAfterSuccess: boolean) {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "test/deferred-worker-child.ts"),
      JSON.stringify({
        url: server.url,
        nats: nats.url,
        dependency,
        upstream: `${upstream.url}/effect`,
        stallAfterSuccess,
      }),
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  children.push(child);
  const lines: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return {
    lines,
    async kill() {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

async function putPolicy(dependency: string) {
  const policy = testPolicy(dependency);
  policy.queue = create(QueueSettingsSchema, {
    maxDeliveries: 5,
    workerInitialBackoffMs: 20,
    workerMaxBackoffMs: 100,
    ackWaitMs: ACK_WAIT_MS,
  });
  await clientsFor(server.url).policies.putPolicy({ policy });
}

/** A worker in this process that takes over what the killed one left. */
function survivor(dependency: string): BulwarkEvent[] {
  const b = createBulwark({ url: server.url, service: "survivor", nats: nats.url });
  sdks.push(b);
  const events: BulwarkEvent[] = [];
  b.on((e) => events.push(e));
  b.worker(dependency, (job, ctx) =>
    postJob(`${upstream.url}/effect`, job.payload, ctx.signal, job.idempotencyKey),
  );
  return events;
}

beforeAll(async () => {
  nats = await startNats();
  server = await startTestServer({ natsUrl: nats.url });
  upstream = await startJobUpstream();
});

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  await Promise.all(sdks.splice(0).map((b) => b.close()));
  upstream.mode = "ok";
});

afterAll(async () => {
  await upstream?.close();
  await server?.cleanup();
  await nats?.stop();
});

describe("a worker killed mid-job", () => {
  it("has its job redelivered after the handler ran, and the effect is not repeated", async () => {
    const dep = "crash.after-effect";
    await putPolicy(dep);
    const producer = createBulwark({ url: server.url, service: "producer", nats: nats.url });
    sdks.push(producer);
    const jobId = await producer.enqueue(dep, { charge: "order-7" }, { idempotencyKey: "order-7" });
    const worker = spawnWorker(dep, true);
    expect(await waitFor(() => worker.lines.some((l) => l.handled === jobId), 20_000)).toBe(true);
    await worker.kill();
    expect(upstream.effects().get('{"charge":"order-7"}')).toBe(1);

    const events = survivor(dep);
    expect(
      await waitFor(
        () => events.some((e) => e.type === "job" && e.status === "succeeded" && e.jobId === jobId),
        10_000,
      ),
    ).toBe(true);
    const delivered = events.find((e) => e.type === "job" && e.status === "started");
    expect(delivered?.type === "job" && delivered.delivery).toBe(2);
    // The redelivered job found its key completed: nothing went upstream again.
    expect(upstream.requests.filter((r) => r.path === "/effect")).toHaveLength(1);
    expect(upstream.effects().get('{"charge":"order-7"}')).toBe(1);
  });

  it("has its job redelivered while the handler was still running, and the effect happens once", async () => {
    const dep = "crash.mid-effect";
    await putPolicy(dep);
    upstream.mode = "hang";
    const producer = createBulwark({ url: server.url, service: "producer", nats: nats.url });
    sdks.push(producer);
    const jobId = await producer.enqueue(dep, { charge: "order-8" }, { idempotencyKey: "order-8" });
    const worker = spawnWorker(dep, false);
    expect(
      await waitFor(() => upstream.requests.some((r) => r.idempotencyKey === "order-8"), 20_000),
    ).toBe(true);
    await worker.kill();
    upstream.mode = "ok";

    const events = survivor(dep);
    expect(
      await waitFor(
        () => events.some((e) => e.type === "job" && e.status === "succeeded" && e.jobId === jobId),
        15_000,
      ),
    ).toBe(true);
    expect(upstream.effects().get('{"charge":"order-8"}')).toBe(1);
    expect(upstream.requests.filter((r) => r.idempotencyKey === "order-8")).toHaveLength(2);
  });
});
