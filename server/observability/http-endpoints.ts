import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { ServerMetrics } from "./metrics.ts";

/** Content type of the plain-text health answers. */
const TEXT_CONTENT_TYPE = "text/plain; charset=utf-8";

/** Methods every route accepts; RFC 9110 §9.1 requires HEAD wherever GET is served. */
const ALLOWED_METHODS = "GET, HEAD";

const HIGHEST_PORT = 65_535;

export interface HttpEndpointsOptions {
  /** Interface to bind, e.g. `127.0.0.1`; keep it private unless a scraper needs it. */
  host: string;
  /** TCP port; 0 picks a free one (read it back from the result). */
  port: number;
  /** The metrics served at `/metrics`. */
  metrics: ServerMetrics;
  /** Whether the server can take traffic now; asked at every `/readyz`. */
  ready: () => boolean;
  /**
   * Told about a request that failed inside the server (e.g. a throwing metrics callback), so the
   * caller can log it; the client only sees a generic 500. Default: errors are not reported.
   */
  onError?: (err: unknown) => void;
}

export interface HttpEndpoints {
  /** The port actually bound. */
  port: number;
  /** `http://host:port`, without a trailing slash. */
  url: string;
  /** Stops listening and destroys open (also keep-alive) connections; safe to call twice. */
  close(): Promise<void>;
}

/**
 * Serves the operational HTTP endpoints on their own port, apart from the RPC listener:
 *
 * - `GET /metrics`: Prometheus text format;
 * - `GET /healthz`: 200 `ok` while the process runs (liveness);
 * - `GET /readyz`: 200 while `ready()` is true, 503 otherwise (readiness).
 *
 * An unknown path answers 404 whatever the method; a known path with a method other than GET or
 * HEAD answers 405 with an `Allow` header.
 */
export async function startHttpEndpoints(options: HttpEndpointsOptions): Promise<HttpEndpoints> {
  const { host, port, metrics, ready, onError } = options;
  if (!Number.isInteger(port) || port < 0 || port > HIGHEST_PORT) {
    throw new RangeError(`port must be an integer from 0 to ${HIGHEST_PORT}; got ${port}`);
  }

  const routes: Record<string, (res: ServerResponse) => Promise<void> | void> = {
    "/metrics": async (res) => {
      const { contentType, body } = await metrics.render();
      send(res, 200, contentType, body);
    },
    "/healthz": (res) => send(res, 200, TEXT_CONTENT_TYPE, "ok\n"),
    "/readyz": (res) =>
      ready()
        ? send(res, 200, TEXT_CONTENT_TYPE, "ready\n")
        : send(res, 503, TEXT_CONTENT_TYPE, "not ready\n"),
  };

  const server = createServer((req, res) => {
    handle(routes, req, res).catch((err: unknown) => {
      // A failing scrape callback must not take the process down; the scraper sees the 500.
      if (res.headersSent) res.destroy();
      else send(res, 500, TEXT_CONTENT_TYPE, "internal error\n");
      onError?.(err);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });

  const bound = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    port: bound,
    url: `http://${urlHost}:${bound}`,
    close() {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        // server.close() alone waits for idle keep-alive sockets to time out (5 s by default).
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

async function handle(
  routes: Record<string, (res: ServerResponse) => Promise<void> | void>,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  // Only the path selects a route; a query string (e.g. a scraper's cache buster) is ignored.
  const path = (req.url ?? "/").split("?", 1)[0]!;
  const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
  if (route === undefined) {
    send(res, 404, TEXT_CONTENT_TYPE, "not found\n");
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", ALLOWED_METHODS);
    send(res, 405, TEXT_CONTENT_TYPE, "method not allowed\n");
    return;
  }
  await route(res);
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, {
    "Content-Type": contentType,
    "Content-Length": Buffer.byteLength(body),
    // Health and metrics answers describe this instant; a cached one would mislead.
    "Cache-Control": "no-store",
  });
  // Node drops the body of a HEAD answer itself and keeps the headers.
  res.end(body);
}
