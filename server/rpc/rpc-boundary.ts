import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { allows, requiredRole } from "../security/roles.ts";
import type { TokenRegistry } from "../security/token-registry.ts";
import { type CallInfo, callInfoFromHeaders, type HeaderReader } from "./call-context.ts";
import { toConnectError } from "./error-mapping.ts";

/** Records one finished RPC (for metrics). */
export type RpcObserver = (method: string, code: string, durationMs: number) => void;

/** One RPC between admission and its end, as the boundary follows it. */
export interface RpcCall {
  /** `package.Service/Method`. */
  method: string;
  info: CallInfo;
  startedMs: number;
  /** The unary request message, for the dependency and service on the log line. */
  message: unknown;
}

/**
 * The dependency and calling service a unary request is about, for the log line. Values are cut
 * short: the request may be one being refused for its size.
 */
function subjectOf(message: unknown): { dependency?: string; service?: string } {
  const m = message as
    | { dependency?: unknown; service?: unknown; policy?: { dependency?: unknown } }
    | undefined;
  const text = (v: unknown) => (typeof v === "string" && v !== "" ? v.slice(0, 128) : undefined);
  return {
    dependency: text(m?.dependency) ?? text(m?.policy?.dependency),
    service: text(m?.service),
  };
}

/**
 * What happens to every RPC at the edge of the server, whichever library carried it (Connect for
 * HTTP/1.1 and TLS, @grpc/grpc-js for cleartext gRPC; see transport.ts): the caller's identity is
 * read and, when tokens are configured, authenticated against the method's role; thrown errors
 * become gRPC codes in one place (error-mapping.ts); one log line and one metric sample are
 * recorded per call. Client cancellations are logged at debug level, internal failures at error
 * level with their cause. The token itself is never logged or echoed.
 */
export class RpcBoundary {
  constructor(
    private readonly logger: Logger,
    private readonly tokens: TokenRegistry | undefined,
    private readonly observe: RpcObserver = () => {},
  ) {}

  /**
   * Starts a call: reads its identity and checks its token. Throws the ConnectError to answer
   * with (already logged) when the caller may not call the method.
   */
  admit(method: string, header: HeaderReader, message: unknown): RpcCall {
    const call: RpcCall = {
      method,
      info: callInfoFromHeaders(header),
      startedMs: performance.now(),
      message,
    };
    if (this.tokens !== undefined) {
      // Until the token is checked the caller is nobody; a claimed name is not logged.
      call.info.principal = "unauthenticated";
      try {
        call.info.principal = this.authenticate(method, header);
      } catch (err) {
        throw this.fail(call, err, false);
      }
    }
    return call;
  }

  /** Records a call that completed. */
  succeed(call: RpcCall): void {
    this.log(call, "OK");
  }

  /** Records a call the client abandoned (an ended Watch, a cancelled call). */
  cancelled(call: RpcCall): void {
    this.log(call, Code.Canceled);
  }

  /**
   * Maps a thrown error to the ConnectError to answer with, and records the call. `aborted`
   * says the client had gone away: an error then is a cancellation, not a server failure.
   */
  fail(call: RpcCall, err: unknown, aborted: boolean): ConnectError {
    if (aborted && !(err instanceof ConnectError)) {
      const cancelled = new ConnectError("the client cancelled the call", Code.Canceled);
      this.log(call, Code.Canceled, cancelled);
      return cancelled;
    }
    const { error, internal } = toConnectError(err);
    this.log(call, error.code, internal ? err : error, internal);
    return error;
  }

  private authenticate(method: string, header: HeaderReader): string {
    const needed = requiredRole(method);
    if (needed === "none") return "anonymous";
    const token = /^Bearer\s+(\S+)\s*$/i.exec(header.get("authorization") ?? "")?.[1];
    if (token === undefined) {
      throw new ConnectError("a bearer token is required", Code.Unauthenticated);
    }
    const identity = this.tokens?.identify(token);
    if (identity === undefined) throw new ConnectError("unknown token", Code.Unauthenticated);
    if (!allows(identity.role, needed)) {
      throw new ConnectError(
        `${identity.name} has role ${identity.role}; ${method} needs ${needed}`,
        Code.PermissionDenied,
      );
    }
    return identity.name;
  }

  private log(call: RpcCall, code: Code | "OK", err?: unknown, internal = false): void {
    const fields = {
      method: call.method,
      code: code === "OK" ? "OK" : Code[code],
      durationMs: Math.round((performance.now() - call.startedMs) * 1000) / 1000,
      requestId: call.info.requestId,
      principal: call.info.principal,
      ...subjectOf(call.message),
      traceId: call.info.traceId || undefined,
      ...(code === "OK" ? {} : { errorType: Code[code] }),
      ...(internal ? { err } : {}),
      ...(err instanceof ConnectError && !internal ? { error: err.rawMessage } : {}),
    };
    this.observe(call.method, fields.code, fields.durationMs);
    if (internal) this.logger.error(fields, "rpc");
    else if (code === Code.Canceled) this.logger.debug(fields, "rpc");
    else this.logger.info(fields, "rpc");
  }
}
