import type { ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/grpc/health/v1/health_pb.ts";
import { NotFoundError, ResourceExhaustedError } from "../domain/errors.ts";

/**
 * Health watches open at once. They need no token, so without a cap anyone who reaches the port
 * could hold memory with them; load balancers need a handful.
 */
export const MAX_HEALTH_WATCHERS = 256;

/**
 * Standard gRPC health checking (grpc.health.v1). "" stands for the whole server; unknown
 * services get NotFound, as the protocol asks.
 */
export function healthService(
  serviceNames: readonly string[],
  shutdown: AbortSignal,
): ServiceImpl<typeof Health> {
  const known = new Set(["", ...serviceNames]);
  let watchers = 0;
  const status = () => (shutdown.aborted ? Status.NOT_SERVING : Status.SERVING);
  return {
    check(req) {
      if (!known.has(req.service)) throw new NotFoundError(`unknown service ${req.service}`);
      return { status: status() };
    },
    async *watch(req, ctx) {
      if (watchers >= MAX_HEALTH_WATCHERS) {
        throw new ResourceExhaustedError(`${MAX_HEALTH_WATCHERS} health watches are open`);
      }
      watchers++;
      try {
        yield* follow(req.service, ctx.signal);
      } finally {
        watchers--;
      }
    },
  };

  async function* follow(service: string, signal: AbortSignal) {
    yield { status: known.has(service) ? status() : Status.SERVICE_UNKNOWN };
    const stop = AbortSignal.any([signal, shutdown]);
    await new Promise<void>((resolve) => {
      if (stop.aborted) resolve();
      stop.addEventListener("abort", () => resolve(), { once: true });
    });
    if (!signal.aborted) yield { status: Status.NOT_SERVING };
  }
}
