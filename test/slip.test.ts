/**
 * Measures the slip of the fast path: how many calls an instance admits between the moment the
 * fleet's breaker opens on the server and the moment the transition reaches the instance, over
 * the Watch stream and over NATS. The figures are printed; the assertions only bound them loosely,
 * since a loaded machine stretches every delay.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { type Bulwark, createBulwark } from "../sdk/index.ts";
import {
  clientsFor,
  type NatsProcess,
  startNats,
  startTestServer,
  testPolicy,
  waitFor,
} from "./harness.ts";

let nats: NatsProcess;
let server: Awaited<ReturnType<typeof startTestServer>>;
beforeAll(async () => {
  nats = await startNats();
  server = await startTestServer({ natsUrl: nats.url });
});
afterAll(async () => {
  await server?.cleanup();
  await nats?.stop();
});

/** Opens measured per source. */
const CYCLES = 10;
/** Concurrent callers per instance; each call takes about a millisecond. */
const WORKERS = 4;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function measure(
  source: "watch" | "nats",
): Promise<{ delays: number[]; slips: number[]; rate: number }> {
  const dependency = `slip.${source}`;
  const { policies, breakers } = clientsFor(server.url);
  await policies.putPolicy({
    policy: testPolicy(dependency, {
      breaker: { minimumCalls: 1, openWaitMs: 150, windowSize: 1 },
    }),
  });
  const b: Bulwark = createBulwark({
    url: server.url,
    service: `slip-${source}`,
    ...(source === "nats" ? { nats: nats.url } : {}),
  });
  await b.ready();
  // Admission times of attempts admitted from the followed state (no server round trip).
  const admitted: number[] = [];
  b.on((e) => {
    if (e.type === "attempt" && e.admission === "fleet") admitted.push(e.startedAtMs);
  });
  let state = "closed";
  const opens: { atMs: number; arrivedAtMs: number }[] = [];
  b.subscribe(
    (e) => {
      if (e.type !== "breaker-state") return;
      state = e.state;
      if (e.state === "open" && e.origin === "transition") {
        opens.push({ atMs: e.changedAtMs, arrivedAtMs: Date.now() });
      }
    },
    { dependencies: [dependency] },
  );
  let stop = false;
  let calls = 0;
  const startedMs = Date.now();
  const worker = async () => {
    while (!stop && calls < 500_000) {
      calls++;
      await b
        .call(dependency, () => new Promise((r) => setTimeout(r, 1)))
        .catch(() => new Promise((r) => setTimeout(r, 1)));
    }
  };
  const load = Promise.all(Array.from({ length: WORKERS }, worker));
  try {
    for (let i = 0; i < CYCLES; i++) {
      expect(await waitFor(() => state === "closed", 5_000)).toBe(true);
      await new Promise((r) => setTimeout(r, 100));
      // Another instance's failure opens the breaker (window of 1, minimum 1 call).
      await breakers.report({
        outcomes: [{ dependency, service: "other", attempt: 1, result: OutcomeResult.FAILURE }],
      });
      expect(await waitFor(() => opens.length === i + 1, 5_000)).toBe(true);
    }
  } finally {
    stop = true;
    await load;
    await b.close();
  }
  const rate = (calls * 1000) / (Date.now() - startedMs);
  return {
    delays: opens.map((o) => o.arrivedAtMs - o.atMs),
    slips: opens.map((o) => admitted.filter((t) => t >= o.atMs && t < o.arrivedAtMs).length),
    rate,
  };
}

describe("slip between a server transition and its arrival at an instance", () => {
  it.each(["watch", "nats"] as const)(
    "over %s",
    async (source) => {
      const { delays, slips, rate } = await measure(source);
      process.stdout.write(
        `slip over ${source}: ${Math.round(rate)} calls/s per instance; transition → instance ` +
          `median ${median(delays)} ms, max ${Math.max(...delays)} ms; calls slipped through ` +
          `median ${median(slips)}, max ${Math.max(...slips)} (${CYCLES} opens)\n`,
      );
      expect(delays).toHaveLength(CYCLES);
      expect(median(delays)).toBeLessThan(500);
    },
    60_000,
  );
});
