/**
 * The external API of the deferred-work tests: a real HTTP server on a free loopback port that
 * records every request and answers as the test sets it (ok, fail with 503, or hang).
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export type UpstreamMode = "ok" | "fail" | "hang";

export interface UpstreamRequest {
  path: string;
  idempotencyKey: string;
  body: string;
  atMs: number;
}

export interface JobUpstream {
  url: string;
  mode: UpstreamMode;
  requests: UpstreamRequest[];
  /**
   * Requests per body among those answered with 200 (the upstream's committed effects), for
   * one path or all.
   */
  effects(path?: string): Map<string, number>;
  close(): Promise<void>;
}

export async function startJobUpstream(): Promise<JobUpstream> {
  const requests: UpstreamRequest[] = [];
  const committed: { path: string; body: string }[] = [];
  const hanging = new Set<import("node:http").ServerResponse>();
  const upstream: JobUpstream = {
    url: "",
    mode: "ok",
    requests,
    effects(path) {
      const counts = new Map<string, number>();
      for (const c of committed) {
        if (path === undefined || c.path === path)
          counts.set(c.body, (counts.get(c.body) ?? 0) + 1);
      }
      return counts;
    },
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => {
      body += chunk.toString();
    });
    req.on("end", () => {
      requests.push({
        path: req.url ?? "",
        idempotencyKey: String(req.headers["idempotency-key"] ?? ""),
        body,
        atMs: Date.now(),
      });
      switch (upstream.mode) {
        case "ok":
          committed.push({ path: req.url ?? "", body });
          res.writeHead(200, { "content-type": "application/json" }).end('{"ok":true}');
          return;
        case "fail":
          res.writeHead(503).end("unavailable");
          return;
        case "hang":
          hanging.add(res);
          res.on("close", () => hanging.delete(res));
          return;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  upstream.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return upstream;
}

/** Posts a job's payload to the upstream; a non-2xx answer becomes an error carrying its status. */
export async function postJob(
  url: string,
  body: Uint8Array,
  signal: AbortSignal,
  idempotencyKey = "",
): Promise<void> {
  const res = await fetch(url, {
    method: "POST",
    body,
    signal,
    headers: idempotencyKey === "" ? {} : { "idempotency-key": idempotencyKey },
  });
  await res.text();
  if (!res.ok) {
    throw Object.assign(new Error(`upstream answered ${res.status}`), { status: res.status });
  }
}
