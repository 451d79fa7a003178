import { Gauge, type Registry } from "prom-client";
import type { DeadLetterStatusName } from "../domain/dead-letter.ts";
import { dlqStreamName, jobStreamName } from "../events/job-requeue.ts";
import type { NatsPublisher } from "../events/nats-publisher.ts";
import { METRIC_PREFIX } from "./metrics.ts";

/** How long one scrape waits for a stream's figures before it leaves the series out. */
const STREAM_INFO_TIMEOUT_MS = 1_000;

/**
 * `bulwark_dead_letters{dependency,status}`: dead letters per dependency and status, read from
 * SQLite at each scrape (one grouped COUNT over an index). Open letters are the ones waiting for
 * an operator; alert on them growing.
 *
 * With NATS, also `bulwark_queue_jobs{dependency}` and `bulwark_dlq_jobs{dependency}`: the jobs
 * waiting in each policy's work queue and dead-letter stream, read from JetStream at each scrape
 * (one stream-info request per stream, so a scrape costs two requests per policy). A stream that
 * does not exist yet, or does not answer in time, has no series in that scrape.
 */
export function registerDeadLetterMetrics(
  registry: Registry,
  counts: () => { dependency: string; status: DeadLetterStatusName; count: number }[],
  dependencies: () => string[],
  nats: NatsPublisher | undefined,
): void {
  const letters = new Gauge({
    name: `${METRIC_PREFIX}dead_letters`,
    help: "Dead letters by dependency and status (open, replayed, resolved)",
    labelNames: ["dependency", "status"] as const,
    registers: [registry],
    collect() {
      letters.reset();
      for (const c of counts())
        letters.set({ dependency: c.dependency, status: c.status }, c.count);
    },
  });
  if (nats === undefined) return;
  const streamGauge = (name: string, help: string, streamOf: (dependency: string) => string) => {
    const gauge: Gauge<"dependency"> = new Gauge({
      name: `${METRIC_PREFIX}${name}`,
      help,
      labelNames: ["dependency"] as const,
      registers: [registry],
      async collect() {
        gauge.reset();
        const nc = nats.current;
        if (nc === undefined) return;
        const jsm = await nc.jetstreamManager({ timeout: STREAM_INFO_TIMEOUT_MS, checkAPI: false });
        await Promise.all(
          dependencies().map(async (dependency) => {
            try {
              const info = await jsm.streams.info(streamOf(dependency));
              gauge.set({ dependency }, info.state.messages);
            } catch {
              // No such stream yet, or NATS did not answer: no series this time.
            }
          }),
        );
      },
    });
  };
  streamGauge("queue_jobs", "Jobs waiting in the dependency's work queue", jobStreamName);
  streamGauge("dlq_jobs", "Jobs in the dependency's dead-letter stream", dlqStreamName);
}
