/**
 * The idempotency ledger end to end: real servers (in this process and as their own process),
 * SDK instances in separate processes, and a real local HTTP server as the upstream that counts
 * what reaches it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { type Client, Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BeginOutcome,
  IdempotencyService,
  IdempotencyState,
} from "../gen/bulwark/v1/idempotency_pb.ts";
import {
  type BulwarkEvent,
  createBulwark,
  IDEMPOTENCY_KEY_HEADER,
  isIdempotencyConflictError,
  isIdempotencyInProgressError,
  isIdempotencyUnavailableError,
  requestHash,
} from "../sdk/index.ts";
import {
  clientsFor,
  freePort,
  ROOT,
  rpcFailure,
  type ServerProcess,
  spawnServerProcess,
  startTestServer,
  tempDir,
  testPolicy,
  waitFor,
} from "./harness.ts";

const DEPENDENCY = "idem.dep";
/** The upstream answers this late, so that concurrent callers overlap the first one's work. */
const UPSTREAM_DELAY_MS = 400;

interface Upstream {
  url: string;
  requests: { body: string; headers: IncomingMessage["headers"] }[];
  close(): Promise<void>;
}

/**
 * A real HTTP server standing in for the external API: counts requests, answers uniquely. A body
 * containing "fail-first" gets a 503 the first time it is seen.
 */
async function startUpstream(delayMs = UPSTREAM_DELAY_MS): Promise<Upstream> {
  const requests: Upstream["requests"] = [];
  const seen = new Set<string>();
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => {
      body += d.toString();
    });
    req.on("end", () => {
      requests.push({ body, headers: req.headers });
      if (body.includes("fail-first") && !seen.has(body)) {
        seen.add(body);
        res.writeHead(503);
        res.end();
        return;
      }
      setTimeout(() => {
        res.writeHead(201, { "content-type": "application/json", "x-upstream": "yes" });
        res.end(JSON.stringify({ answer: randomUUID(), n: requests.length }));
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/charge`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function ledgerClient(url: string): Client<typeof IdempotencyService> {
  return createClient(IdempotencyService, createGrpcTransport({ baseUrl: url }));
}

const sha256 = (text: string) => createHash("sha256").update(text).digest();

/** Runs test/idempotency-caller.ts as its own process with one task. */
function spawnCaller(task: Record<string, unknown>): {
  child: ChildProcess;
  lines: AsyncIterableIterator<string>;
  exited: Promise<number | null>;
} {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "test/idempotency-caller.ts"), JSON.stringify(task)],
    { cwd: ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return {
    child,
    lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator](),
    exited,
  };
}

const tmp = tempDir();
let server: Awaited<ReturnType<typeof startTestServer>>;
let upstream: Upstream;
const children: ChildProcess[] = [];

beforeAll(async () => {
  server = await startTestServer({ dbPath: join(tmp.dir, "idem.db") });
  upstream = await startUpstream();
  await clientsFor(server.url).policies.putPolicy({
    policy: testPolicy(DEPENDENCY, { timeoutMs: 4_000, deadlineMs: 20_000 }),
  });
});
afterAll(async () => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  await upstream?.close();
  await server?.cleanup();
  tmp.remove();
});

describe("exactly once across processes", () => {
  it("runs the work once for 100 concurrent calls with one key from 4 processes", async () => {
    const key = `order-${randomUUID()}`;
    const before = upstream.requests.length;
    const callers = Array.from({ length: 4 }, () =>
      spawnCaller({
        mode: "calls",
        url: server.url,
        dependency: DEPENDENCY,
        upstream: upstream.url,
        key,
        count: 25,
      }),
    );
    children.push(...callers.map((c) => c.child));
    const outputs = await Promise.all(
      callers.map(async (c) => {
        const { value } = await c.lines.next();
        expect(await c.exited).toBe(0);
        return JSON.parse(value as string) as {
          results: { ok: boolean; value?: string; error?: string; replayed?: boolean }[];
        };
      }),
    );
    const results = outputs.flatMap((o) => o.results);
    expect(results).toHaveLength(100);
    expect(results.filter((r) => !r.ok)).toEqual([]);
    expect(upstream.requests.length - before).toBe(1);
    expect(new Set(results.map((r) => r.value)).size).toBe(1);
    expect(results.filter((r) => !r.replayed)).toHaveLength(1);
  }, 60_000);

  it("lets the next caller run the work once after the holder is killed and its lease lapses", async () => {
    const key = `job-${randomUUID()}`;
    const before = upstream.requests.length;
    const holder = spawnCaller({
      mode: "hold",
      url: server.url,
      dependency: DEPENDENCY,
      upstream: upstream.url,
      key,
      count: 1,
      leaseMs: 2_500,
    });
    children.push(holder.child);
    expect(JSON.parse((await holder.lines.next()).value as string)).toEqual({ holding: true });
    holder.child.kill("SIGKILL");
    await holder.exited;

    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const statuses: string[] = [];
    bulwark.on((e) => {
      if (e.type === "idempotency") statuses.push(e.status);
    });
    let runs = 0;
    const work = async () => {
      runs++;
      const res = await fetch(upstream.url, { method: "POST", body: "takeover" });
      return res.json();
    };
    const first = await bulwark.once(key, work, { waitMs: 10_000 });
    const again = await bulwark.once(key, work);
    await bulwark.close();
    expect(runs).toBe(1);
    expect(again).toEqual(first);
    // The killed holder's request and the one of the caller that took over.
    expect(upstream.requests.length - before).toBe(2);
    // A slow machine may reach the key only after the lease lapsed, without waiting first.
    expect(statuses.filter((s) => s !== "waiting")).toEqual([
      "taken-over",
      "completed",
      "replayed",
    ]);
    const { record } = await ledgerClient(server.url).getRecord({ service: "idem-test", key });
    expect(record?.takeovers).toBe(1);
    expect(record?.state).toBe(IdempotencyState.COMPLETED);
  }, 30_000);
});

describe("the SDK's answers", () => {
  it("refuses the same key with a different request and leaves the record unchanged", async () => {
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const key = `conflict-${randomUUID()}`;
    const stored = await bulwark.once(key, async () => ({ charged: 100 }), {
      request: { amount: 100 },
    });
    const ledger = ledgerClient(server.url);
    const before = (await ledger.getRecord({ service: "idem-test", key })).record!;
    let ran = false;
    const err = await bulwark
      .once(
        key,
        async () => {
          ran = true;
          return { charged: 200 };
        },
        { request: { amount: 200 } },
      )
      .catch((e: unknown) => e);
    expect(isIdempotencyConflictError(err)).toBe(true);
    expect((err as Error).name).toBe("IdempotencyConflictError");
    expect(ran).toBe(false);
    const after = (await ledger.getRecord({ service: "idem-test", key })).record!;
    expect(after).toEqual(before);
    expect(Buffer.from(after.requestHash)).toEqual(
      Buffer.from(requestHash({ request: { amount: 100 } })),
    );
    // The same request in another key order is the same request.
    expect(
      await bulwark.once(key, async () => ({ charged: 0 }), { request: { amount: 100 } }),
    ).toEqual(stored);
    await bulwark.close();
  });

  it("fails with IdempotencyInProgressError when the holder outlasts the wait", async () => {
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const key = `slow-${randomUUID()}`;
    let release: () => void = () => {};
    const holding = bulwark.once(
      key,
      () =>
        new Promise<string>((resolve) => {
          release = () => resolve("done");
        }),
      { leaseMs: 10_000 },
    );
    await waitFor(async () => {
      const r = await ledgerClient(server.url)
        .getRecord({ service: "idem-test", key })
        .catch(() => undefined);
      return r !== undefined;
    });
    const started = Date.now();
    const err = await bulwark.once(key, async () => "again", { waitMs: 300 }).catch((e) => e);
    expect(isIdempotencyInProgressError(err)).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect((err as { leaseExpiresAtMs: number }).leaseExpiresAtMs).toBeGreaterThan(Date.now());
    release();
    expect(await holding).toBe("done");
    // A waiter that outlasts the holder gets its result.
    expect(await bulwark.once(key, async () => "again")).toBe("done");
    await bulwark.close();
  });

  it("releases the key when the work throws, so a retry runs it", async () => {
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const key = `retry-${randomUUID()}`;
    await expect(
      bulwark.once(key, async () => {
        throw new Error("card declined");
      }),
    ).rejects.toThrow("card declined");
    expect(await bulwark.once(key, async () => "second try")).toBe("second try");
    await bulwark.close();
  });

  it("stores a guarded fetch's response and sends the key upstream", async () => {
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const guarded = bulwark.fetch(DEPENDENCY);
    const key = `fetch-${randomUUID()}`;
    const before = upstream.requests.length;
    const send = (body: string) =>
      guarded(upstream.url, {
        method: "POST",
        headers: { [IDEMPOTENCY_KEY_HEADER]: key, "content-type": "application/json" },
        body,
      });
    const first = await send('{"amount":1}');
    const firstBody = await first.text();
    const second = await send('{"amount":1}');
    expect(second.status).toBe(201);
    expect(second.headers.get("x-upstream")).toBe("yes");
    expect(await second.text()).toBe(firstBody);
    expect(upstream.requests.length - before).toBe(1);
    expect(upstream.requests.at(-1)?.headers[IDEMPOTENCY_KEY_HEADER]).toBe(key);
    const conflict = await send('{"amount":2}').catch((e: unknown) => e);
    expect(isIdempotencyConflictError(conflict)).toBe(true);
    expect(upstream.requests.length - before).toBe(1);
    await bulwark.close();
  });

  it("reuses the key for the retries of one call and stores only the final answer", async () => {
    await clientsFor(server.url).policies.putPolicy({
      policy: testPolicy("idem.retry", {
        timeoutMs: 4_000,
        retry: { maxAttempts: 3, initialBackoffMs: 10, maxBackoffMs: 20 },
      }),
    });
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const guarded = bulwark.fetch("idem.retry");
    const key = `retried-${randomUUID()}`;
    const body = `{"fail-first":"${key}"}`;
    const before = upstream.requests.length;
    const send = () =>
      guarded(upstream.url, { method: "POST", headers: { [IDEMPOTENCY_KEY_HEADER]: key }, body });
    const first = await send();
    expect(first.status).toBe(201);
    const sent = upstream.requests.slice(before);
    expect(sent.map((r) => r.headers[IDEMPOTENCY_KEY_HEADER])).toEqual([key, key]);
    const again = await send();
    expect(await again.text()).toBe(await first.text());
    expect(upstream.requests.length - before).toBe(2);
    const { record } = await ledgerClient(server.url).getRecord({ service: "idem-test", key });
    expect(record?.state).toBe(IdempotencyState.COMPLETED);
    await bulwark.close();
  });

  it("does not store a degraded result: the next call with the key runs again", async () => {
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const key = `degraded-${randomUUID()}`;
    let runs = 0;
    const options = {
      idempotencyKey: key,
      fallback: () => "from the fallback",
    };
    const degraded = await bulwark.execute(
      DEPENDENCY,
      async () => {
        runs++;
        throw Object.assign(new Error("upstream down"), { status: 503 });
      },
      options,
    );
    expect(degraded).toMatchObject({ value: "from the fallback", degraded: true });
    const fresh = await bulwark.execute(DEPENDENCY, async () => `run ${++runs}`, options);
    expect(fresh).toMatchObject({ value: "run 2", degraded: false });
    const replayed = await bulwark.execute(DEPENDENCY, async () => `run ${++runs}`, options);
    expect(replayed).toMatchObject({ value: "run 2", replayed: true, attempts: 0 });
    await bulwark.close();
  });

  it("fails before running anything when the ledger is unreachable, unless told otherwise", async () => {
    const port = await freePort();
    const bulwark = createBulwark({ url: `http://127.0.0.1:${port}`, service: "idem-test" });
    let runs = 0;
    const work = async () => ++runs;
    const err = await bulwark.once("k-unreachable", work).catch((e: unknown) => e);
    expect(isIdempotencyUnavailableError(err)).toBe(true);
    expect(runs).toBe(0);
    const events: BulwarkEvent[] = [];
    bulwark.on((e) => events.push(e));
    expect(await bulwark.once("k-unreachable", work, { runWithoutLedger: true })).toBe(1);
    expect(events.some((e) => e.type === "idempotency" && e.status === "unavailable")).toBe(true);
    const callErr = await bulwark
      .call(DEPENDENCY, async () => ++runs, { idempotencyKey: "k-call" })
      .catch((e: unknown) => e);
    expect(isIdempotencyUnavailableError(callErr)).toBe(true);
    expect(runs).toBe(1);
    await bulwark.close();
  });
});

describe("the ledger's rules", () => {
  const begin = (key: string, extra: Record<string, unknown> = {}) => ({
    service: "svc",
    key,
    requestHash: sha256(key),
    ...extra,
  });

  it("gives NEW to exactly one of 200 concurrent Begins", async () => {
    const ledger = ledgerClient(server.url);
    const key = `race-${randomUUID()}`;
    const answers = await Promise.all(
      Array.from({ length: 200 }, () => ledger.begin(begin(key, { leaseMs: 60_000 }))),
    );
    const outcomes = answers.map((a) => a.outcome);
    expect(outcomes.filter((o) => o === BeginOutcome.NEW)).toHaveLength(1);
    expect(outcomes.filter((o) => o === BeginOutcome.IN_PROGRESS)).toHaveLength(199);
  });

  it("hands an expired lease to the next caller and refuses the old holder's Complete", async () => {
    const ledger = ledgerClient(server.url);
    const key = `lease-${randomUUID()}`;
    const first = await ledger.begin(begin(key, { leaseMs: 100 }));
    expect(first.outcome).toBe(BeginOutcome.NEW);
    await new Promise((r) => setTimeout(r, 150));
    const second = await ledger.begin(begin(key, { leaseMs: 5_000 }));
    expect(second.outcome).toBe(BeginOutcome.NEW);
    expect(second.takenOver).toBe(true);
    expect(second.leaseToken).not.toBe(first.leaseToken);
    const late = await rpcFailure(
      ledger.complete({ leaseToken: first.leaseToken, response: Buffer.from("late") }),
    );
    expect(late.code).toBe(Code.FailedPrecondition);
    await ledger.complete({ leaseToken: second.leaseToken, response: Buffer.from("on time") });
    const third = await ledger.begin(begin(key));
    expect(third.outcome).toBe(BeginOutcome.COMPLETED);
    expect(Buffer.from(third.response).toString()).toBe("on time");
    // Abandon releases a key: the next Begin is NEW again.
    const other = `abandon-${randomUUID()}`;
    const held = await ledger.begin(begin(other));
    await ledger.abandon({ leaseToken: held.leaseToken });
    expect((await ledger.begin(begin(other))).outcome).toBe(BeginOutcome.NEW);
  });

  it("refuses invalid requests naming the field, and stores nothing", async () => {
    const ledger = ledgerClient(server.url);
    const cases: [Record<string, unknown>, RegExp][] = [
      [begin(""), /^key: is required/],
      [begin("k".repeat(256)), /^key: must be at most 255 bytes; got 256/],
      [begin("é".repeat(128)), /^key: must be at most 255 bytes; got 256/],
      [
        { ...begin("bad-hash"), requestHash: new Uint8Array(31) },
        /^request_hash: must be a SHA-256/,
      ],
      [begin("short-lease", { leaseMs: 50 }), /^lease_ms: must be an integer in \[100, 3600000\]/],
      [begin("long-lease", { leaseMs: 3_600_001 }), /^lease_ms: must be an integer/],
      [begin("retention", { retentionMs: 10n }), /^retention_ms: must be 0/],
      [begin("no-service", { service: "" }), /^service: must be 1-128/],
      [begin("bad-scope", { sharedScope: "a b" }), /^shared_scope: must be 1-128/],
      [begin("bad-trace", { traceId: "xyz" }), /^trace_id: must be 32 lowercase hex/],
    ];
    for (const [req, message] of cases) {
      const f = await rpcFailure(ledger.begin(req));
      expect(f.code, JSON.stringify(req.key)).toBe(Code.InvalidArgument);
      expect(f.message).toMatch(message);
      if (req.key !== "" && Buffer.byteLength(String(req.key)) <= 255 && req.service !== "") {
        const absent = await rpcFailure(ledger.getRecord({ service: "svc", key: String(req.key) }));
        expect(absent.code).toBe(Code.NotFound);
      }
    }
    const held = await ledger.begin(begin(`big-${randomUUID()}`));
    const big = await rpcFailure(
      ledger.complete({ leaseToken: held.leaseToken, response: new Uint8Array(1024 * 1024 + 1) }),
    );
    expect(big.code).toBe(Code.InvalidArgument);
    expect(big.message).toMatch(/^response: must be at most 1048576 bytes; got 1048577/);
    const stillHeld = (await ledger.getRecord({ service: "svc", key: held.record!.key })).record!;
    expect(stillHeld.state).toBe(IdempotencyState.IN_PROGRESS);
    expect(stillHeld.response).toHaveLength(0);
    const noToken = await rpcFailure(ledger.complete({ leaseToken: "" }));
    expect(noToken.message).toMatch(/^lease_token: is required/);
    // The largest allowed response is stored.
    await ledger.complete({ leaseToken: held.leaseToken, response: new Uint8Array(1024 * 1024) });
  });

  it("keeps scopes apart: a service's own, and a shared one", async () => {
    const ledger = ledgerClient(server.url);
    const key = `scope-${randomUUID()}`;
    const a = await ledger.begin({ service: "svc-a", key, requestHash: sha256("a") });
    const b = await ledger.begin({ service: "svc-b", key, requestHash: sha256("b") });
    expect([a.outcome, b.outcome]).toEqual([BeginOutcome.NEW, BeginOutcome.NEW]);
    expect(a.record?.scope).toBe("service:svc-a");
    const shared = { key, sharedScope: "payments", requestHash: sha256("s") };
    const sa = await ledger.begin({ ...shared, service: "svc-a" });
    const sb = await ledger.begin({ ...shared, service: "svc-b" });
    expect([sa.outcome, sb.outcome]).toEqual([BeginOutcome.NEW, BeginOutcome.IN_PROGRESS]);
    expect(sb.record?.scope).toBe("shared:payments");
    expect(sb.record?.holder).toBe("svc-a");
  });

  it("runs an expired key again and sweeps expired records", async () => {
    const bulwark = createBulwark({ url: server.url, service: "idem-test" });
    const key = `expiring-${randomUUID()}`;
    let runs = 0;
    const work = async () => ++runs;
    expect(await bulwark.once(key, work, { retentionMs: 1_000 })).toBe(1);
    expect(await bulwark.once(key, work, { retentionMs: 1_000 })).toBe(1);
    const db = new Database(server.dbPath, { readonly: true });
    try {
      const count = () =>
        (
          db.prepare("SELECT COUNT(*) AS n FROM idempotency_records WHERE key = ?").get(key) as {
            n: number;
          }
        ).n;
      expect(count()).toBe(1);
      // The sweep runs every second: the record goes without anyone asking for it.
      expect(await waitFor(() => count() === 0, 5_000)).toBe(true);
    } finally {
      db.close();
    }
    const absent = await rpcFailure(
      ledgerClient(server.url).getRecord({ service: "idem-test", key }),
    );
    expect(absent.code).toBe(Code.NotFound);
    expect(await bulwark.once(key, work)).toBe(2);
    await bulwark.close();
  });
});

describe("durability", () => {
  const processes: ServerProcess[] = [];
  afterAll(async () => {
    await Promise.all(processes.map((p) => p.kill("SIGKILL")));
  });

  it("keeps every unexpired record across a SIGKILL and restart", async () => {
    const dbPath = join(tmp.dir, "idem-restart.db");
    const first = await spawnServerProcess(dbPath);
    processes.push(first);
    const ledger = ledgerClient(first.url);
    const keys = Array.from({ length: 20 }, (_, i) => `durable-${i}`);
    for (const key of keys) {
      const res = await ledger.begin({ service: "svc", key, requestHash: sha256(key) });
      await ledger.complete({ leaseToken: res.leaseToken, response: Buffer.from(`r-${key}`) });
    }
    const held = await ledger.begin({
      service: "svc",
      key: "held",
      requestHash: sha256("held"),
      leaseMs: 60_000,
    });
    const short = await ledger.begin({
      service: "svc",
      key: "short",
      requestHash: sha256("short"),
      retentionMs: 1_000n,
    });
    await ledger.complete({ leaseToken: short.leaseToken, response: Buffer.from("gone soon") });
    // No grace: only what was committed before each answer survives.
    await first.kill("SIGKILL");
    await new Promise((r) => setTimeout(r, 1_100));

    const second = await spawnServerProcess(dbPath);
    processes.push(second);
    const after = ledgerClient(second.url);
    for (const key of keys) {
      const res = await after.begin({ service: "svc", key, requestHash: sha256(key) });
      expect(res.outcome, key).toBe(BeginOutcome.COMPLETED);
      expect(Buffer.from(res.response).toString()).toBe(`r-${key}`);
    }
    const stillHeld = await after.begin({
      service: "svc",
      key: "held",
      requestHash: sha256("held"),
    });
    expect(stillHeld.outcome).toBe(BeginOutcome.IN_PROGRESS);
    expect(stillHeld.leaseExpiresAtUnixMs).toBe(held.leaseExpiresAtUnixMs);
    // The holder's token still completes its key after the restart.
    await after.complete({ leaseToken: held.leaseToken, response: Buffer.from("finished") });
    // The expired record is gone: its key runs again.
    const again = await after.begin({ service: "svc", key: "short", requestHash: sha256("x") });
    expect(again.outcome).toBe(BeginOutcome.NEW);
  }, 60_000);
});
