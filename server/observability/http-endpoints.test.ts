import http from "node:http";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { type HttpEndpoints, startHttpEndpoints } from "./http-endpoints.ts";
import { ServerMetrics } from "./metrics.ts";

const started: HttpEndpoints[] = [];

afterEach(async () => {
  await Promise.all(started.splice(0).map((endpoints) => endpoints.close()));
});

async function start(ready: () => boolean = () => true): Promise<HttpEndpoints> {
  const metrics = new ServerMetrics({ breakers: () => [], processMetrics: false });
  metrics.recordAcquire("openai", "reject");
  const endpoints = await startHttpEndpoints({ host: "127.0.0.1", port: 0, metrics, ready });
  started.push(endpoints);
  return endpoints;
}

describe("startHttpEndpoints", () => {
  it("serves the metrics in the Prometheus text format", async () => {
    const endpoints = await start();
    expect(endpoints.port).toBeGreaterThan(0);
    expect(endpoints.url).toBe(`http://127.0.0.1:${endpoints.port}`);

    const res = await fetch(`${endpoints.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await res.text()).toContain(
      'bulwark_acquire_total{dependency="openai",decision="reject"} 1',
    );
  });

  it("answers healthz with ok and readyz from the callback", async () => {
    let ready = false;
    const endpoints = await start(() => ready);

    const health = await fetch(`${endpoints.url}/healthz`);
    expect(health.status).toBe(200);
    expect(health.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect((await health.text()).trim()).toBe("ok");

    const notReady = await fetch(`${endpoints.url}/readyz`);
    expect(notReady.status).toBe(503);
    expect(notReady.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    await notReady.text();
    ready = true;
    const isReady = await fetch(`${endpoints.url}/readyz`);
    expect(isReady.status).toBe(200);
    await isReady.text();
    ready = false;
    const againNotReady = await fetch(`${endpoints.url}/readyz?probe=1`);
    expect(againNotReady.status).toBe(503);
    await againNotReady.text();
  });

  it("answers 404 for unknown paths and 405 for methods other than GET and HEAD", async () => {
    const endpoints = await start();

    const missing = await fetch(`${endpoints.url}/nope`);
    expect(missing.status).toBe(404);
    await missing.text();
    const posted = await fetch(`${endpoints.url}/metrics`, { method: "POST", body: "x" });
    expect(posted.status).toBe(405);
    expect(posted.headers.get("allow")).toBe("GET, HEAD");
    await posted.text();
    const deleted = await fetch(`${endpoints.url}/healthz`, { method: "DELETE" });
    expect(deleted.status).toBe(405);
    await deleted.text();
    const head = await fetch(`${endpoints.url}/healthz`, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
  });

  it("answers 500 and reports the error when the metrics callback throws", async () => {
    const errors: unknown[] = [];
    const metrics = new ServerMetrics({
      breakers: () => {
        throw new Error("registry gone");
      },
      processMetrics: false,
    });
    const endpoints = await startHttpEndpoints({
      host: "127.0.0.1",
      port: 0,
      metrics,
      ready: () => true,
      onError: (err) => errors.push(err),
    });
    started.push(endpoints);

    const res = await fetch(`${endpoints.url}/metrics`);
    expect(res.status).toBe(500);
    expect(await res.text()).toBe("internal error\n");
    expect(errors).toHaveLength(1);
    expect((errors[0] as Error).message).toBe("registry gone");
  });

  it("closes within a second while keep-alive and half-sent requests are open", async () => {
    const endpoints = await start();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let stalled: net.Socket | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      // The agent emits "free" once the answered socket is back in its pool, still open.
      const pooled = new Promise<void>((resolve) => agent.once("free", () => resolve()));
      const status = await new Promise<number>((resolve, reject) => {
        http
          .get(`${endpoints.url}/healthz`, { agent }, (res) => {
            res.resume();
            res.once("end", () => resolve(res.statusCode ?? 0));
          })
          .once("error", reject);
      });
      expect(status).toBe(200);
      await pooled;
      expect(Object.keys(agent.freeSockets)).toHaveLength(1);

      // Node's server.close() already drops idle keep-alive sockets; a connection in the middle of
      // a request (headers not finished) is what would hold it open until headersTimeout.
      const socket = net.connect(endpoints.port, "127.0.0.1");
      stalled = socket;
      socket.on("error", () => {});
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      socket.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
      const stalledClosed = new Promise<void>((resolve) => socket.once("close", () => resolve()));

      const before = performance.now();
      const slow = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("close() took over 1 s")), 1000);
      });
      await Promise.race([endpoints.close(), slow]);
      expect(performance.now() - before).toBeLessThan(1000);
      await stalledClosed;
      // A second close returns the same settled promise.
      await endpoints.close();
    } finally {
      clearTimeout(timer);
      stalled?.destroy();
      agent.destroy();
    }
  });

  it("rejects when the port is taken and names a bad port", async () => {
    const first = await start();
    const metrics = new ServerMetrics({ breakers: () => [], processMetrics: false });
    const options = { host: "127.0.0.1", metrics, ready: () => true };
    await expect(startHttpEndpoints({ ...options, port: first.port })).rejects.toMatchObject({
      code: "EADDRINUSE",
    });
    await expect(startHttpEndpoints({ ...options, port: 70_000 })).rejects.toThrow(
      /port must be an integer from 0 to 65535; got 70000/,
    );
  });
});
