import { createHash } from "node:crypto";
import { join } from "node:path";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { tempDir } from "../../test/harness.ts";
import { type Db, openDatabase } from "../storage/database.ts";
import { IdempotencyStore } from "../storage/idempotency-store.ts";
import { FailedPreconditionError, NotFoundError } from "./errors.ts";
import {
  type BeginInput,
  type Completion,
  IdempotencyLedger,
  SWEEP_BATCH,
} from "./idempotency-ledger.ts";

const hash = (text: string) => createHash("sha256").update(text).digest();
const input = (key: string, extra: Partial<BeginInput> = {}): BeginInput => ({
  service: "svc",
  scope: "service:svc",
  key,
  requestHash: hash(key),
  leaseMs: 1_000,
  retentionMs: 10_000,
  ...extra,
});
const cause = { principal: "p", traceId: "", causationId: "" };

describe("idempotency ledger on a fake clock", () => {
  let tmp: ReturnType<typeof tempDir>;
  let db: Db;
  let nowMs: number;
  let completions: Completion[];
  let ledger: IdempotencyLedger;
  beforeEach(() => {
    tmp = tempDir();
    db = openDatabase(join(tmp.dir, "ledger.db"));
    nowMs = 1_000_000;
    completions = [];
    ledger = new IdempotencyLedger(
      new IdempotencyStore(db),
      () => nowMs,
      pino({ level: "silent" }),
      (batch) => {
        completions.push(...batch);
        return batch.map(() => "event-1");
      },
    );
  });
  afterEach(() => {
    ledger.close();
    db.close();
    tmp.remove();
  });

  it("keeps a lease alive until its last millisecond, then hands it over", async () => {
    const first = await ledger.begin(input("k"));
    expect(first.kind).toBe("new");
    nowMs += 999;
    expect((await ledger.begin(input("k"))).kind).toBe("in-progress");
    nowMs += 1;
    const second = await ledger.begin(input("k"));
    expect(second).toMatchObject({ kind: "new", takenOver: true });
    expect(second.record.takeovers).toBe(1);
    await expect(ledger.complete(first.record.leaseToken, Buffer.from("x"), cause)).rejects.toThrow(
      FailedPreconditionError,
    );
    const done = await ledger.complete(second.record.leaseToken, Buffer.from("y"), cause);
    expect(done.eventId).toBe("event-1");
    // The same completion again answers the same, and is audited once.
    await ledger.complete(second.record.leaseToken, Buffer.from("y"), cause);
    expect(completions).toHaveLength(1);
    await expect(
      ledger.complete(second.record.leaseToken, Buffer.from("z"), cause),
    ).rejects.toThrow(/already completed/);
    await expect(ledger.abandon(second.record.leaseToken)).rejects.toThrow(/cannot be abandoned/);
  });

  it("refuses a different request without touching the record", async () => {
    const first = await ledger.begin(input("k"));
    const conflict = await ledger.begin(input("k", { requestHash: hash("other") }));
    expect(conflict.kind).toBe("conflict");
    expect(conflict.record).toEqual(first.record);
    // An expired lease with another request is still a conflict: the key is bound to its request.
    nowMs += 5_000;
    expect((await ledger.begin(input("k", { requestHash: hash("other") }))).kind).toBe("conflict");
  });

  it("counts retention from completion and treats an expired record as absent", async () => {
    const begun = await ledger.begin(input("k"));
    nowMs += 500;
    await ledger.complete(begun.record.leaseToken, Buffer.from("r"), cause);
    expect(ledger.get("service:svc", "k").expiresAtMs).toBe(nowMs + 10_000);
    nowMs += 9_999;
    expect((await ledger.begin(input("k"))).kind).toBe("completed");
    nowMs += 1;
    expect(() => ledger.get("service:svc", "k")).toThrow(NotFoundError);
    expect(await ledger.begin(input("k", { requestHash: hash("new") }))).toMatchObject({
      kind: "new",
      takenOver: false,
    });
  });

  it("keeps a leased record past a shorter retention until the lease ends", async () => {
    const begun = await ledger.begin(input("k", { leaseMs: 60_000, retentionMs: 1_000 }));
    expect(begun.record.expiresAtMs).toBe(nowMs + 60_000);
  });

  it("sweeps expired records a bounded batch at a time", async () => {
    const count = SWEEP_BATCH + 10;
    await Promise.all(Array.from({ length: count }, (_, i) => ledger.begin(input(`k-${i}`))));
    const rows = () =>
      (db.prepare("SELECT COUNT(*) AS n FROM idempotency_records").get() as { n: number }).n;
    expect(ledger.sweep()).toBe(0);
    nowMs += 10_000;
    expect(ledger.sweep()).toBe(SWEEP_BATCH);
    // A full batch schedules the next one right away.
    await new Promise((resolve) => setImmediate(resolve));
    expect(rows()).toBe(0);
  });

  it("commits writes that arrive together and keeps a failed one from spoiling the others", async () => {
    const results = await Promise.allSettled([
      ledger.begin(input("a")),
      ledger.abandon("no-such-token"),
      ledger.begin(input("b")),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(ledger.get("service:svc", "a").key).toBe("a");
    expect(ledger.get("service:svc", "b").key).toBe("b");
  });
});
