/**
 * A database written before time windows, slow calls, forced states and queue settings existed
 * opens with its policies, breakers and transitions intact and the new settings at their
 * defaults.
 */
import { join } from "node:path";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { BreakerState } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { SlidingWindowKind } from "../gen/bulwark/v1/policy_pb.ts";
import { startServer } from "../server/bulwark-server.ts";
import { normalizePolicy } from "../server/domain/policy-validation.ts";
import { OPERATIONAL_SCHEMA, openDatabase } from "../server/storage/database.ts";
import { MIGRATIONS } from "../server/storage/migrations.ts";
import { clientsFor, tempDir, testPolicy } from "./harness.ts";

const tmp = tempDir();
afterAll(() => tmp.remove());

/** The schema as it was before the migration that added slow calls and actors. */
const OLD_MIGRATIONS = MIGRATIONS.slice(0, 2);

describe("upgrading an older database", () => {
  it("reads old policies, breakers and transitions with the new fields at their defaults", async () => {
    const dbPath = join(tmp.dir, "old.db");
    const spec = normalizePolicy(testPolicy("upgrade.dep"));
    // The settings as an older server stored them: none of the fields added since.
    const {
      windowKind: _k,
      windowDurationMs: _d,
      slowCallMs: _s,
      slowCallRateThresholdPercent: _r,
      maxRetryAfterOpenMs: _m,
      ...oldBreaker
    } = spec.breaker;
    const { queue: _q, revision: _rev, updatedAtMs: _u, updatedBy: _b, ...rest } = spec;
    const old = openDatabase(dbPath, { ...OPERATIONAL_SCHEMA, migrations: OLD_MIGRATIONS });
    old
      .prepare(
        "INSERT INTO policies (dependency, revision, spec, updated_at_ms, updated_by) VALUES (?, 1, ?, 1, 'ops')",
      )
      .run("upgrade.dep", JSON.stringify({ ...rest, breaker: oldBreaker }));
    const openUntilMs = Date.now() + 600_000;
    old
      .prepare(
        "INSERT INTO breakers (dependency, service, state, body, updated_at_ms) VALUES (?, '', 'open', ?, 1)",
      )
      .run(
        "upgrade.dep",
        JSON.stringify({
          phase: { kind: "open", untilMs: openUntilMs },
          windowSize: 10,
          window: "0101",
          consecutiveFailures: 1,
          consecutiveOpens: 1,
          changedAtMs: 1,
          reason: "failure rate 50.0% >= 50% over 4 calls",
          policyRevision: 1,
        }),
      );
    old
      .prepare(
        `INSERT INTO transitions (dependency, service, from_state, to_state, at_ms, reason, calls,
           failures, failure_rate_percent, consecutive_failures, policy_revision, open_until_ms)
         VALUES ('upgrade.dep', '', 'closed', 'open', 1, 'old', 4, 2, 50, 1, 1, ?)`,
      )
      .run(openUntilMs);
    old.close();

    const server = await startServer({
      dbPath,
      host: "127.0.0.1",
      port: 0,
      logger: pino({ level: "silent" }),
    });
    try {
      const { policies, breakers } = clientsFor(server.url);
      const policy = (await policies.getPolicy({ dependency: "upgrade.dep" })).policy!;
      expect(policy.breaker).toMatchObject({
        windowKind: SlidingWindowKind.COUNT,
        windowDurationMs: 60_000,
        slowCallMs: 0,
        maxRetryAfterOpenMs: 60_000,
      });
      expect(policy.queue?.maxDeliveries).toBe(5);
      // The same policy put again is no change: no new revision.
      const again = await policies.putPolicy({ policy: testPolicy("upgrade.dep") });
      expect(again.policy?.revision).toBe(1n);

      const breaker = (await breakers.getBreaker({ dependency: "upgrade.dep" })).breaker!;
      expect(breaker).toMatchObject({ state: BreakerState.OPEN, forcedBy: "" });
      expect(breaker.openUntilUnixMs).toBe(BigInt(openUntilMs));
      const [t] = (await breakers.listTransitions({ dependency: "upgrade.dep" })).transitions;
      expect(t).toMatchObject({ actor: "bulwark", to: BreakerState.OPEN });
      expect(t?.window).toMatchObject({ calls: 4, slowCalls: 0, slowCallRatePercent: 0 });
    } finally {
      await server.close();
    }
  });
});
