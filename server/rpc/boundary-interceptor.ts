import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { allows, requiredRole } from "../security/roles.ts";
import type { TokenRegistry } from "../security/token-registry.ts";
import { callInfoFromHeaders, callInfoKey } from "./call-context.ts";
import { toConnectError } from "./error-mapping.ts";

/**
 * The dependency and calling service a unary request is about, for the log line. Values are cut
 * short: the request may be one being refused for its size.
 */
function subjectOf(req: { stream: boolean; message?: unknown }): {
  dependency?: string;
  service?: string;
} {
  if (req.stream) return {};
  const m = req.message as
    | { dependency?: unknown; service?: unknown; policy?: { dependency?: unknown } }
    | undefined;
  const text = (v: unknown) => (typeof v === "string" && v !== "" ? v.slice(0, 128) : undefined);
  return {
    dependency: text(m?.dependency) ?? text(m?.policy?.dependency),
    service: text(m?.service),
  };
}

/**
 * Checks the bearer token of a call against the method's role and returns the caller's name.
 * No token or an unknown one: Unauthenticated; a known one without the role: PermissionDenied.
 * The token itself is never logged or echoed.
 */
function authenticate(tokens: TokenRegistry, method: string, header: Headers): string {
  const needed = requiredRole(method);
  if (needed === "none") return "anonymous";
  const token = /^Bearer\s+(\S+)\s*$/i.exec(header.get("authorization") ?? "")?.[1];
  if (token === undefined) {
    throw new ConnectError("a bearer token is required", Code.Unauthenticated);
  }
  const identity = tokens.identify(token);
  if (identity === undefined) throw new ConnectError("unknown token", Code.Unauthenticated);
  if (!allows(identity.role, needed)) {
    throw new ConnectError(
      `${identity.name} has role ${identity.role}; ${method} needs ${needed}`,
      Code.PermissionDenied,
    );
  }
  return identity.name;
}

/**
 * Wraps every RPC: reads the call's identity, authenticates it when tokens are configured, maps
 * thrown errors to gRPC codes (one boundary), and logs one line per call with method, code and
 * duration. Client cancellations are logged at
 * debug level, internal failures at error level with their cause.
 */
export function boundaryInterceptor(
  logger: Logger,
  tokens: TokenRegistry | undefined,
  onRpc: (method: string, code: string, durationMs: number) => void = () => {},
): Interceptor {
  return (next) => async (req) => {
    const info = callInfoFromHeaders(req.header);
    const method = `${req.service.typeName}/${req.method.name}`;
    const started = performance.now();
    const log = (code: Code | "OK", err?: unknown, internal = false) => {
      const fields = {
        method,
        code: code === "OK" ? "OK" : Code[code],
        durationMs: Math.round((performance.now() - started) * 1000) / 1000,
        requestId: info.requestId,
        principal: info.principal,
        ...subjectOf(req),
        traceId: info.traceId || undefined,
        ...(code === "OK" ? {} : { errorType: Code[code] }),
        ...(internal ? { err } : {}),
        ...(err instanceof ConnectError && !internal ? { error: err.rawMessage } : {}),
      };
      onRpc(method, fields.code, fields.durationMs);
      if (internal) logger.error(fields, "rpc");
      else if (code === Code.Canceled) logger.debug(fields, "rpc");
      else logger.info(fields, "rpc");
    };
    const fail = (err: unknown): never => {
      // A client that went away (an abandoned Watch, a cancelled call) is not a server failure.
      if (req.signal.aborted && !(err instanceof ConnectError)) {
        const cancelled = new ConnectError("the client cancelled the call", Code.Canceled);
        log(Code.Canceled, cancelled);
        throw cancelled;
      }
      const { error, internal } = toConnectError(err);
      log(error.code, internal ? err : error, internal);
      throw error;
    };
    try {
      if (tokens !== undefined) {
        // Until the token is checked the caller is nobody; a claimed name is not logged.
        info.principal = "unauthenticated";
        info.principal = authenticate(tokens, method, req.header);
      }
      req.contextValues.set(callInfoKey, info);
      const res = await next(req);
      if (!res.stream) {
        log("OK");
        return res;
      }
      const inner = res.message;
      async function* guarded() {
        try {
          yield* inner;
          // A stream that ended because its client left was cancelled, not completed.
          if (req.signal.aborted) log(Code.Canceled);
          else log("OK");
        } catch (err) {
          fail(err);
        }
      }
      return { ...res, message: guarded() };
    } catch (err) {
      return fail(err);
    }
  };
}
