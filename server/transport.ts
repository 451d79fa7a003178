import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

/**
 * The only module that knows how RPCs reach the handlers: Connect-node on cleartext HTTP/2,
 * speaking gRPC, gRPC-Web and Connect on one port. Swapping the listener (for example to
 * @grpc/grpc-js for lower unary latency) changes this file alone.
 */
export interface Transport {
  port: number;
  host: string;
  close(): Promise<void>;
}

/** Largest request message accepted; a full Report batch is far below it. */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/** How long close() lets open streams finish before it cuts them. */
const CLOSE_GRACE_MS = 1_000;

export async function listen(options: {
  host: string;
  port: number;
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
}): Promise<Transport> {
  const handler = connectNodeAdapter({
    routes: options.routes,
    interceptors: options.interceptors,
    readMaxBytes: MAX_REQUEST_BYTES,
  });
  const server = http2.createServer({}, handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    port: address.port,
    host: options.host,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const session of sessions) session.close();
        setTimeout(() => {
          for (const session of sessions) session.destroy();
        }, CLOSE_GRACE_MS).unref();
      }),
  };
}
