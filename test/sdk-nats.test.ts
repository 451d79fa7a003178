import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BreakerState, OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { type Bulwark, type BulwarkEvent, createBulwark, type FleetEvent } from "../sdk/index.ts";
import {
  clientsFor,
  freePort,
  type NatsProcess,
  startNats,
  startTestServer,
  testPolicy,
  waitFor,
} from "./harness.ts";

let nats: NatsProcess;
let server: Awaited<ReturnType<typeof startTestServer>>;
const sdks: Bulwark[] = [];

beforeAll(async () => {
  nats = await startNats();
  server = await startTestServer({ natsUrl: nats.url });
});
afterAll(async () => {
  await Promise.all(sdks.map((b) => b.close()));
  await server?.cleanup();
  await nats?.stop();
});

const STATE_NAMES: Record<number, string> = {
  [BreakerState.CLOSED]: "closed",
  [BreakerState.OPEN]: "open",
  [BreakerState.HALF_OPEN]: "half-open",
};

/** Each breaker's state as the subscriber last heard it. */
function follow(b: Bulwark): { states: Map<string, string>; events: FleetEvent[] } {
  const states = new Map<string, string>();
  const events: FleetEvent[] = [];
  b.subscribe((e) => {
    events.push(e);
    if (e.type === "breaker-state") states.set(e.dependency, e.state);
  });
  return { states, events };
}

async function serverStates(): Promise<Map<string, string>> {
  const { breakers } = await clientsFor(server.url).breakers.listBreakers({});
  return new Map(breakers.map((b) => [b.dependency, STATE_NAMES[b.state] ?? String(b.state)]));
}

describe("following the fleet over NATS", () => {
  it("reconnects after nats-server is killed and restarted, and ends with the server's state", async () => {
    const { policies, breakers } = clientsFor(server.url);
    const deps = ["nats.a", "nats.b", "nats.c"];
    for (const dependency of deps) {
      await policies.putPolicy({
        policy: testPolicy(dependency, { breaker: { minimumCalls: 1, openWaitMs: 600 } }),
      });
    }
    const instances = [0, 1].map(() => {
      const b = createBulwark({ url: server.url, service: "nats-svc", nats: nats.url });
      sdks.push(b);
      const sdkEvents: BulwarkEvent[] = [];
      b.on((e) => sdkEvents.push(e));
      return { b, sdkEvents, ...follow(b) };
    });
    await Promise.all(instances.map(({ b }) => b.ready()));
    for (const { sdkEvents } of instances) {
      expect(sdkEvents).toContainEqual(
        expect.objectContaining({ type: "event-source", source: "nats", status: "live" }),
      );
    }
    const fail = (dependency: string) => ({
      dependency,
      service: "x",
      attempt: 1,
      result: OutcomeResult.FAILURE,
    });
    // Over NATS while it is up: nats.a opens and every instance hears of it.
    await breakers.report({ outcomes: [fail("nats.a")] });
    expect(
      await waitFor(() => instances.every(({ states }) => states.get("nats.a") === "open")),
    ).toBe(true);

    // NATS is killed; while it restarts, nats.b opens: that transition is published to no one.
    const restarting = nats.restart();
    await breakers.report({ outcomes: [fail("nats.b")] });
    await restarting;
    await breakers.report({ outcomes: [fail("nats.c")] });

    // Every instance reconnects, lists, and ends with the server's state (nats.a and nats.b
    // have moved on to HALF_OPEN by the server's timer meanwhile).
    const same = async () => {
      const expected = await serverStates();
      return instances.every(({ states }) =>
        deps.every((d) => states.get(d) === (expected.get(d) ?? "closed")),
      );
    };
    expect(await waitFor(same, 10_000)).toBe(true);
    for (const { b, sdkEvents } of instances) {
      expect(await waitFor(() => b.followingFleet, 5_000)).toBe(true);
      const nats = sdkEvents.flatMap((e) =>
        e.type === "event-source" && e.source === "nats" ? [e.status] : [],
      );
      expect(nats).toEqual(["live", "lost", "live"]);
    }
    // And it keeps following over the new connection.
    expect(
      await waitFor(async () => (await serverStates()).get("nats.c") === "half-open", 5_000),
    ).toBe(true);
    expect(await waitFor(same, 5_000)).toBe(true);
  }, 40_000);
});

describe("NATS unreachable", () => {
  it("follows the Watch stream as a second source, and closes without waiting for NATS", async () => {
    const dependency = "nats.down";
    await clientsFor(server.url).policies.putPolicy({ policy: testPolicy(dependency) });
    // A port nothing listens on: NATS is down from the start.
    const b = createBulwark({
      url: server.url,
      service: "nats-down-svc",
      nats: `nats://127.0.0.1:${await freePort()}`,
    });
    const sources: string[] = [];
    b.on((e) => {
      if (e.type === "event-source") sources.push(`${e.source}:${e.status}`);
    });
    await b.ready();
    expect(sources).toEqual(["watch:live"]);
    const events: BulwarkEvent[] = [];
    b.on((e) => events.push(e));
    await expect(b.call(dependency, async () => "ok")).resolves.toBe("ok");
    expect(events.find((e) => e.type === "attempt")).toMatchObject({ admission: "fleet" });
    const started = Date.now();
    await b.close();
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
