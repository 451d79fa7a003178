import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  type Bulwark,
  type BulwarkEvent,
  createBulwark,
  type FleetEvent,
  isCircuitOpenError,
  isRetriesExhaustedError,
} from "../sdk/index.ts";
import {
  clientsFor,
  type ServerProcess,
  spawnServerProcess,
  tempDir,
  testPolicy,
  waitFor,
} from "./harness.ts";

const tmp = tempDir();
const processes: ServerProcess[] = [];
const sdks: Bulwark[] = [];
afterAll(async () => {
  await Promise.all(sdks.map((b) => b.close()));
  await Promise.all(processes.map((p) => p.kill("SIGKILL")));
  tmp.remove();
});

/** A healthy upstream: a plain HTTP server answering 200 at once. */
async function healthyUpstream(): Promise<{ url: string; server: Server; hits: () => number }> {
  let hits = 0;
  const server = createServer((_req, res) => {
    hits++;
    res.end("ok");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/`, server, hits: () => hits };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("control plane SIGKILLed under load", () => {
  it("fails no user call, decides locally meanwhile, then resyncs and reports again", async () => {
    const dbPath = join(tmp.dir, "kill.db");
    const first = await spawnServerProcess(dbPath);
    processes.push(first);
    const dependency = "outage.load";
    await clientsFor(first.url).policies.putPolicy({
      policy: testPolicy(dependency, { breaker: { windowSize: 10_000, minimumCalls: 10_000 } }),
    });
    const upstream = await healthyUpstream();
    const instances = ["svc-a", "svc-b"].map((service) => {
      const b = createBulwark({ url: first.url, service });
      sdks.push(b);
      const events: BulwarkEvent[] = [];
      b.on((e) => {
        if (e.type !== "attempt" || e.admission === "local") events.push(e);
      });
      return { b, events };
    });
    await Promise.all(instances.map(({ b }) => b.ready()));

    // Steady load, bounded in time and count: 3 workers per instance, a call every ~2 ms each.
    const stopAtMs = Date.now() + 9_000;
    const maxCalls = 30_000;
    let made = 0;
    let failed = 0;
    const errors = new Set<string>();
    const worker = async (b: Bulwark) => {
      while (Date.now() < stopAtMs && made < maxCalls) {
        made++;
        try {
          await b.call(dependency, async ({ signal }) => {
            const res = await fetch(upstream.url, { signal });
            return res.text();
          });
        } catch (err) {
          failed++;
          errors.add(String(err));
        }
        await sleep(2);
      }
    };
    const load = Promise.all(instances.flatMap(({ b }) => [worker(b), worker(b), worker(b)]));

    await sleep(1_500);
    await first.kill("SIGKILL");
    const madeAtKill = made;
    await sleep(2_500);
    const second = await spawnServerProcess(dbPath, first.port);
    processes.push(second);
    const breakers = clientsFor(second.url).breakers;
    const callsAtRestart = (await breakers.getBreaker({ dependency })).breaker?.window?.calls ?? 0;
    const madeAtRestart = made;
    // Every instance is back on the fleet's state: connected, resynced, admitting without asking.
    expect(
      await waitFor(
        () => instances.every(({ b }) => b.followingFleet && b.controlPlaneConnected),
        8_000,
      ),
    ).toBe(true);
    await load;
    await Promise.all(instances.map(({ b }) => b.flush()));

    expect([...errors]).toEqual([]);
    expect(failed).toBe(0);
    expect(madeAtRestart - madeAtKill).toBeGreaterThan(100); // calls went on during the outage
    for (const { b, events } of instances) {
      const statuses = events.flatMap((e) => (e.type === "control-plane" ? [e.status] : []));
      expect(statuses.slice(0, 2)).toEqual(["unreachable", "connected"]);
      expect(events.some((e) => e.type === "attempt" && e.admission === "local")).toBe(true);
      expect(b.reportsDropped).toBe(0);
    }
    // What was decided locally during the outage, and everything since, reached the new server.
    const callsAtEnd = (await breakers.getBreaker({ dependency })).breaker?.window?.calls ?? 0;
    // (The window holds at most its 10 000 newest outcomes.)
    expect(callsAtEnd - callsAtRestart).toBeGreaterThanOrEqual(
      Math.min(made - madeAtKill, 10_000 - callsAtRestart),
    );
    upstream.server.close();
  }, 40_000);
});

describe("the local breaker", () => {
  it("opens on the last known policy while the control plane is down", async () => {
    const first = await spawnServerProcess(join(tmp.dir, "local.db"));
    processes.push(first);
    const dependency = "outage.local";
    await clientsFor(first.url).policies.putPolicy({
      policy: testPolicy(dependency, { breaker: { windowSize: 10, minimumCalls: 4 } }),
    });
    const b = createBulwark({ url: first.url, service: "local-svc" });
    sdks.push(b);
    await b.ready();
    await first.kill("SIGKILL");
    expect(await waitFor(() => !b.followingFleet)).toBe(true);
    let called = 0;
    const failing = async () => {
      called++;
      throw Object.assign(new Error("upstream down"), { status: 503 });
    };
    // The policy's rules, run locally: four failures meet minimumCalls at 100 %.
    for (let i = 0; i < 4; i++) {
      expect(isRetriesExhaustedError(await b.call(dependency, failing).catch((e) => e))).toBe(true);
    }
    const rejected = await b.call(dependency, failing).catch((e: unknown) => e);
    expect(isCircuitOpenError(rejected)).toBe(true);
    expect(called).toBe(4);
  }, 20_000);
});

describe("events across a control-plane restart", () => {
  it("delivers, after the resync, the state that changed while the SDK was disconnected", async () => {
    const dbPath = join(tmp.dir, "resync.db");
    const first = await spawnServerProcess(dbPath);
    processes.push(first);
    const dependency = "outage.resync";
    const { policies, breakers } = clientsFor(first.url);
    await policies.putPolicy({
      policy: testPolicy(dependency, { breaker: { minimumCalls: 1, openWaitMs: 1_500 } }),
    });
    await breakers.report({
      outcomes: [{ dependency, service: "x", attempt: 1, result: OutcomeResult.FAILURE }],
    });
    const b = createBulwark({ url: first.url, service: "resync-svc" });
    sdks.push(b);
    await b.ready();
    const seen: FleetEvent[] = [];
    b.subscribe((e) => seen.push(e), { dependencies: [dependency] });
    await first.kill("SIGKILL");
    // The open wait runs out while the server is down: it resumes HALF_OPEN when it comes back.
    await sleep(2_000);
    const second = await spawnServerProcess(dbPath, first.port);
    processes.push(second);
    expect(await waitFor(() => b.followingFleet, 8_000)).toBe(true);
    const shape = seen.map((e) =>
      e.type === "breaker-state" ? `${e.origin}:${e.state}` : `${e.origin}:${e.type}`,
    );
    expect(shape).toEqual(["current:policy", "current:open", "resync:half-open"]);
  }, 30_000);
});
