/**
 * One traced operation across the SDK, the control plane and the audit log: its events share the
 * correlation id (the trace id of the caller's OpenTelemetry span) and link by causation id.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  type Context,
  type ContextManager,
  context,
  ROOT_CONTEXT,
  TraceFlags,
  trace,
} from "@opentelemetry/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BreakerState } from "../gen/bulwark/v1/breaker_types_pb.ts";
import type { Event } from "../gen/bulwark/v1/event_pb.ts";
import { type BulwarkEvent, createBulwark } from "../sdk/index.ts";
import { clientsFor, startTestServer, testPolicy, waitFor } from "./harness.ts";

/** The smallest OpenTelemetry context manager: the active context lives in AsyncLocalStorage. */
class StorageContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(_ctx: Context, target: T): T {
    return target;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.storage.disable();
    return this;
  }
}

const DEPENDENCY = "corr.dep";
let server: Awaited<ReturnType<typeof startTestServer>>;
let upstream: Server;
let upstreamUrl = "";
let failing = true;
const traceparents: string[] = [];

beforeAll(async () => {
  context.setGlobalContextManager(new StorageContextManager());
  server = await startTestServer();
  upstream = createServer((req, res) => {
    traceparents.push(String(req.headers.traceparent ?? ""));
    req.resume();
    req.on("end", () => {
      res.writeHead(failing ? 503 : 200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ok: !failing }));
    });
  });
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/pay`;
  await clientsFor(server.url).policies.putPolicy({
    policy: testPolicy(DEPENDENCY, { breaker: { minimumCalls: 2, openWaitMs: 300 } }),
  });
});
afterAll(async () => {
  context.disable();
  upstream?.closeAllConnections();
  await new Promise((resolve) => upstream?.close(resolve));
  await server?.cleanup();
});

describe("correlation and causation", () => {
  it("ties the SDK attempt, the transition it caused and the ledger completion to one trace", async () => {
    const clients = clientsFor(server.url, "orders");
    const bulwark = createBulwark({ url: server.url, service: "payments" });
    const post = (signal: AbortSignal, traceparent: string) =>
      fetch(upstreamUrl, { method: "POST", body: "{}", signal, headers: { traceparent } }).then(
        async (r) => {
          if (!r.ok) throw Object.assign(new Error(`status ${r.status}`), { status: r.status });
          return (await r.json()) as { ok: boolean };
        },
      );

    // Open the breaker with two failures, then let it move to HALF_OPEN.
    for (let i = 0; i < 2; i++) {
      await bulwark.call(DEPENDENCY, (c) => post(c.signal, c.traceparent)).catch(() => {});
    }
    await bulwark.flush();
    expect(
      await waitFor(async () => {
        const b = (await clients.breakers.getBreaker({ dependency: DEPENDENCY })).breaker;
        return b?.state === BreakerState.HALF_OPEN;
      }, 5_000),
    ).toBe(true);
    failing = false;

    // Follow the server's events while the traced operation runs.
    const watched: Event[] = [];
    const stop = new AbortController();
    const watching = (async () => {
      try {
        for await (const m of clients.breakers.watch(
          { dependencies: [DEPENDENCY] },
          { signal: stop.signal },
        )) {
          if (m.kind.case === "event") watched.push(m.kind.value);
        }
      } catch {
        // ended by the abort below
      }
    })();

    // The application's own event starts the operation, under its OpenTelemetry span.
    const traceId = randomBytes(16).toString("hex");
    const [placed] = (
      await clients.audit.append({
        entries: [{ eventType: "order.placed", aggregateId: "order-7", traceId }],
      })
    ).records;
    const causationId = placed!.eventId;
    const sdkEvents: BulwarkEvent[] = [];
    bulwark.on((e) => sdkEvents.push(e));
    const span = trace.wrapSpanContext({
      traceId,
      spanId: randomBytes(8).toString("hex"),
      traceFlags: TraceFlags.SAMPLED,
    });
    const result = await context.with(trace.setSpan(context.active(), span), () =>
      bulwark.execute(DEPENDENCY, (c) => post(c.signal, c.traceparent), {
        idempotencyKey: `charge-${randomUUID()}`,
        causationId,
      }),
    );
    await bulwark.flush();
    expect(result.value).toEqual({ ok: true });
    expect(result.traceId).toBe(traceId);
    expect(traceparents.at(-1)).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));

    // The SDK's events: the attempt names the caller's event; the completion names the attempt.
    const attempt = sdkEvents.find((e) => e.type === "attempt")!;
    const ledgerEvents = sdkEvents.filter((e) => e.type === "idempotency");
    expect(attempt).toMatchObject({ correlationId: traceId, causationId, result: "success" });
    expect(attempt.eventId).toMatch(/^[0-9a-f-]{36}$/);
    expect(ledgerEvents.map((e) => (e.type === "idempotency" ? e.status : ""))).toEqual([
      "new",
      "completed",
    ]);
    expect(ledgerEvents[0]).toMatchObject({ correlationId: traceId, causationId });
    expect(ledgerEvents[1]).toMatchObject({
      correlationId: traceId,
      causationId: attempt.eventId,
    });
    for (const e of sdkEvents) expect(e.correlationId).toBe(traceId);
    expect(new Set(sdkEvents.map((e) => e.eventId)).size).toBe(sdkEvents.length);

    // The server's transition event, published with the same correlation and cause.
    expect(
      await waitFor(() => watched.some((e) => e.kind.case === "breakerTransition"), 5_000),
    ).toBe(true);
    stop.abort();
    await watching;
    const transition = watched.find((e) => e.kind.case === "breakerTransition")!;
    expect(transition.kind.value).toMatchObject({
      from: BreakerState.HALF_OPEN,
      to: BreakerState.CLOSED,
    });
    expect(transition).toMatchObject({ correlationId: traceId, causationId });

    // The audit log holds the whole operation as one causal tree.
    const { records } = await clients.audit.query({ traceId });
    expect(records.map((r) => [r.eventType, r.causationId, r.producer])).toEqual(
      expect.arrayContaining([
        ["order.placed", "", "orders"],
        ["breaker.transition", causationId, "bulwark-server"],
        ["idempotency.completed", causationId, "payments"],
      ]),
    );
    const { roots } = await clients.audit.trace({ traceId });
    expect(roots.map((r) => r.record?.eventType)).toEqual(["order.placed"]);
    expect(roots[0]!.children.map((c) => c.record?.eventType).sort()).toEqual([
      "breaker.transition",
      "idempotency.completed",
    ]);
    await bulwark.close();
  }, 30_000);
});
