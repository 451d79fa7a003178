/**
 * Audit log throughput: appends per second through the Append RPC (batched) and in process, and
 * Verify speed; each against a baseline measured in the same run: plain SQLite inserts of the
 * same rows without hashing, and a plain scan of the table without recomputing hashes.
 */
import { join } from "node:path";
import Database from "better-sqlite3";
import { AuditLog } from "../server/audit/audit-log.ts";
import { AuditStore } from "../server/audit/audit-store.ts";
import { openDatabase } from "../server/storage/database.ts";
import { clientsFor, spawnServerProcess, tempDir } from "../test/harness.ts";
import { fmt, line } from "./stats.ts";

const RPC_BATCH = 200;
const RPC_CONCURRENCY = 4;
const RPC_BATCHES = 200;
const LOCAL_RECORDS = 100_000;
const LOCAL_BATCH = 500;

const payload = new TextEncoder().encode(JSON.stringify({ order: 42, amountCents: 1999 }));
const entry = (i: number) => ({
  eventId: "",
  eventType: "order.placed",
  aggregateId: `order-${i}`,
  payload,
  producer: "bench",
  traceId: "",
  causationId: "",
});

export async function auditBench(): Promise<void> {
  const tmp = tempDir("bulwark-bench-");
  try {
    process.stdout.write("\nAudit log\n");

    // Baseline: the same rows inserted without any hashing, in batches of the same size.
    const raw = openDatabase(join(tmp.dir, "raw.db"), {
      kind: "baseline",
      versionTable: "baseline_migrations",
      migrations: [
        "CREATE TABLE t (sequence INTEGER PRIMARY KEY, event_id TEXT, event_type TEXT, aggregate_id TEXT, payload BLOB)",
      ],
    });
    const insert = raw.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?)");
    let started = performance.now();
    for (let b = 0; b < LOCAL_RECORDS / LOCAL_BATCH; b++) {
      raw
        .transaction(() => {
          for (let i = 0; i < LOCAL_BATCH; i++) {
            const n = b * LOCAL_BATCH + i;
            insert.run(n + 1, `e-${n}`, "order.placed", `order-${n}`, payload);
          }
        })
        .immediate();
    }
    const rawPerS = LOCAL_RECORDS / ((performance.now() - started) / 1000);
    raw.close();
    line("plain SQLite inserts (baseline)", `${fmt(rawPerS)}/s`);

    const store = new AuditStore(join(tmp.dir, "local.audit.db"), undefined);
    const log = new AuditLog(store, undefined, Date.now);
    started = performance.now();
    for (let b = 0; b < LOCAL_RECORDS / LOCAL_BATCH; b++) {
      log.append(
        Array.from({ length: LOCAL_BATCH }, (_, i) => entry(b * LOCAL_BATCH + i)),
        "bench",
      );
    }
    const localPerS = LOCAL_RECORDS / ((performance.now() - started) / 1000);
    line(`chained appends in process, batch ${LOCAL_BATCH}`, `${fmt(localPerS)}/s`, {
      name: "plain inserts",
      ratio: localPerS / rawPerS,
    });

    const rawDb = new Database(join(tmp.dir, "local.audit.db"), { readonly: true });
    started = performance.now();
    let scanned = 0;
    for (const _ of rawDb.prepare("SELECT * FROM audit_records ORDER BY sequence").iterate()) {
      scanned++;
    }
    const scanPerS = scanned / ((performance.now() - started) / 1000);
    rawDb.close();
    line("plain scan of the chain (baseline)", `${fmt(scanPerS)}/s`);
    started = performance.now();
    const verdict = await log.verify();
    const verifyPerS = verdict.recordsChecked / ((performance.now() - started) / 1000);
    line(`Verify over ${fmt(verdict.recordsChecked)} records`, `${fmt(verifyPerS)}/s`, {
      name: "plain scan",
      ratio: verifyPerS / scanPerS,
    });
    store.close();

    // The server in its own process, as it runs in production: client and server do not share
    // one event loop.
    const server = await spawnServerProcess(join(tmp.dir, "rpc.db"));
    const clients = Array.from({ length: RPC_CONCURRENCY }, () => clientsFor(server.url).audit);
    const entries = Array.from({ length: RPC_BATCH }, (_, i) => entry(i));
    await clients[0]!.append({ entries: entries.slice(0, 1) });
    started = performance.now();
    let next = 0;
    await Promise.all(
      clients.map(async (c) => {
        while (next++ < RPC_BATCHES) await c.append({ entries });
      }),
    );
    const rpcPerS = (RPC_BATCHES * RPC_BATCH) / ((performance.now() - started) / 1000);
    line(
      `Append RPC, batch ${RPC_BATCH} × ${RPC_CONCURRENCY} callers (target 20 000)`,
      `${fmt(rpcPerS)}/s`,
      { name: "plain inserts", ratio: rpcPerS / rawPerS },
    );
    await server.kill();
  } finally {
    tmp.remove();
  }
}
