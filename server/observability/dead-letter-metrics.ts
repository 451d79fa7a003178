import { Gauge, type Registry } from "prom-client";
import type { DeadLetterStatusName } from "../domain/dead-letter.ts";
import { METRIC_PREFIX } from "./metrics.ts";

/**
 * `bulwark_dead_letters{dependency,status}`: dead letters per dependency and status, read from
 * SQLite at each scrape (one grouped COUNT over an index). Open letters are the ones waiting for
 * an operator; alert on them growing.
 */
export function registerDeadLetterMetrics(
  registry: Registry,
  counts: () => { dependency: string; status: DeadLetterStatusName; count: number }[],
): void {
  const gauge = new Gauge({
    name: `${METRIC_PREFIX}dead_letters`,
    help: "Dead letters by dependency and status (open, replayed, resolved)",
    labelNames: ["dependency", "status"] as const,
    registers: [registry],
    collect() {
      gauge.reset();
      for (const c of counts()) gauge.set({ dependency: c.dependency, status: c.status }, c.count);
    },
  });
}
