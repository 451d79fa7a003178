import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { connect, type NatsConnection } from "nats";
import pino from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BreakerState } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  DeadLetterReason,
  DeadLetterService,
  DeadLetterStatus,
} from "../gen/bulwark/v1/dead_letter_pb.ts";
import { type Policy, QueueSettingsSchema } from "../gen/bulwark/v1/policy_pb.ts";
import { dlqStreamName, jobStreamName } from "../sdk/deferred/job-message.ts";
import {
  type Bulwark,
  type BulwarkEvent,
  createBulwark,
  isCallDeferredError,
  isPayloadTooLargeError,
  isPolicyNotFoundError,
  PermanentJobError,
} from "../sdk/index.ts";
import { startServer } from "../server/bulwark-server.ts";
import {
  clientsFor,
  type NatsProcess,
  startNats,
  startTestServer,
  tempDir,
  testPolicy,
  waitFor,
} from "./harness.ts";
import { type JobUpstream, postJob, startJobUpstream } from "./job-upstream.ts";

let nats: NatsProcess;
let server: Awaited<ReturnType<typeof startTestServer>>;
let upstream: JobUpstream;
let nc: NatsConnection;
const sdks: Bulwark[] = [];

function sdk(service = "jobs"): Bulwark {
  const b = createBulwark({ url: server.url, service, nats: nats.url });
  sdks.push(b);
  return b;
}

function deadLetters(url = server.url) {
  const transport = createGrpcTransport({
    baseUrl: url,
    interceptors: [
      (next) => (req) => {
        req.header.set("x-bulwark-principal", "test-operator");
        return next(req);
      },
    ],
  });
  return createClient(DeadLetterService, transport);
}

/** A test policy whose queue retries fast: 3 deliveries, 20-100 ms apart. */
function queuedPolicy(
  dependency: string,
  queue: Record<string, unknown> = {},
  overrides: Parameters<typeof testPolicy>[1] = {},
): Policy {
  const policy = testPolicy(dependency, overrides);
  policy.queue = create(QueueSettingsSchema, {
    maxDeliveries: 3,
    workerInitialBackoffMs: 20,
    workerMaxBackoffMs: 100,
    ackWaitMs: 2_000,
    ...queue,
  });
  return policy;
}

async function streamMessages(name: string): Promise<number> {
  const jsm = await nc.jetstreamManager();
  return (await jsm.streams.info(name)).state.messages;
}

beforeAll(async () => {
  nats = await startNats();
  server = await startTestServer({ natsUrl: nats.url });
  upstream = await startJobUpstream();
  nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
});

afterEach(async () => {
  upstream.mode = "ok";
  await Promise.all(sdks.splice(0).map((b) => b.close()));
});

afterAll(async () => {
  await nc?.close();
  await upstream?.close();
  await server?.cleanup();
  await nats?.stop();
});

describe("deferred work", () => {
  it("attempts an always-failing job exactly maxDeliveries times, then dead-letters it once", async () => {
    const dep = "jobs.always-fails";
    await clientsFor(server.url).policies.putPolicy({ policy: queuedPolicy(dep) });
    upstream.mode = "fail";
    const b = sdk();
    const events: BulwarkEvent[] = [];
    b.on((e) => events.push(e));
    const jobId = await b.enqueue(dep, { order: 1 }, { idempotencyKey: "order-1" });
    b.worker(dep, (job, ctx) => postJob(`${upstream.url}/${dep}`, job.payload, ctx.signal), {
      concurrency: 2,
    });
    expect(
      await waitFor(
        () => events.some((e) => e.type === "job" && e.status === "dead-lettered"),
        10_000,
      ),
    ).toBe(true);
    // Long enough for a stray redelivery to show up.
    await new Promise((r) => setTimeout(r, 300));
    expect(upstream.requests.filter((r) => r.path === `/${dep}`)).toHaveLength(3);
    expect(await streamMessages(dlqStreamName(dep))).toBe(1);
    expect(await streamMessages(jobStreamName(dep))).toBe(0);
    const { letters } = await deadLetters().listDeadLetters({ dependency: dep });
    expect(letters).toHaveLength(1);
    const letter = letters[0]!;
    expect(letter.jobId).toBe(jobId);
    expect(letter.attempts).toBe(3);
    expect(letter.reason).toBe(DeadLetterReason.MAX_DELIVERIES);
    expect(letter.status).toBe(DeadLetterStatus.OPEN);
    expect(letter.lastError).toContain("upstream answered 503");
    expect(letter.errorType).toBe("http_503");
    expect(letter.idempotencyKey).toBe("order-1");
    expect(letter.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(letter.payloadHash).toMatch(/^[0-9a-f]{64}$/);
    const full = await deadLetters().getDeadLetter({ letterId: letter.letterId });
    expect(new TextDecoder().decode(full.letter!.payload)).toBe('{"order":1}');
    const retries = events.filter((e) => e.type === "job" && e.status === "retrying");
    expect(retries).toHaveLength(2);
  });

  it("dead-letters a permanent failure at once", async () => {
    const dep = "jobs.permanent";
    await clientsFor(server.url).policies.putPolicy({ policy: queuedPolicy(dep) });
    const b = sdk();
    let runs = 0;
    await b.enqueue(dep, "bad input");
    b.worker(dep, async () => {
      runs++;
      throw new PermanentJobError("the payload is not an order");
    });
    expect(
      await waitFor(
        async () => (await deadLetters().listDeadLetters({ dependency: dep })).letters.length === 1,
        10_000,
      ),
    ).toBe(true);
    const [letter] = (await deadLetters().listDeadLetters({ dependency: dep })).letters;
    expect(letter!.reason).toBe(DeadLetterReason.PERMANENT);
    expect(letter!.attempts).toBe(1);
    expect(letter!.lastError).toContain("the payload is not an order");
    expect(runs).toBe(1);
  });

  it("refuses an oversized payload and a dependency without a policy", async () => {
    const dep = "jobs.small";
    await clientsFor(server.url).policies.putPolicy({
      policy: queuedPolicy(dep, { maxPayloadBytes: 16 }),
    });
    const b = sdk();
    const tooBig = await b.enqueue(dep, "x".repeat(17)).catch((e: unknown) => e);
    expect(isPayloadTooLargeError(tooBig)).toBe(true);
    expect((tooBig as Error).message).toContain("17 bytes; its policy allows at most 16");
    expect(await b.enqueue(dep, "x".repeat(16))).toMatch(/^[0-9a-f]{32}$/);
    const unknown = await b.enqueue("jobs.no-policy", "x").catch((e: unknown) => e);
    expect(isPolicyNotFoundError(unknown)).toBe(true);
    expect((unknown as Error).message).toContain("no policy for dependency jobs.no-policy");
  });

  it("loses no queued job when nats-server is killed and restarted", async () => {
    const dep = "jobs.survive";
    await clientsFor(server.url).policies.putPolicy({ policy: queuedPolicy(dep) });
    const producer = sdk("producer");
    const ids = new Set<string>();
    for (let i = 0; i < 50; i++) ids.add(await producer.enqueue(dep, { i }));
    await nats.restart();
    const b = sdk("consumer");
    const done = new Set<string>();
    b.worker(
      dep,
      async (job) => {
        done.add(job.id);
      },
      // The handler makes no call of its own: nothing to guard.
      { concurrency: 4, guarded: false },
    );
    expect(await waitFor(() => done.size === 50, 20_000)).toBe(true);
    expect(done).toEqual(ids);
  });

  it("pulls nothing while the breaker is open and drains the backlog once it closes", async () => {
    const dep = "jobs.gated";
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: queuedPolicy(dep, {}, { breaker: { minimumCalls: 2, openWaitMs: 1_500 } }),
    });
    // Open the breaker with failures seen by a service.
    upstream.mode = "fail";
    const caller = sdk("caller");
    for (let i = 0; i < 2; i++) {
      await caller
        .call(dep, (ctx) => postJob(`${upstream.url}/sync`, new Uint8Array(), ctx.signal))
        .catch(() => {});
    }
    await caller.flush();
    const state = async () => (await breakers.getBreaker({ dependency: dep })).breaker?.state;
    expect(await state()).toBe(BreakerState.OPEN);
    upstream.mode = "ok";
    const b = sdk();
    const events: BulwarkEvent[] = [];
    b.on((e) => events.push(e));
    for (let i = 0; i < 10; i++) await b.enqueue(dep, { i });
    b.worker(dep, (job, ctx) => postJob(`${upstream.url}/${dep}`, job.payload, ctx.signal), {
      concurrency: 4,
    });
    expect(
      await waitFor(() => events.some((e) => e.type === "worker" && e.status === "paused")),
    ).toBe(true);
    // While OPEN, not one worker call reaches the upstream.
    while ((await state()) === BreakerState.OPEN) {
      expect(upstream.requests.filter((r) => r.path === `/${dep}`)).toHaveLength(0);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(
      await waitFor(
        () => upstream.requests.filter((r) => r.path === `/${dep}`).length === 10,
        10_000,
      ),
    ).toBe(true);
    expect(await state()).toBe(BreakerState.CLOSED);
    expect(await streamMessages(jobStreamName(dep))).toBe(0);
    expect(events.some((e) => e.type === "worker" && e.status === "resumed")).toBe(true);
  });

  it("queues a deferrable call the open breaker refuses and names the job", async () => {
    const dep = "jobs.deferrable";
    const { policies } = clientsFor(server.url);
    await policies.putPolicy({
      policy: queuedPolicy(dep, {}, { breaker: { minimumCalls: 1, openWaitMs: 60_000 } }),
    });
    upstream.mode = "fail";
    const b = sdk();
    let sawOpen = false;
    b.subscribe(
      (e) => {
        if (e.type === "breaker-state" && e.state === "open") sawOpen = true;
      },
      { dependencies: [dep] },
    );
    const send = () =>
      b.call(dep, (ctx) => postJob(`${upstream.url}/sync`, new Uint8Array(), ctx.signal), {
        deferrable: { payload: { to: "alice" }, idempotencyKey: "mail-alice" },
      });
    // Retries exhausted: deferred.
    const first = await send().catch((e: unknown) => e);
    expect(isCallDeferredError(first)).toBe(true);
    // The failure opens the fleet's breaker; the instance hears of it a few milliseconds later.
    expect(await waitFor(() => sawOpen, 5_000)).toBe(true);
    // Breaker open: deferred too, as the same job (same idempotency key).
    const second = await send().catch((e: unknown) => e);
    expect(isCallDeferredError(second)).toBe(true);
    expect((second as { jobId: string }).jobId).toBe((first as { jobId: string }).jobId);
    expect(((second as Error).cause as Error).name).toBe("CircuitOpenError");
    expect(await streamMessages(jobStreamName(dep))).toBe(1);
    // With a fallback, the degraded value comes back and names the job.
    const result = await b.execute(dep, async () => "live", {
      fallback: () => "later",
      deferrable: { payload: { to: "bob" } },
    });
    expect(result.degraded).toBe(true);
    expect(result.value).toBe("later");
    expect(result.deferredJobId).toMatch(/^[0-9a-f]{32}$/);
    expect(await streamMessages(jobStreamName(dep))).toBe(2);
  });
});

describe("queue and dead-letter depth", () => {
  it("is exported on /metrics per dependency", async () => {
    const dep = "jobs.depth";
    const tmp = tempDir();
    const metricsServer = await startServer({
      dbPath: join(tmp.dir, "m.db"),
      host: "127.0.0.1",
      port: 0,
      natsUrl: nats.url,
      metrics: { host: "127.0.0.1", port: 0 },
      logger: pino({ level: "silent" }),
    });
    try {
      await clientsFor(metricsServer.url).policies.putPolicy({ policy: queuedPolicy(dep) });
      const b = createBulwark({ url: metricsServer.url, service: "jobs", nats: nats.url });
      sdks.push(b);
      for (let i = 0; i < 3; i++) await b.enqueue(dep, { i });
      await deadLetters(metricsServer.url).recordDeadLetter({
        letter: {
          letterId: "dl-depth-1",
          dependency: dep,
          jobId: "depth",
          reason: DeadLetterReason.PERMANENT,
        },
      });
      const text = await (await fetch(`${metricsServer.metricsUrl}/metrics`)).text();
      expect(text).toContain(`bulwark_queue_jobs{dependency="${dep}"} 3`);
      expect(text).toContain(`bulwark_dlq_jobs{dependency="${dep}"} 0`);
      expect(text).toContain(`bulwark_dead_letters{dependency="${dep}",status="open"} 1`);
    } finally {
      await metricsServer.close();
      tmp.remove();
    }
  });
});

describe("dead-letter replay", () => {
  it("processes each dead letter once after recovery, and a second replay runs nothing", async () => {
    const dep = "jobs.replayed";
    await clientsFor(server.url).policies.putPolicy({
      policy: queuedPolicy(dep, { maxDeliveries: 2 }),
    });
    upstream.mode = "fail";
    const b = sdk();
    const events: BulwarkEvent[] = [];
    b.on((e) => events.push(e));
    for (const order of ["a", "b", "c"]) {
      await b.enqueue(dep, { order }, { idempotencyKey: `order-${order}` });
    }
    b.worker(dep, (job, ctx) => postJob(`${upstream.url}/${dep}`, job.payload, ctx.signal), {
      concurrency: 3,
    });
    const dl = deadLetters();
    const list = async () => (await dl.listDeadLetters({ dependency: dep })).letters;
    expect(await waitFor(async () => (await list()).length === 3, 10_000)).toBe(true);
    expect(upstream.effects(`/${dep}`).size).toBe(0);

    // The dependency recovered: an operator replays every letter.
    upstream.mode = "ok";
    for (const letter of await list()) {
      const res = await dl.replayDeadLetter({ letterId: letter.letterId });
      expect(res.letter!.status).toBe(DeadLetterStatus.REPLAYED);
      expect(res.jobId).toBe(letter.jobId);
    }
    const succeeded = () =>
      events.filter((e) => e.type === "job" && e.status === "succeeded").length;
    expect(await waitFor(() => succeeded() === 3, 10_000)).toBe(true);
    expect([...upstream.effects(`/${dep}`).values()]).toEqual([1, 1, 1]);
    // A replayed job keeps its trace.
    const letters = await list();
    expect(letters.every((l) => l.replayCount === 1 && l.replayedBy === "test-operator")).toBe(
      true,
    );
    const replayedTraces = events
      .filter((e) => e.type === "job" && e.status === "succeeded")
      .map((e) => (e.type === "job" ? e.traceId : ""));
    expect(new Set(replayedTraces)).toEqual(new Set(letters.map((l) => l.traceId)));

    // A second replay is refused unless forced; forced, the idempotency key keeps it a no-op.
    const again = await dl
      .replayDeadLetter({ letterId: letters[0]!.letterId })
      .catch((e: unknown) => e);
    expect((again as ConnectError).code).toBe(Code.FailedPrecondition);
    expect((again as ConnectError).message).toContain("set force to replay it again");
    await dl.replayDeadLetter({ letterId: letters[0]!.letterId, force: true });
    expect(await waitFor(() => succeeded() === 4, 10_000)).toBe(true);
    expect([...upstream.effects(`/${dep}`).values()]).toEqual([1, 1, 1]);
    // Two failed deliveries and one replay per job; the forced replay sent nothing.
    expect(upstream.requests.filter((r) => r.path === `/${dep}`)).toHaveLength(3 * 2 + 3);

    // Resolve closes a letter once; a resolved letter is not replayed without force.
    const resolved = await dl.resolveDeadLetter({
      letterId: letters[1]!.letterId,
      reason: "replayed and delivered",
    });
    expect(resolved.letter!.status).toBe(DeadLetterStatus.RESOLVED);
    expect(resolved.letter!.resolution).toBe("replayed and delivered");
    const twice = await dl
      .resolveDeadLetter({ letterId: letters[1]!.letterId, reason: "again" })
      .catch((e: unknown) => e);
    expect((twice as ConnectError).code).toBe(Code.FailedPrecondition);
    const replayResolved = await dl
      .replayDeadLetter({ letterId: letters[1]!.letterId })
      .catch((e: unknown) => e);
    expect((replayResolved as ConnectError).code).toBe(Code.FailedPrecondition);

    // Every step is in the audit log, keyed by the letter, in the job's trace.
    const { records } = await clientsFor(server.url).audit.query({
      aggregateId: letters[0]!.letterId,
    });
    expect(records.map((r) => r.eventType)).toEqual([
      "dead_letter.recorded",
      "dead_letter.replayed",
      "dead_letter.replayed",
    ]);
    expect(records.every((r) => r.traceId === letters[0]!.traceId)).toBe(true);
    expect(records[1]!.principal).toBe("test-operator");
    const resolvedAudit = await clientsFor(server.url).audit.query({
      aggregateId: letters[1]!.letterId,
      eventType: "dead_letter.resolved",
    });
    expect(resolvedAudit.records).toHaveLength(1);
  });

  it("refuses a replay without NATS", async () => {
    const plain = await startTestServer();
    try {
      const dl = deadLetters(plain.url);
      await dl.recordDeadLetter({
        letter: {
          letterId: "dl-x-1",
          dependency: "jobs.x",
          jobId: "x",
          reason: DeadLetterReason.PERMANENT,
          payload: new Uint8Array([1]),
          attempts: 1,
        },
      });
      const err = await dl.replayDeadLetter({ letterId: "dl-x-1" }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.FailedPrecondition);
      expect((err as ConnectError).message).toContain("replay needs NATS");
    } finally {
      await plain.cleanup();
    }
  });
});
