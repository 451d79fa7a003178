/**
 * ForceBreaker end to end: each action through the RPC, its validation, the transition stored
 * with the operator as its actor, published on Watch and NATS, audited, and kept across a
 * SIGKILL of the server process.
 */
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AcquireDecision, ForceAction } from "../gen/bulwark/v1/breaker_pb.ts";
import {
  BreakerState,
  type BreakerTransition,
  OutcomeResult,
} from "../gen/bulwark/v1/breaker_types_pb.ts";
import { type Event, EventSchema } from "../gen/bulwark/v1/event_pb.ts";
import {
  clientsFor,
  type NatsProcess,
  rpcFailure,
  type ServerProcess,
  spawnServerProcess,
  startNats,
  startTestServer,
  tempDir,
  testPolicy,
  waitFor,
} from "./harness.ts";

let nats: NatsProcess;
let server: Awaited<ReturnType<typeof startTestServer>>;
const tmp = tempDir();
const processes: ServerProcess[] = [];

beforeAll(async () => {
  nats = await startNats();
  server = await startTestServer({ natsUrl: nats.url });
});
afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill("SIGKILL")));
  await server?.cleanup();
  await nats?.stop();
  tmp.remove();
});

const outcome = (dependency: string, result = OutcomeResult.FAILURE, service = "svc") => ({
  dependency,
  service,
  attempt: 1,
  result,
});

describe("ForceBreaker", () => {
  it("FORCED_OPEN rejects every Acquire with retry_at 0 until RESET, recorded with the actor", async () => {
    const { policies, breakers } = clientsFor(server.url, "alice@ops");
    await policies.putPolicy({ policy: testPolicy("force.open") });
    await breakers.report({ outcomes: [outcome("force.open", OutcomeResult.SUCCESS)] });

    const res = await breakers.forceBreaker({
      dependency: "force.open",
      action: ForceAction.FORCED_OPEN,
      reason: "upstream maintenance until 18:00",
    });
    expect(res.breaker).toMatchObject({
      state: BreakerState.FORCED_OPEN,
      forcedBy: "alice@ops",
      reason: "forced open: upstream maintenance until 18:00",
    });
    for (const service of ["a", "b"]) {
      const answer = await breakers.acquire({ dependency: "force.open", service, attempt: 1 });
      expect(answer.decision).toBe(AcquireDecision.REJECT);
      expect(answer.retryAtUnixMs).toBe(0n);
      expect(answer.state).toBe(BreakerState.FORCED_OPEN);
    }
    // Outcomes do not move it, successes included.
    await breakers.report({
      outcomes: Array(20).fill(outcome("force.open", OutcomeResult.SUCCESS)),
    });
    const got = (await breakers.getBreaker({ dependency: "force.open" })).breaker!;
    expect(got.state).toBe(BreakerState.FORCED_OPEN);

    const reset = await clientsFor(server.url, "bob@ops").breakers.forceBreaker({
      dependency: "force.open",
      action: ForceAction.RESET,
      reason: "maintenance over",
    });
    expect(reset.breaker).toMatchObject({ state: BreakerState.CLOSED, forcedBy: "" });
    expect(reset.breaker?.window?.calls).toBe(0);
    const allowed = await breakers.acquire({ dependency: "force.open", service: "a", attempt: 1 });
    expect(allowed.decision).toBe(AcquireDecision.ALLOW);

    const { transitions } = await breakers.listTransitions({ dependency: "force.open" });
    expect(transitions.map((t) => [BreakerState[t.from], BreakerState[t.to], t.actor])).toEqual([
      ["CLOSED", "FORCED_OPEN", "alice@ops"],
      ["FORCED_OPEN", "CLOSED", "bob@ops"],
    ]);
    expect(transitions[0]?.window).toMatchObject({ calls: 1, failures: 0 });
    expect(transitions[0]?.policyRevision).toBe(1n);
  });

  it("DISABLED allows every attempt and never opens; METRICS_ONLY notes what would open it", async () => {
    const { policies, breakers } = clientsFor(server.url, "carol");
    await policies.putPolicy({ policy: testPolicy("force.off", { breaker: { minimumCalls: 2 } }) });
    await breakers.forceBreaker({
      dependency: "force.off",
      action: ForceAction.DISABLED,
      reason: "known bad",
    });
    await breakers.report({ outcomes: Array(10).fill(outcome("force.off")) });
    const disabled = (await breakers.getBreaker({ dependency: "force.off" })).breaker!;
    expect(disabled.state).toBe(BreakerState.DISABLED);
    expect(disabled.window?.failures).toBe(10);
    expect(
      (await breakers.acquire({ dependency: "force.off", service: "s", attempt: 1 })).decision,
    ).toBe(AcquireDecision.ALLOW);

    await breakers.forceBreaker({
      dependency: "force.off",
      action: ForceAction.METRICS_ONLY,
      reason: "shadow",
    });
    await breakers.report({ outcomes: [outcome("force.off")] });
    const shadow = (await breakers.getBreaker({ dependency: "force.off" })).breaker!;
    expect(shadow.state).toBe(BreakerState.METRICS_ONLY);
    expect(shadow.reason).toMatch(/^would open: failure rate 100\.0% >= 50%/);
    expect(
      (await breakers.acquire({ dependency: "force.off", service: "s", attempt: 1 })).decision,
    ).toBe(AcquireDecision.ALLOW);
  });

  it("publishes the transition on Watch and NATS and audits it with the operator", async () => {
    const { policies, breakers, audit } = clientsFor(server.url, "dave");
    await policies.putPolicy({ policy: testPolicy("force.events") });
    const nc = await connect({ servers: nats.url });
    const fromNats: Event[] = [];
    const sub = nc.subscribe("bulwark.breaker.force.events");
    void (async () => {
      for await (const m of sub) fromNats.push(fromBinary(EventSchema, m.data));
    })();
    await nc.flush();
    const controller = new AbortController();
    const stream = breakers.watch(
      { dependencies: ["force.events"] },
      { signal: controller.signal },
    );
    const iterator = stream[Symbol.asyncIterator]();
    expect((await iterator.next()).value?.kind.case).toBe("snapshot");
    try {
      await breakers.forceBreaker({
        dependency: "force.events",
        action: ForceAction.FORCED_OPEN,
        reason: "incident 42",
      });
      const next = (await iterator.next()).value;
      const event = next?.kind.value as Event;
      expect(event.kind.case).toBe("breakerTransition");
      const watched = event.kind.value as BreakerTransition;
      expect(watched).toMatchObject({
        to: BreakerState.FORCED_OPEN,
        actor: "dave",
        reason: "forced open: incident 42",
      });
      // The server's NATS connection is made in the background; the event follows it.
      expect(await waitFor(() => fromNats.length > 0, 5_000)).toBe(true);
      const published = fromNats[0]?.kind.value as BreakerTransition;
      expect(published).toMatchObject({ to: BreakerState.FORCED_OPEN, actor: "dave" });
    } finally {
      controller.abort();
      await nc.close();
    }
    const { records } = await audit.query({
      aggregateId: "force.events",
      eventType: "breaker.transition",
    });
    expect(records.map((r) => r.principal)).toEqual(["dave"]);
  });

  it("refuses invalid requests, naming the field, and changes nothing", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({ policy: testPolicy("force.shared") });
    await policies.putPolicy({
      policy: testPolicy("force.per-service", { breaker: { scope: 2 } }),
    });
    const base = {
      dependency: "force.shared",
      action: ForceAction.FORCED_OPEN,
      reason: "because",
    };
    const cases: [object, Code, RegExp][] = [
      [{ ...base, dependency: "bad name" }, Code.InvalidArgument, /^dependency:/],
      [{ ...base, action: ForceAction.UNSPECIFIED }, Code.InvalidArgument, /^action: is required/],
      [{ ...base, action: 42 }, Code.InvalidArgument, /^action:/],
      [{ ...base, reason: "" }, Code.InvalidArgument, /^reason: is required/],
      [{ ...base, reason: "   " }, Code.InvalidArgument, /^reason: is required/],
      [{ ...base, reason: "x".repeat(513) }, Code.InvalidArgument, /^reason: .*512/],
      [{ ...base, service: "checkout" }, Code.InvalidArgument, /^service: must be empty/],
      [{ ...base, service: "bad name" }, Code.InvalidArgument, /^service:/],
      [{ ...base, dependency: "force.per-service" }, Code.InvalidArgument, /^service: is required/],
      [{ ...base, dependency: "force.nothing" }, Code.NotFound, /no policy/],
    ];
    for (const [req, code, message] of cases) {
      const answer = await rpcFailure(breakers.forceBreaker(req));
      expect([Code[answer.code], answer.message], JSON.stringify(req).slice(0, 80)).toEqual([
        Code[code],
        expect.stringMatching(message),
      ]);
    }
    expect((await breakers.listTransitions({ dependency: "force.shared" })).transitions).toEqual(
      [],
    );
    expect(
      (await breakers.listTransitions({ dependency: "force.per-service" })).transitions,
    ).toEqual([]);

    // 512 characters (astral ones count once) is the limit, and a per-service breaker is named.
    const ok = await breakers.forceBreaker({
      dependency: "force.per-service",
      service: "checkout",
      action: ForceAction.DISABLED,
      reason: "🙂".repeat(512),
    });
    expect(ok.breaker).toMatchObject({ service: "checkout", state: BreakerState.DISABLED });
    const other = await breakers.acquire({
      dependency: "force.per-service",
      service: "billing",
      attempt: 1,
    });
    expect(other.state).toBe(BreakerState.CLOSED);
  });
});

describe("ForceBreaker durability", () => {
  it("keeps a forced state, its operator and its transition across a SIGKILL", async () => {
    const dbPath = join(tmp.dir, "forced.db");
    const first = await spawnServerProcess(dbPath);
    processes.push(first);
    const before = clientsFor(first.url, "erin");
    await before.policies.putPolicy({ policy: testPolicy("force.durable") });
    await before.breakers.report({ outcomes: [outcome("force.durable")] });
    await before.breakers.forceBreaker({
      dependency: "force.durable",
      action: ForceAction.FORCED_OPEN,
      reason: "hold during migration",
    });
    // No grace: only what was committed before the answer survives.
    await first.kill("SIGKILL");

    const second = await spawnServerProcess(dbPath);
    processes.push(second);
    const after = clientsFor(second.url);
    const resumed = (await after.breakers.getBreaker({ dependency: "force.durable" })).breaker!;
    expect(resumed).toMatchObject({
      state: BreakerState.FORCED_OPEN,
      forcedBy: "erin",
      reason: "forced open: hold during migration",
    });
    const answer = await after.breakers.acquire({
      dependency: "force.durable",
      service: "svc",
      attempt: 1,
    });
    expect([answer.decision, answer.retryAtUnixMs]).toEqual([AcquireDecision.REJECT, 0n]);
    const { transitions } = await after.breakers.listTransitions({ dependency: "force.durable" });
    expect(transitions.map((t) => [BreakerState[t.to], t.actor])).toEqual([
      ["FORCED_OPEN", "erin"],
    ]);
    expect(transitions[0]?.window).toMatchObject({ calls: 1, failures: 1 });
    await second.kill("SIGTERM");
  });
});
