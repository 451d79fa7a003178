import type { ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.ts";
import { NotFoundError } from "../domain/errors.ts";

/**
 * Standard gRPC health checking (grpc.health.v1). "" stands for the whole server; unknown
 * services get NotFound, as the protocol asks.
 */
export function healthService(
  serviceNames: readonly string[],
  shutdown: AbortSignal,
): ServiceImpl<typeof Health> {
  const known = new Set(["", ...serviceNames]);
  const status = () => (shutdown.aborted ? Status.NOT_SERVING : Status.SERVING);
  return {
    check(req) {
      if (!known.has(req.service)) throw new NotFoundError(`unknown service ${req.service}`);
      return { status: status() };
    },
    async *watch(req, ctx) {
      yield { status: known.has(req.service) ? status() : Status.SERVICE_UNKNOWN };
      const stop = AbortSignal.any([ctx.signal, shutdown]);
      await new Promise<void>((resolve) => {
        if (stop.aborted) resolve();
        stop.addEventListener("abort", () => resolve(), { once: true });
      });
      if (!ctx.signal.aborted) yield { status: Status.NOT_SERVING };
    },
  };
}
