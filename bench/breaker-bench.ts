/**
 * Breaker benchmarks (the control plane in its own process, as in production):
 * - Acquire latency and throughput through the SDK's gRPC transport, against a bare @grpc/grpc-js
 *   server answering the same message (baseline);
 * - outcomes ingested per second through batched Report;
 * - how long a breaker transition takes to reach subscribers over NATS and over Watch, from the
 *   moment the server made it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { connect } from "nats";
import {
  AcquireDecision,
  type AcquireRequest,
  AcquireRequestSchema,
  type AcquireResponse,
  AcquireResponseSchema,
  BreakerService,
  ForceAction,
} from "../gen/bulwark/v1/breaker_pb.ts";
import { OutcomeResult, OutcomeSchema } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { EventSchema } from "../gen/bulwark/v1/event_pb.ts";
import { createGrpcJsTransport } from "../sdk/grpc-js-transport.ts";
import {
  clientsFor,
  ROOT,
  spawnServerProcess,
  startNats,
  tempDir,
  testPolicy,
} from "../test/harness.ts";
import { fmt, line, percentile } from "./stats.ts";

/** Sequential calls whose latencies make the p50/p99. */
const LATENCY_CALLS = 5_000;
/** Calls kept in flight at once for the throughput figure, as a busy fleet would. */
const THROUGHPUT_CONCURRENCY = 32;
const THROUGHPUT_CALLS = 20_000;
/** Report batches: the SDK's largest batch, from a few instances at once. */
const REPORT_BATCH = 1_000;
const REPORT_BATCHES = 300;
const REPORT_CONCURRENCY = 4;
/** Transitions whose delivery is timed, and subscribers of each kind. */
const TRANSITIONS = 300;
const SUBSCRIBERS = 4;

async function latencies(call: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 500; i++) await call();
  const samples: number[] = [];
  for (let i = 0; i < LATENCY_CALLS; i++) {
    const started = performance.now();
    await call();
    samples.push(performance.now() - started);
  }
  return samples;
}

async function throughput(call: () => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: THROUGHPUT_CONCURRENCY }, async () => {
      while (next++ < THROUGHPUT_CALLS) await call();
    }),
  );
  return THROUGHPUT_CALLS / ((performance.now() - started) / 1000);
}

async function spawnEchoServer(): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "bench/grpc-echo-server.ts")],
    {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once("line", (l) => resolve(Number(l)));
    child.once("exit", (code) => reject(new Error(`echo server exited with ${code}`)));
  });
  return { port, child };
}

const us = (ms: number) => `${fmt(ms * 1000)} µs`;

export async function breakerBench(): Promise<void> {
  const tmp = tempDir("bulwark-bench-");
  const nats = await startNats();
  const echo = await spawnEchoServer();
  // Logging at warn: at info the server writes one JSON line per RPC, a cost of its own on two
  // cores that the figures below leave out.
  const server = await spawnServerProcess(join(tmp.dir, "bench.db"), 0, ["--nats", nats.url], {
    quiet: true,
  });
  try {
    process.stdout.write("\nBreaker service\n");
    const admin = clientsFor(server.url);
    await admin.policies.putPolicy({
      policy: testPolicy("bench.acquire", {
        breaker: { windowSize: 10_000, minimumCalls: 10_000 },
      }),
    });

    // Baseline: a bare grpc-js unary round trip with the same messages.
    const raw = new grpc.Client(`127.0.0.1:${echo.port}`, grpc.credentials.createInsecure());
    const request = create(AcquireRequestSchema, {
      dependency: "bench.acquire",
      service: "bench",
      attempt: 1,
    });
    const rawAcquire = () =>
      new Promise((resolve, reject) =>
        raw.makeUnaryRequest(
          "/bulwark.v1.BreakerService/Acquire",
          (m: AcquireRequest) => Buffer.from(toBinary(AcquireRequestSchema, m)),
          (b: Buffer) => fromBinary(AcquireResponseSchema, b),
          request,
          new grpc.Metadata(),
          (err: grpc.ServiceError | null, value?: AcquireResponse) =>
            err === null ? resolve(value) : reject(err),
        ),
      );
    const transport = createGrpcJsTransport(server.url, { "x-bulwark-principal": "bench" });
    const breakers = createClient(BreakerService, transport);
    const acquire = async () => {
      const answer = await breakers.acquire(request);
      if (answer.decision !== AcquireDecision.ALLOW) throw new Error("Acquire did not allow");
    };

    const rawSamples = await latencies(rawAcquire);
    const acquireSamples = await latencies(acquire);
    const rawP50 = percentile(rawSamples, 50);
    line("bare grpc-js unary round trip p50 (baseline)", us(rawP50));
    line("bare grpc-js unary round trip p99", us(percentile(rawSamples, 99)));
    line("Acquire p50 (target ≤ 1.5× baseline)", us(percentile(acquireSamples, 50)), {
      name: "bare grpc-js",
      ratio: percentile(acquireSamples, 50) / rawP50,
    });
    line("Acquire p99 (target < 2 ms)", us(percentile(acquireSamples, 99)));
    const rawPerS = await throughput(rawAcquire);
    const acquirePerS = await throughput(acquire);
    line(`bare grpc-js, ${THROUGHPUT_CONCURRENCY} in flight (baseline)`, `${fmt(rawPerS)}/s`);
    line(`Acquire, ${THROUGHPUT_CONCURRENCY} in flight (target 5 000)`, `${fmt(acquirePerS)}/s`, {
      name: "bare grpc-js",
      ratio: acquirePerS / rawPerS,
    });
    raw.close();

    // Outcomes through batched Report, from a few callers at once.
    const outcomes = Array.from({ length: REPORT_BATCH }, (_, i) =>
      create(OutcomeSchema, {
        dependency: "bench.acquire",
        service: "bench",
        attempt: 1,
        result: OutcomeResult.SUCCESS,
        latencyMs: 40 + (i % 20),
      }),
    );
    await breakers.report({ outcomes });
    let sent = 0;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: REPORT_CONCURRENCY }, async () => {
        while (sent++ < REPORT_BATCHES) await breakers.report({ outcomes });
      }),
    );
    const outcomesPerS = (REPORT_BATCHES * REPORT_BATCH) / ((performance.now() - started) / 1000);
    line(
      `outcomes via Report, batch ${fmt(REPORT_BATCH)} × ${REPORT_CONCURRENCY}`,
      `${fmt(outcomesPerS)}/s`,
      { name: "target 100 000/s", ratio: outcomesPerS / 100_000 },
    );

    // Transition delivery: an operator forces the breaker open and resets it, over and over; each
    // subscriber times every transition from the moment the server made it (its at_unix_ms, on
    // the same machine's clock) to its arrival, so the figures include the durable commit that
    // precedes every publication.
    await admin.policies.putPolicy({ policy: testPolicy("bench.flip") });
    const natsSubscribers = await Promise.all(
      Array.from({ length: SUBSCRIBERS }, () => connect({ servers: nats.url })),
    );
    const natsSamples: number[] = [];
    const watchSamples: number[] = [];
    const nowMs = () => performance.timeOrigin + performance.now();
    const receivers: Promise<void>[] = [];
    for (const nc of natsSubscribers) {
      const sub = nc.subscribe("bulwark.breaker.bench.flip");
      receivers.push(
        (async () => {
          for await (const msg of sub) {
            const event = fromBinary(EventSchema, msg.data);
            if (event.kind.case === "breakerTransition") {
              natsSamples.push(nowMs() - Number(event.kind.value.atUnixMs));
            }
          }
        })(),
      );
    }
    const watching = new AbortController();
    for (let i = 0; i < SUBSCRIBERS; i++) {
      const stream = breakers.watch({ dependencies: ["bench.flip"] }, { signal: watching.signal });
      receivers.push(
        (async () => {
          try {
            for await (const res of stream) {
              const event = res.kind.case === "event" ? res.kind.value : undefined;
              if (event?.kind.case === "breakerTransition") {
                watchSamples.push(nowMs() - Number(event.kind.value.atUnixMs));
              }
            }
          } catch {
            // Ended by the abort below.
          }
        })(),
      );
    }
    await Promise.all(natsSubscribers.map((nc) => nc.flush()));
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < TRANSITIONS; i++) {
      const expected = (i + 1) * SUBSCRIBERS;
      await admin.breakers.forceBreaker({
        dependency: "bench.flip",
        action: i % 2 === 0 ? ForceAction.FORCED_OPEN : ForceAction.RESET,
        reason: "transition delivery benchmark",
      });
      await waitUntil(() => natsSamples.length >= expected && watchSamples.length >= expected);
    }
    await new Promise((r) => setTimeout(r, 200));
    watching.abort();
    await Promise.all(natsSubscribers.map((nc) => nc.close()));
    await Promise.allSettled(receivers);
    line(`transition → ${SUBSCRIBERS} NATS subscribers p50`, us(percentile(natsSamples, 50)));
    line("transition → NATS subscribers p99 (target < 5 ms)", us(percentile(natsSamples, 99)));
    line(`transition → ${SUBSCRIBERS} Watch streams p50`, us(percentile(watchSamples, 50)));
    line("transition → Watch streams p99", us(percentile(watchSamples, 99)), {
      name: "NATS p99",
      ratio: percentile(watchSamples, 99) / percentile(natsSamples, 99),
    });
    line(
      "transitions delivered (NATS / Watch)",
      `${fmt(natsSamples.length)} / ${fmt(watchSamples.length)}`,
    );
    transport.close();
  } finally {
    await server.kill();
    echo.child.kill("SIGTERM");
    await nats.stop();
    tmp.remove();
  }
}

async function waitUntil(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error("timed out waiting for transitions");
    await new Promise((r) => setImmediate(r));
  }
}
