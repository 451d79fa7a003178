import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BreakerState, OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { type Event, EventSchema } from "../gen/bulwark/v1/event_pb.ts";
import {
  ListPoliciesRequestSchema,
  type ListPoliciesResponse,
  ListPoliciesResponseSchema,
} from "../gen/bulwark/v1/policy_pb.ts";
import {
  clientsFor,
  type NatsProcess,
  rpcFailure,
  startNats,
  startTestServer,
  testPolicy,
} from "./harness.ts";

let server: Awaited<ReturnType<typeof startTestServer>>;

beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.cleanup();
});

describe("PolicyService", () => {
  it("stores a policy with defaults and bumps the revision on each Put", async () => {
    const { policies } = clientsFor(server.url);
    const first = await policies.putPolicy({ policy: testPolicy("cp.revisions") });
    expect(first.policy?.revision).toBe(1n);
    expect(first.policy?.retry?.maxRetryAfterMs).toBe(30_000);
    const second = await policies.putPolicy({
      policy: testPolicy("cp.revisions", { timeoutMs: 900 }),
      expectedRevision: 1n,
    });
    expect(second.policy?.revision).toBe(2n);
    const stale = await rpcFailure(
      policies.putPolicy({ policy: testPolicy("cp.revisions"), expectedRevision: 1n }),
    );
    expect(stale.code).toBe(Code.FailedPrecondition);
    const got = await policies.getPolicy({ dependency: "cp.revisions" });
    expect(got.policy?.timeoutMs).toBe(900);
  });

  it.each([
    ["a negative timeout", { timeoutMs: -5 }, "policy.timeout_ms"],
    [
      "a threshold above 100 %",
      { breaker: { failureRateThresholdPercent: 101 } },
      "policy.breaker.failure_rate_threshold_percent",
    ],
    ["an empty name", { dependency: "" }, "policy.dependency"],
    ["a timeout above the latency objective", { timeoutMs: 9_000 }, "policy.timeout_ms"],
  ])(
    "refuses %s with InvalidArgument naming the field, storing nothing",
    async (_, change, field) => {
      const { policies } = clientsFor(server.url);
      const before = await policies.listPolicies({});
      const { dependency, ...rest } = change as { dependency?: string } & Record<string, unknown>;
      const policy = testPolicy(dependency ?? "cp.invalid", {
        breaker: rest.breaker as Record<string, unknown> | undefined,
      });
      if (typeof rest.timeoutMs === "number") policy.timeoutMs = rest.timeoutMs;
      const { code, message } = await rpcFailure(policies.putPolicy({ policy }));
      expect(code).toBe(Code.InvalidArgument);
      expect(message.startsWith(`${field}:`)).toBe(true);
      const after = await policies.listPolicies({});
      expect(after.policies).toEqual(before.policies);
    },
  );

  it("answers NotFound for a missing policy and deletes with a revision check", async () => {
    const { policies } = clientsFor(server.url);
    expect((await rpcFailure(policies.getPolicy({ dependency: "cp.none" }))).code).toBe(
      Code.NotFound,
    );
    await policies.putPolicy({ policy: testPolicy("cp.delete") });
    const wrong = await rpcFailure(
      policies.deletePolicy({ dependency: "cp.delete", expectedRevision: 7n }),
    );
    expect(wrong.code).toBe(Code.FailedPrecondition);
    const deleted = await policies.deletePolicy({ dependency: "cp.delete", expectedRevision: 1n });
    expect(deleted.revision).toBe(1n);
    expect((await rpcFailure(policies.getPolicy({ dependency: "cp.delete" }))).code).toBe(
      Code.NotFound,
    );
  });

  it("is reachable from a plain @grpc/grpc-js client over standard gRPC", async () => {
    const { policies } = clientsFor(server.url);
    await policies.putPolicy({ policy: testPolicy("cp.grpcjs") });
    const Client = grpc.makeGenericClientConstructor(
      {
        ListPolicies: {
          path: "/bulwark.v1.PolicyService/ListPolicies",
          requestStream: false,
          responseStream: false,
          requestSerialize: (m: object) =>
            Buffer.from(toBinary(ListPoliciesRequestSchema, create(ListPoliciesRequestSchema, m))),
          requestDeserialize: (b: Buffer) => fromBinary(ListPoliciesRequestSchema, b),
          responseSerialize: (m: ListPoliciesResponse) =>
            Buffer.from(toBinary(ListPoliciesResponseSchema, m)),
          responseDeserialize: (b: Buffer) => fromBinary(ListPoliciesResponseSchema, b),
        },
      },
      "PolicyService",
    );
    const client = new Client(
      `127.0.0.1:${server.port}`,
      grpc.credentials.createInsecure(),
    ) as unknown as grpc.Client & {
      ListPolicies(
        req: object,
        cb: (err: grpc.ServiceError | null, res: ListPoliciesResponse) => void,
      ): void;
    };
    try {
      const res = await new Promise<ListPoliciesResponse>((resolve, reject) =>
        client.ListPolicies({}, (err, r) => (err ? reject(err) : resolve(r))),
      );
      expect(res.policies.map((p) => p.dependency)).toContain("cp.grpcjs");
    } finally {
      client.close();
    }
  });
});

describe("BreakerService", () => {
  it("refuses a malformed Report batch and changes no window", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({ policy: testPolicy("cp.report") });
    const good = {
      dependency: "cp.report",
      service: "svc",
      attempt: 1,
      result: OutcomeResult.FAILURE,
    };
    const bad = await rpcFailure(
      breakers.report({
        outcomes: [good, good, { ...good, dependency: "bad name" }],
      }),
    );
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.message).toMatch(/^outcomes\[2\]\.dependency:/);
    const empty = await rpcFailure(breakers.report({ outcomes: [] }));
    expect(empty.code).toBe(Code.InvalidArgument);
    const tooMany = await rpcFailure(breakers.report({ outcomes: Array(1001).fill(good) }));
    expect(tooMany.code).toBe(Code.InvalidArgument);
    const state = await breakers.getBreaker({ dependency: "cp.report" });
    expect(state.breaker?.window?.calls).toBe(0);
  });

  it("streams a snapshot first and then each transition on Watch", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({ policy: testPolicy("cp.watch", { breaker: { minimumCalls: 1 } }) });
    const controller = new AbortController();
    const stream = breakers.watch({ dependencies: ["cp.watch"] }, { signal: controller.signal });
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.value?.kind.case).toBe("snapshot");
    await breakers.report({
      outcomes: [
        { dependency: "cp.watch", service: "svc", attempt: 1, result: OutcomeResult.TIMEOUT },
      ],
    });
    const next = await iterator.next();
    expect(next.value?.kind.case).toBe("event");
    const event = next.value?.kind.value as Event;
    expect(event.kind.case).toBe("breakerTransition");
    if (event.kind.case === "breakerTransition") {
      expect(event.kind.value.to).toBe(BreakerState.OPEN);
      expect(event.kind.value.window?.failures).toBe(1);
    }
    controller.abort();
  });
});

describe("NATS events", () => {
  let nats: NatsProcess;
  let natsServer: Awaited<ReturnType<typeof startTestServer>>;
  beforeAll(async () => {
    nats = await startNats();
    natsServer = await startTestServer({ natsUrl: nats.url });
  });
  afterAll(async () => {
    await natsServer?.cleanup();
    await nats?.stop();
  });

  it("publishes policy changes and transitions as protobuf Events", async () => {
    const nc = await connect({ servers: nats.url });
    try {
      const received: Event[] = [];
      const sub = nc.subscribe("bulwark.>");
      const done = (async () => {
        for await (const m of sub) {
          // The audit mirror publishes on bulwark.audit.>, as AuditRecord messages.
          if (m.subject.startsWith("bulwark.audit.")) continue;
          received.push(fromBinary(EventSchema, m.data));
          if (received.length === 2) break;
        }
      })();
      await nc.flush();
      // The server connects to NATS in the background; give it the first connection.
      const { policies, breakers } = clientsFor(natsServer.url);
      const deadline = Date.now() + 5_000;
      await policies.putPolicy({
        policy: testPolicy("cp.nats", { breaker: { minimumCalls: 1 } }),
      });
      // Identical policies are not re-published, so each retry changes the timeout.
      for (let t = 901; received.length === 0 && Date.now() < deadline; t++) {
        await new Promise((r) => setTimeout(r, 50));
        if (received.length === 0) {
          await policies.putPolicy({
            policy: testPolicy("cp.nats", { timeoutMs: t, breaker: { minimumCalls: 1 } }),
          });
        }
      }
      await breakers.report({
        outcomes: [
          { dependency: "cp.nats", service: "svc", attempt: 1, result: OutcomeResult.FAILURE },
        ],
      });
      await Promise.race([done, new Promise((r) => setTimeout(r, 5_000))]);
      expect(received[0]?.kind.case).toBe("policyChanged");
      const transition = received.find((e) => e.kind.case === "breakerTransition");
      expect(transition?.eventId).toMatch(/^[0-9a-f-]{36}$/);
    } finally {
      await nc.close();
    }
  });
});

describe("hardening", () => {
  it("continues the revision of a deleted policy and refuses a writer from before the delete", async () => {
    const { policies } = clientsFor(server.url);
    await policies.putPolicy({ policy: testPolicy("cp.aba") });
    await policies.putPolicy({ policy: testPolicy("cp.aba", { timeoutMs: 900 }) });
    await policies.deletePolicy({ dependency: "cp.aba" });
    const stale = await rpcFailure(
      policies.putPolicy({ policy: testPolicy("cp.aba"), expectedRevision: 2n }),
    );
    expect(stale.code).toBe(Code.FailedPrecondition);
    const recreated = await policies.putPolicy({
      policy: testPolicy("cp.aba"),
      expectedRevision: 0n,
    });
    expect(recreated.policy?.revision).toBe(3n);
  });

  it("creates no breaker on a read and counts only outcomes that count", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({
      policy: testPolicy("cp.read", { breaker: { scope: 2, minimumCalls: 1 } }),
    });
    const before = (await breakers.listBreakers({})).breakers.length;
    for (let i = 0; i < 5; i++)
      await breakers.getBreaker({ dependency: "cp.read", service: `s${i}` });
    expect((await breakers.listBreakers({})).breakers.length).toBe(before);
    const failure = {
      dependency: "cp.read",
      service: "s1",
      attempt: 1,
      result: OutcomeResult.FAILURE,
    };
    expect((await breakers.report({ outcomes: [failure] })).counted).toBe(1);
    // Now OPEN: late outcomes are not counted, and the answer says so.
    expect((await breakers.report({ outcomes: [failure, failure] })).counted).toBe(0);
  });

  it("drops the breakers of the old scope when a policy changes scope", async () => {
    const { policies, breakers } = clientsFor(server.url);
    await policies.putPolicy({ policy: testPolicy("cp.scope", { breaker: { minimumCalls: 1 } }) });
    await breakers.report({
      outcomes: [
        { dependency: "cp.scope", service: "a", attempt: 1, result: OutcomeResult.FAILURE },
      ],
    });
    await policies.putPolicy({ policy: testPolicy("cp.scope", { breaker: { scope: 2 } }) });
    const left = (await breakers.listBreakers({})).breakers.filter(
      (b) => b.dependency === "cp.scope",
    );
    expect(left).toEqual([]);
  });

  it("refuses unknown JSON fields and enum names instead of storing defaults", async () => {
    const put = (body: unknown) =>
      fetch(`${server.url}/bulwark.v1.PolicyService/PutPolicy`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const policy = {
      dependency: "cp.json",
      sla: { latencyObjectiveMs: 1000, availabilityTargetPercent: 99 },
      timeoutMs: 500,
    };
    const ok = await put({ policy });
    expect(ok.status).toBe(200);
    const badEnum = await put({ policy: { ...policy, retry: { jitter: "JITTER_BOGUS" } } });
    expect(badEnum.status).toBe(400);
    const typo = await put({ policy: { ...policy, timeout: 5 } });
    expect(typo.status).toBe(400);
    expect(((await typo.json()) as { code: string }).code).toBe("invalid_argument");
  });

  it("keeps error messages short whatever the size of the bad value", async () => {
    const { policies } = clientsFor(server.url);
    const { code, message } = await rpcFailure(
      policies.getPolicy({ dependency: "x ".repeat(500_000) }),
    );
    expect(code).toBe(Code.InvalidArgument);
    expect(message.length).toBeLessThan(400);
    expect(message).toContain("(1000000 characters)");
  });
});

describe("idempotent apply", () => {
  it("keeps the revision when the same policy is put again", async () => {
    const { policies, audit } = clientsFor(server.url);
    const first = await policies.putPolicy({ policy: testPolicy("cp.same") });
    const again = await policies.putPolicy({ policy: testPolicy("cp.same") });
    expect(again.policy?.revision).toBe(first.policy?.revision);
    const changed = await policies.putPolicy({ policy: testPolicy("cp.same", { timeoutMs: 700 }) });
    expect(changed.policy?.revision).toBe(2n);
    const records = (await audit.query({ aggregateId: "cp.same" })).records;
    expect(records).toHaveLength(2);
  });
});
