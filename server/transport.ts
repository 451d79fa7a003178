import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { grpcJsServer, type ServiceRegistration } from "./grpc-js-adapter.ts";
import { boundaryInterceptor } from "./rpc/boundary-interceptor.ts";
import type { RpcBoundary } from "./rpc/rpc-boundary.ts";

/**
 * The only module that knows how RPCs reach the handlers, all on one port. Without TLS, one
 * listener tells connections apart by their first bytes: cleartext HTTP/2 with prior knowledge
 * (gRPC clients, the SDK among them) goes to @grpc/grpc-js, which answers unary calls in about
 * half the time of Connect-node (grpc-js-adapter.ts has the figures); HTTP/1.1 (curl, browsers'
 * gRPC-Web and Connect, JSON) goes to Connect-node. With TLS, Connect-node serves everything
 * (HTTP/2 or HTTP/1.1 by ALPN), because browsers negotiate HTTP/2 too and grpc-js speaks only
 * gRPC: a fleet that wants the faster path behind TLS terminates TLS in front of the server.
 * Both paths run the same handlers behind the same boundary (rpc/rpc-boundary.ts).
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
  boundary: RpcBoundary;
}): Promise<Transport> {
  const registrations: ServiceRegistration[] = [];
  const handler = connectNodeAdapter({
    // The same registrations feed grpc-js, so both paths serve exactly the same services.
    routes: (router) =>
      options.routes({
        get handlers() {
          return router.handlers;
        },
        service(service, impl, serviceOptions) {
          registrations.push({ service, impl: impl as ServiceRegistration["impl"] });
          return router.service(service, impl, serviceOptions);
        },
        rpc(method, impl, rpcOptions) {
          return router.rpc(method, impl, rpcOptions);
        },
      }),
    interceptors: [boundaryInterceptor(options.boundary)],
    readMaxBytes: MAX_REQUEST_BYTES,
    // Unknown fields and enum names in JSON requests are errors, not silently dropped: a typo in
    // a policy must not turn into a default.
    jsonOptions: { ignoreUnknownFields: false },
  });
  const settings = { maxConcurrentStreams: MAX_CONCURRENT_STREAMS };
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();

  let listener: net.Server;
  let h1: http.Server | undefined;
  let grpcServer: grpc.Server | undefined;
  let injector: grpc.ConnectionInjector | undefined;
  if (options.tls !== undefined) {
    const h2 = http2.createSecureServer({ ...options.tls, allowHTTP1: true, settings }, handler);
    h2.on("session", (session) => {
      sessions.add(session);
      session.once("close", () => sessions.delete(session));
    });
    h2.on("connection", (socket: net.Socket) => {
      sockets.add(socket);
      socket.once("close", () => sockets.delete(socket));
    });
    listener = h2;
  } else {
    h1 = http.createServer(handler);
    const h1Server = h1;
    grpcServer = grpcJsServer(registrations, options.boundary, {
      "grpc.max_receive_message_length": MAX_REQUEST_BYTES,
      "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
    });
    const grpcInjector = grpcServer.createConnectionInjector(
      grpc.ServerCredentials.createInsecure(),
    );
    injector = grpcInjector;
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
        if (isH2) grpcInjector.injectConnection(socket);
        else h1Server.emit("connection", socket);
      };
      socket.once("readable", route);
    });
  }

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
        injector?.drain(CLOSE_GRACE_MS);
        setTimeout(() => {
          injector?.destroy();
          grpcServer?.forceShutdown();
          for (const session of sessions) session.destroy();
          for (const socket of sockets) socket.destroy();
        }, CLOSE_GRACE_MS).unref();
      }),
  };
}
