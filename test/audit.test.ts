import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import Database from "better-sqlite3";
import { connect } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startFlakyOpenAI } from "../examples/flaky-openai/flaky-openai-server.ts";
import { parsePhase } from "../examples/flaky-openai/scenario.ts";
import { AuditRecordSchema, type TraceNode } from "../gen/bulwark/v1/audit_pb.ts";
import { createBulwark } from "../sdk/index.ts";
import { defaultAuditPath } from "../server/bulwark-server.ts";
import {
  clientsFor,
  type NatsProcess,
  rpcFailure,
  spawnServerProcess,
  startNats,
  startTestServer,
  tempDir,
  testPolicy,
} from "./harness.ts";

const tmp = tempDir();
afterAll(() => tmp.remove());

const entry = (eventType: string, extra: Record<string, unknown> = {}) => ({
  eventType,
  aggregateId: "order-1",
  payload: new TextEncoder().encode(JSON.stringify({ eventType, ...extra })),
  ...extra,
});

describe("audit log", () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  beforeAll(async () => {
    server = await startTestServer({ dbPath: join(tmp.dir, "audit-main.db") });
  });
  afterAll(async () => {
    await server.close();
  });

  it("refuses UPDATE and DELETE on the audit table through SQL", async () => {
    const { audit } = clientsFor(server.url);
    await audit.append({ entries: [entry("order.placed")] });
    const db = new Database(defaultAuditPath(server.dbPath));
    try {
      expect(() => db.prepare("UPDATE audit_records SET producer = 'x'").run()).toThrow(
        /append-only: UPDATE refused/,
      );
      expect(() => db.prepare("DELETE FROM audit_records").run()).toThrow(
        /append-only: DELETE refused/,
      );
    } finally {
      db.close();
    }
    expect((await audit.verify({})).valid).toBe(true);
  });

  it("audits policy changes with the principal that made them", async () => {
    const { policies, audit } = clientsFor(server.url, "alice@platform");
    await policies.putPolicy({ policy: testPolicy("audit.policy") });
    await policies.deletePolicy({ dependency: "audit.policy" });
    const { records } = await audit.query({ aggregateId: "audit.policy" });
    expect(records.map((r) => [r.eventType, r.principal, r.producer])).toEqual([
      ["policy.changed", "alice@platform", "bulwark-server"],
      ["policy.deleted", "alice@platform", "bulwark-server"],
    ]);
  });

  it("refuses a missing event_type or an oversized payload, storing nothing", async () => {
    const { audit } = clientsFor(server.url);
    const before = (await audit.verify({})).recordsChecked;
    const missing = await rpcFailure(audit.append({ entries: [entry("ok.event"), entry("")] }));
    expect(missing).toMatchObject({ code: Code.InvalidArgument });
    expect(missing.message).toMatch(/^entries\[1\]\.event_type: is required/);
    const big = await rpcFailure(
      audit.append({ entries: [{ eventType: "big.event", payload: new Uint8Array(65 * 1024) }] }),
    );
    expect(big).toMatchObject({ code: Code.InvalidArgument });
    expect(big.message).toMatch(/^entries\[0\]\.payload: must be at most 65536 bytes/);
    const badTrace = await rpcFailure(
      audit.append({ entries: [entry("x.y", { traceId: "nope" })] }),
    );
    expect(badTrace.message).toMatch(/^entries\[0\]\.trace_id/);
    expect((await audit.verify({})).recordsChecked).toBe(before);
  });

  it("returns the causal tree of an operation that crossed two services and opened a breaker", async () => {
    const upstream = await startFlakyOpenAI({
      scenario: {
        name: "down",
        phases: [parsePhase({ name: "errors", durationMs: 60_000, mode: "errors", latencyMs: 1 })],
      },
    });
    try {
      const traceId = randomUUID().replaceAll("-", "");
      const orders = clientsFor(server.url, "orders");
      const payments = clientsFor(server.url, "payments");
      await orders.policies.putPolicy({
        policy: testPolicy("audit.trace", { breaker: { minimumCalls: 2 } }),
      });
      const [placed] = (
        await orders.audit.append({ entries: [entry("order.placed", { traceId })] })
      ).records;
      const [charge] = (
        await payments.audit.append({
          entries: [entry("payment.requested", { traceId, causationId: placed!.eventId })],
        })
      ).records;
      const bulwark = createBulwark({ url: server.url, service: "payments" });
      for (let i = 0; i < 2; i++) {
        await bulwark
          .call(
            "audit.trace",
            ({ signal }) =>
              fetch(`${upstream.baseUrl}/chat/completions`, {
                method: "POST",
                body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "x" }] }),
                signal,
              }).then((r) => {
                if (!r.ok)
                  throw Object.assign(new Error(`status ${r.status}`), { status: r.status });
                return r;
              }),
            { traceId, causationId: charge!.eventId },
          )
          .catch(() => {});
      }
      await bulwark.close();

      const { roots } = await orders.audit.trace({ traceId });
      const shape = (n: TraceNode): unknown => ({
        type: n.record?.eventType,
        by: n.record?.principal,
        children: n.children.map(shape),
      });
      expect(roots.map(shape)).toEqual([
        {
          type: "order.placed",
          by: "orders",
          children: [
            {
              type: "payment.requested",
              by: "payments",
              children: [{ type: "breaker.transition", by: "payments", children: [] }],
            },
          ],
        },
      ]);
    } finally {
      await upstream.close();
    }
  });
});

describe("trace shapes and event ids", () => {
  it("keeps records that name each other as causes, cuts deep chains, refuses a reused event id", async () => {
    const server = await startTestServer({ dbPath: join(tmp.dir, "shapes.db") });
    try {
      const { audit } = clientsFor(server.url);
      const traceId = randomUUID().replaceAll("-", "");
      const [a, b] = [randomUUID(), randomUUID()];
      await audit.append({
        entries: [
          entry("loop.a", { traceId, eventId: a, causationId: b }),
          entry("loop.b", { traceId, eventId: b, causationId: a }),
        ],
      });
      const loop = await audit.trace({ traceId });
      expect(loop.roots.map((r) => r.record?.eventType)).toEqual(["loop.a"]);
      expect(loop.roots[0]?.children.map((c) => c.record?.eventType)).toEqual(["loop.b"]);

      const deepTrace = randomUUID().replaceAll("-", "");
      let cause = "";
      const chain = Array.from({ length: 150 }, (_, i) => {
        const eventId = randomUUID();
        const e = entry("chain.step", {
          traceId: deepTrace,
          eventId,
          causationId: cause,
          aggregateId: `s-${i}`,
        });
        cause = eventId;
        return e;
      });
      await audit.append({ entries: chain });
      const deep = await audit.trace({ traceId: deepTrace });
      const count = (n: TraceNode): number => 1 + n.children.reduce((s, c) => s + count(c), 0);
      expect(deep.roots.reduce((s, r) => s + count(r), 0)).toBe(150);
      expect(deep.roots.length).toBeGreaterThan(1);

      const again = await rpcFailure(audit.append({ entries: [entry("x.y", { eventId: a })] }));
      expect(again.code).toBe(Code.AlreadyExists);
      expect((await audit.verify({})).valid).toBe(true);
    } finally {
      await server.cleanup();
    }
  });
});

describe("tamper detection", () => {
  it("names an altered record and detects a removed one", async () => {
    const dbPath = join(tmp.dir, "tamper.db");
    const server = await startTestServer({ dbPath });
    const { audit } = clientsFor(server.url);
    await audit.append({
      entries: Array.from({ length: 20 }, (_, i) => entry("step.done", { aggregateId: `a-${i}` })),
    });
    expect(await audit.verify({})).toMatchObject({ valid: true, recordsChecked: 20n });
    await server.close();

    const db = new Database(defaultAuditPath(dbPath));
    db.exec("DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete;");
    db.prepare("UPDATE audit_records SET aggregate_id = 'a-X' WHERE sequence = 7").run();
    db.close();
    const altered = await startTestServer({ dbPath });
    const verdict = await clientsFor(altered.url).audit.verify({});
    expect(verdict).toMatchObject({ valid: false, firstInvalidSequence: 7n, recordsChecked: 6n });
    expect(verdict.problem).toMatch(/hash does not match/);
    await altered.close();

    const db2 = new Database(defaultAuditPath(dbPath));
    // The server put the triggers back when it started on the altered file.
    db2.exec("DROP TRIGGER audit_records_no_update; DROP TRIGGER audit_records_no_delete;");
    db2.prepare("UPDATE audit_records SET aggregate_id = 'a-6' WHERE sequence = 7").run();
    db2.prepare("DELETE FROM audit_records WHERE sequence = 12").run();
    db2.close();
    const removed = await startTestServer({ dbPath });
    const second = await clientsFor(removed.url).audit.verify({});
    expect(second).toMatchObject({ valid: false, firstInvalidSequence: 12n });
    expect(second.problem).toMatch(/record 12 is missing/);
    await removed.cleanup();
  });
});

describe("concurrent appenders", () => {
  it("two server processes appending to one audit file produce one valid chain", async () => {
    const auditDb = join(tmp.dir, "shared.audit.db");
    const [a, b] = await Promise.all([
      spawnServerProcess(join(tmp.dir, "a.db"), 0, ["--audit-db", auditDb]),
      spawnServerProcess(join(tmp.dir, "b.db"), 0, ["--audit-db", auditDb]),
    ]);
    try {
      const batches = 20;
      const perBatch = 25;
      const appendFrom = (url: string, who: string) =>
        Promise.all(
          Array.from({ length: batches }, (_, i) =>
            clientsFor(url, who).audit.append({
              entries: Array.from({ length: perBatch }, (_, j) =>
                entry("load.step", { aggregateId: `${who}-${i}-${j}` }),
              ),
            }),
          ),
        );
      await Promise.all([appendFrom(a.url, "a"), appendFrom(b.url, "b")]);
      const verdict = await clientsFor(a.url).audit.verify({});
      expect(verdict).toMatchObject({
        valid: true,
        recordsChecked: BigInt(2 * batches * perBatch),
      });
      expect(await clientsFor(b.url).audit.verify({})).toMatchObject({
        headHash: verdict.headHash,
      });
    } finally {
      await Promise.all([a.kill("SIGKILL"), b.kill("SIGKILL")]);
    }
  });
});

describe("JetStream mirror", () => {
  let nats: NatsProcess;
  beforeAll(async () => {
    nats = await startNats();
  });
  afterAll(async () => {
    await nats?.stop();
  });

  it("mirrors every record to a stream that denies delete and purge", async () => {
    const server = await startTestServer({ natsUrl: nats.url, dbPath: join(tmp.dir, "m.db") });
    const { audit } = clientsFor(server.url);
    const { records } = await audit.append({
      entries: [entry("mirror.one"), entry("mirror.two"), entry("mirror.three")],
    });
    const nc = await connect({ servers: nats.url });
    try {
      const jsm = await nc.jetstreamManager();
      let info = await jsm.streams.info("BULWARK_AUDIT").catch(() => undefined);
      for (let i = 0; i < 100 && (info?.state.messages ?? 0) < 3; i++) {
        await new Promise((r) => setTimeout(r, 50));
        info = await jsm.streams.info("BULWARK_AUDIT").catch(() => undefined);
      }
      expect(info?.config).toMatchObject({ deny_delete: true, deny_purge: true });
      expect(info?.state.messages).toBe(3);
      const first = await jsm.streams.getMessage("BULWARK_AUDIT", { seq: 1 });
      expect(fromBinary(AuditRecordSchema, first.data).hash).toBe(records[0]?.hash);
      await expect(jsm.streams.purge("BULWARK_AUDIT")).rejects.toThrow();
      await expect(jsm.streams.deleteMessage("BULWARK_AUDIT", 1)).rejects.toThrow();
    } finally {
      await nc.close();
      await server.cleanup();
    }
  });
});
