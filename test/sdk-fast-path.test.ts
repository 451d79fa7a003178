import { join } from "node:path";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  type Bulwark,
  type BulwarkEvent,
  createBulwark,
  type FleetEvent,
  isCircuitOpenError,
} from "../sdk/index.ts";
import { type BulwarkServer, startServer } from "../server/bulwark-server.ts";
import { clientsFor, tempDir, testPolicy, waitFor } from "./harness.ts";

const tmp = tempDir();
let server: BulwarkServer;
const sdks: Bulwark[] = [];

beforeAll(async () => {
  server = await startServer({
    dbPath: join(tmp.dir, "fast.db"),
    host: "127.0.0.1",
    port: 0,
    metrics: { host: "127.0.0.1", port: 0 },
    logger: pino({ level: "silent" }),
  });
});
afterAll(async () => {
  await Promise.all(sdks.map((b) => b.close()));
  await server.close();
  tmp.remove();
});

function sdk(options: { strict?: boolean } = {}): Bulwark {
  const b = createBulwark({ url: server.url, service: "fast-svc", ...options });
  sdks.push(b);
  return b;
}

/** Acquire RPCs the server answered for a dependency, from its /metrics. */
async function acquires(dependency: string): Promise<number> {
  const text = await (await fetch(`${server.metricsUrl}/metrics`)).text();
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("bulwark_acquire_total{") && line.includes(`dependency="${dependency}"`)) {
      total += Number(line.slice(line.lastIndexOf(" ") + 1));
    }
  }
  return total;
}

const fail = (dependency: string) => ({
  dependency,
  service: "operator",
  attempt: 1,
  result: OutcomeResult.FAILURE,
});

describe("the SDK's fast path", () => {
  it("admits CLOSED calls with no Acquire, rejects OPEN ones locally and asks for a HALF_OPEN permit", async () => {
    const dependency = "fast.states";
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy(dependency, { breaker: { minimumCalls: 1, openWaitMs: 400 } }),
    });
    const b = sdk();
    await b.ready();
    expect(b.followingFleet).toBe(true);
    const events: BulwarkEvent[] = [];
    b.on((e) => events.push(e));

    let calls = 0;
    for (let i = 0; i < 200; i++) await b.call(dependency, async () => ++calls);
    expect(calls).toBe(200);
    expect(await acquires(dependency)).toBe(0);
    expect(events.filter((e) => e.type === "attempt").every((e) => e.admission === "fleet")).toBe(
      true,
    );
    await b.flush();
    // The reports still reach the server: the fleet's window counts them.
    const window = (await breakers.getBreaker({ dependency })).breaker?.window;
    expect(window?.calls).toBe(10); // the policy's window size

    // Other instances' failures open the fleet's breaker; this one hears of it and rejects.
    await breakers.report({ outcomes: Array(10).fill(fail(dependency)) });
    expect(
      await waitFor(() => events.some((e) => e.type === "attempt") && isOpen(b, dependency)),
    ).toBe(true);
    const rejected = await b.call(dependency, async () => ++calls).catch((e: unknown) => e);
    expect(isCircuitOpenError(rejected)).toBe(true);
    expect(calls).toBe(200);
    expect(await acquires(dependency)).toBe(0);

    // HALF_OPEN: the server's timer moves it, and the next attempt asks for a permit.
    expect(await waitFor(() => stateOf(b, dependency) === "half-open")).toBe(true);
    events.length = 0;
    await b.call(dependency, async () => ++calls);
    expect(events.find((e) => e.type === "attempt")).toMatchObject({ admission: "probe" });
    expect(await acquires(dependency)).toBe(1);
    await b.flush();
    expect(await waitFor(() => stateOf(b, dependency) === "closed")).toBe(true);
    await b.call(dependency, async () => ++calls);
    expect(await acquires(dependency)).toBe(1);
  });

  it("asks the server before every attempt in strict mode", async () => {
    const dependency = "fast.strict";
    await clientsFor(server.url).policies.putPolicy({ policy: testPolicy(dependency) });
    const b = sdk({ strict: true });
    await b.ready();
    for (let i = 0; i < 20; i++) await b.call(dependency, async () => i);
    expect(await acquires(dependency)).toBe(20);
  });
});

/** The state of a dependency's breaker as the instance's events API reports it. */
function stateOf(b: Bulwark, dependency: string): string {
  let state = "closed";
  const unsubscribe = b.subscribe(
    (e) => {
      if (e.type === "breaker-state") state = e.state;
    },
    { dependencies: [dependency] },
  );
  unsubscribe();
  return state;
}

function isOpen(b: Bulwark, dependency: string): boolean {
  return stateOf(b, dependency) === "open";
}

describe("the events API", () => {
  it("delivers the current state first, then each transition in order, to callbacks and iterators", async () => {
    const dependency = "fast.events";
    const other = "fast.events-other";
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy(dependency, { breaker: { minimumCalls: 1, openWaitMs: 300 } }),
    });
    await policies.putPolicy({ policy: testPolicy(other) });
    await breakers.report({ outcomes: [fail(dependency)] });
    const b = sdk();
    await b.ready();

    // A name that can never match a dependency is refused, naming the option.
    expect(() => b.subscribe(() => {}, { dependencies: ["a..b"] })).toThrow(
      /options\.dependencies\[0\] is not a dependency name/,
    );
    expect(() => b.watch({ dependencies: [dependency, ""] })).toThrow(/options\.dependencies\[1\]/);

    const seen: FleetEvent[] = [];
    const unsubscribe = b.subscribe((e) => seen.push(e), { dependencies: [dependency] });
    const controller = new AbortController();
    const iterated: FleetEvent[] = [];
    const reading = (async () => {
      for await (const e of b.watch({ dependencies: [dependency], signal: controller.signal })) {
        iterated.push(e);
      }
    })();
    // Current state first: the policy, then the breaker, OPEN since before the subscription.
    expect(seen.map((e) => [e.type, e.origin])).toEqual([
      ["policy", "current"],
      ["breaker-state", "current"],
    ]);
    expect(seen[1]).toMatchObject({ state: "open", dependency });

    // OPEN → HALF_OPEN (server timer) → CLOSED (a probe succeeds).
    expect(
      await waitFor(() => seen.some((e) => e.type === "breaker-state" && e.state === "half-open")),
    ).toBe(true);
    await b.call(dependency, async () => "probe");
    await b.flush();
    expect(
      await waitFor(() => seen.some((e) => e.type === "breaker-state" && e.state === "closed")),
    ).toBe(true);
    await policies.putPolicy({
      policy: testPolicy(dependency, {
        timeoutMs: 900,
        breaker: { minimumCalls: 1, openWaitMs: 300 },
      }),
    });
    expect(await waitFor(() => seen.at(-1)?.type === "policy")).toBe(true);
    controller.abort();
    await reading;
    unsubscribe();

    const shape = (list: FleetEvent[]) =>
      list.map((e) =>
        e.type === "breaker-state"
          ? `${e.origin}:${e.from ?? "-"}>${e.state}`
          : `${e.origin}:policy@${e.revision}`,
      );
    expect(shape(seen)).toEqual([
      "current:policy@1",
      "current:->open",
      "transition:open>half-open",
      "transition:half-open>closed",
      "transition:policy@2",
    ]);
    expect(shape(iterated)).toEqual(shape(seen));
    // Nothing of the other dependency, and transitions carry increasing sequence numbers.
    expect(seen.every((e) => e.dependency === dependency)).toBe(true);
    const sequences = seen.flatMap((e) =>
      e.type === "breaker-state" && e.origin === "transition" ? [e.sequence] : [],
    );
    expect(sequences).toEqual([...sequences].sort((x, y) => x - y));
  });
});
