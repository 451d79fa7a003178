/**
 * Idempotency ledger throughput: Begin+Complete pairs per second and their latency under
 * concurrent callers, against the server in its own process (as in production, client and
 * server do not share an event loop), and of the ledger alone in process, to tell the ledger's
 * cost from the RPC path's. Baseline measured in the same run: two durable SQLite commits per
 * pair, one after the other, without the ledger's group commit.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import pino from "pino";
import { BeginOutcome, IdempotencyService } from "../gen/bulwark/v1/idempotency_pb.ts";
import { createGrpcJsTransport } from "../sdk/grpc-js-transport.ts";
import { IdempotencyLedger } from "../server/domain/idempotency-ledger.ts";
import { openDatabase } from "../server/storage/database.ts";
import { IdempotencyStore } from "../server/storage/idempotency-store.ts";
import { spawnServerProcess, tempDir } from "../test/harness.ts";
import { fmt, line, percentile } from "./stats.ts";

/** Callers running pairs at once (the target: 5 000 pairs/s, p99 under 5 ms at 32 callers). */
const CONCURRENCY = 32;
/** Pairs measured; bounded so the run ends within seconds even on a slow disk. */
const PAIRS = 10_000;
/** Pairs before measuring, so connections and statements are warm. */
const WARMUP_PAIRS = 500;
/** Longest measured phase; the loop stops here even when PAIRS are not done. */
const MAX_PHASE_MS = 30_000;
/** A response of the size of a small API answer. */
const RESPONSE = new Uint8Array(512).fill(0x61);

export async function idempotencyBench(): Promise<void> {
  const tmp = tempDir("bulwark-bench-");
  try {
    process.stdout.write("\nIdempotency ledger\n");

    // Baseline: two durable commits per pair (as Begin and Complete make), in process.
    const raw = openDatabase(join(tmp.dir, "raw.db"), {
      kind: "baseline",
      versionTable: "baseline_migrations",
      migrations: ["CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)"],
    });
    const insert = raw.prepare("INSERT INTO t VALUES (?, NULL)");
    const update = raw.prepare("UPDATE t SET v = ? WHERE k = ?");
    const rawPairs = 2_000;
    let started = performance.now();
    for (let i = 0; i < rawPairs; i++) {
      raw.transaction(() => insert.run(`k-${i}`)).immediate();
      raw.transaction(() => update.run(RESPONSE, `k-${i}`)).immediate();
    }
    const rawPerS = rawPairs / ((performance.now() - started) / 1000);
    raw.close();
    line("two durable SQLite commits (baseline)", `${fmt(rawPerS)}/s`);

    // The ledger alone: the same pairs from CONCURRENCY callers, group-committed.
    const db = openDatabase(join(tmp.dir, "local.db"));
    const ledger = new IdempotencyLedger(
      new IdempotencyStore(db),
      Date.now,
      pino({ level: "silent" }),
    );
    let next = 0;
    started = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < PAIRS) {
          const key = `local-${next++}`;
          const begun = await ledger.begin({
            service: "bench",
            scope: "service:bench",
            key,
            requestHash: createHash("sha256").update(key).digest(),
            leaseMs: 30_000,
            retentionMs: 86_400_000,
          });
          if (begun.kind !== "new") throw new Error(`${key}: not NEW`);
          await ledger.complete(begun.record.leaseToken, RESPONSE, {
            principal: "bench",
            traceId: "",
            causationId: "",
          });
        }
      }),
    );
    const localPerS = PAIRS / ((performance.now() - started) / 1000);
    ledger.close();
    db.close();
    line(`ledger in process, ${CONCURRENCY} callers`, `${fmt(localPerS)}/s`, {
      name: "baseline",
      ratio: localPerS / rawPerS,
    });

    const server = await spawnServerProcess(join(tmp.dir, "ledger.db"), 0, [], { quiet: true });
    try {
      // One connection over the SDK's own transport, as one SDK instance has: the callers' RPCs
      // share it as HTTP/2 streams.
      const transport = createGrpcJsTransport(server.url, { "x-bulwark-principal": "bench" });
      const clients = Array.from({ length: CONCURRENCY }, () =>
        createClient(IdempotencyService, transport),
      );
      const pair = async (c: (typeof clients)[number], key: string) => {
        const begun = await c.begin({
          service: "bench",
          key,
          requestHash: createHash("sha256").update(key).digest(),
        });
        if (begun.outcome !== BeginOutcome.NEW) throw new Error(`${key}: not NEW`);
        await c.complete({ leaseToken: begun.leaseToken, response: RESPONSE });
      };
      const run = async (count: number, prefix: string, latencies: number[]) => {
        let next = 0;
        const until = performance.now() + MAX_PHASE_MS;
        await Promise.all(
          clients.map(async (c) => {
            while (next < count && performance.now() < until) {
              const key = `${prefix}-${next++}`;
              const t0 = performance.now();
              await pair(c, key);
              latencies.push(performance.now() - t0);
            }
          }),
        );
      };
      await run(WARMUP_PAIRS, "warm", []);
      const latencies: number[] = [];
      started = performance.now();
      await run(PAIRS, "pair", latencies);
      const elapsedS = (performance.now() - started) / 1000;
      const perS = latencies.length / elapsedS;
      line(`Begin+Complete pairs, ${CONCURRENCY} callers (target 5 000)`, `${fmt(perS)}/s`, {
        name: "baseline",
        ratio: perS / rawPerS,
      });
      line(
        "pair latency p50 / p99 (target p99 < 5 ms)",
        `${fmt(percentile(latencies, 50), 2)} / ${fmt(percentile(latencies, 99), 2)} ms`,
      );
    } finally {
      await server.kill();
    }
  } finally {
    tmp.remove();
  }
}
