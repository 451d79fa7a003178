import type { Interceptor } from "@connectrpc/connect";
import { callInfoKey } from "./call-context.ts";
import type { RpcBoundary } from "./rpc-boundary.ts";

/** The RPC boundary (rpc-boundary.ts) as a Connect interceptor, for calls that Connect serves. */
export function boundaryInterceptor(boundary: RpcBoundary): Interceptor {
  return (next) => async (req) => {
    const method = `${req.service.typeName}/${req.method.name}`;
    const call = boundary.admit(method, req.header, req.stream ? undefined : req.message);
    try {
      req.contextValues.set(callInfoKey, call.info);
      const res = await next(req);
      if (!res.stream) {
        boundary.succeed(call);
        return res;
      }
      const inner = res.message;
      async function* guarded() {
        try {
          yield* inner;
          // A stream that ended because its client left was cancelled, not completed.
          if (req.signal.aborted) boundary.cancelled(call);
          else boundary.succeed(call);
        } catch (err) {
          throw boundary.fail(call, err, req.signal.aborted);
        }
      }
      return { ...res, message: guarded() };
    } catch (err) {
      throw boundary.fail(call, err, req.signal.aborted);
    }
  };
}
