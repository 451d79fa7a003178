import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { callInfoFromHeaders, callInfoKey } from "./call-context.ts";
import { toConnectError } from "./error-mapping.ts";

/**
 * Wraps every RPC: reads the call's identity, maps thrown errors to gRPC codes (one boundary),
 * and logs one line per call with method, code and duration. Client cancellations are logged at
 * debug level, internal failures at error level with their cause.
 */
export function boundaryInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const info = callInfoFromHeaders(req.header);
    req.contextValues.set(callInfoKey, info);
    const method = `${req.service.typeName}/${req.method.name}`;
    const started = performance.now();
    const log = (code: Code | "OK", err?: unknown, internal = false) => {
      const fields = {
        method,
        code: code === "OK" ? "OK" : Code[code],
        durationMs: Math.round((performance.now() - started) * 1000) / 1000,
        requestId: info.requestId,
        principal: info.principal,
        traceId: info.traceId || undefined,
        ...(internal ? { err } : {}),
        ...(err instanceof ConnectError && !internal ? { error: err.rawMessage } : {}),
      };
      if (internal) logger.error(fields, "rpc");
      else if (code === Code.Canceled) logger.debug(fields, "rpc");
      else logger.info(fields, "rpc");
    };
    const fail = (err: unknown): never => {
      const { error, internal } = toConnectError(err);
      log(error.code, internal ? err : error, internal);
      throw error;
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        log("OK");
        return res;
      }
      const inner = res.message;
      async function* guarded() {
        try {
          yield* inner;
          log("OK");
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
