import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

/**
 * The only module that knows how RPCs reach the handlers: Connect-node speaking gRPC, gRPC-Web
 * and Connect on one port. With TLS it is HTTP/2 with an HTTP/1.1 fallback negotiated by ALPN;
 * without, one listener takes both cleartext HTTP/2 (gRPC clients, with prior knowledge) and
 * HTTP/1.1 (curl, browsers' gRPC-Web and Connect), told apart by the HTTP/2 connection preface.
 * Swapping the listener (for example to @grpc/grpc-js for lower unary latency) changes this file
 * alone.
 */
export interface Transport {
  port: number;
  host: string;
  close(): Promise<void>;
}

export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

/** Largest request message accepted; a full Report batch is far below it. */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/** Concurrent streams per HTTP/2 connection: bounds what one client can hold open (Watch). */
export const MAX_CONCURRENT_STREAMS = 256;
/**
 * Open connections at once. Each costs memory whether or not it sends anything; a fleet of
 * SDKs keeps one each, so this leaves room for a large fleet while bounding a flood.
 */
export const MAX_CONNECTIONS = 4_096;
/** How long close() lets open streams finish before it cuts them. */
const CLOSE_GRACE_MS = 1_000;
/** The first bytes of every HTTP/2 connection (RFC 9113 §3.4). */
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export async function listen(options: {
  host: string;
  port: number;
  tls?: TlsFiles | undefined;
  routes: (router: ConnectRouter) => void;
  interceptors: Interceptor[];
}): Promise<Transport> {
  const handler = connectNodeAdapter({
    routes: options.routes,
    interceptors: options.interceptors,
    readMaxBytes: MAX_REQUEST_BYTES,
    // Unknown fields and enum names in JSON requests are errors, not silently dropped: a typo in
    // a policy must not turn into a default.
    jsonOptions: { ignoreUnknownFields: false },
  });
  const settings = { maxConcurrentStreams: MAX_CONCURRENT_STREAMS };
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  const track = (server: net.Server | http2.Http2Server | http2.Http2SecureServer) => {
    server.on("connection", (socket: net.Socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
  };

  let listener: net.Server;
  let h2: http2.Http2Server | http2.Http2SecureServer;
  let h1: http.Server | undefined;
  if (options.tls !== undefined) {
    h2 = http2.createSecureServer({ ...options.tls, allowHTTP1: true, settings }, handler);
    listener = h2;
    track(h2);
  } else {
    h2 = http2.createServer({ settings }, handler);
    h1 = http.createServer(handler);
    const h1Server = h1;
    listener = net.createServer((socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
      // Route the connection by its first bytes: the HTTP/2 preface, or anything else.
      const route = () => {
        const head: Buffer | null = socket.read(H2_PREFACE.length) ?? socket.read();
        if (head === null) {
          socket.once("readable", route);
          return;
        }
        socket.unshift(head);
        const isH2 = head
          .subarray(0, H2_PREFACE.length)
          .equals(H2_PREFACE.subarray(0, head.length));
        (isH2 ? h2 : h1Server).emit("connection", socket);
      };
      socket.once("readable", route);
    });
  }
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port, options.host, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  listener.maxConnections = MAX_CONNECTIONS;
  const address = listener.address() as net.AddressInfo;
  return {
    port: address.port,
    host: options.host,
    close: () =>
      new Promise<void>((resolve) => {
        listener.close(() => resolve());
        h1?.closeIdleConnections();
        for (const session of sessions) session.close();
        setTimeout(() => {
          for (const session of sessions) session.destroy();
          for (const socket of sockets) socket.destroy();
        }, CLOSE_GRACE_MS).unref();
      }),
  };
}
