import { canonicalJson } from "../audit/audit-chain.ts";
import { FailedPreconditionError, NotFoundError } from "../domain/errors.ts";
import {
  DEFAULT_MAX_RETRY_AFTER_OPEN_MS,
  DEFAULT_QUEUE,
  DEFAULT_SLOW_CALL_MS,
  DEFAULT_SLOW_CALL_RATE_THRESHOLD_PERCENT,
  DEFAULT_WINDOW_DURATION_MS,
  DEFAULT_WINDOW_KIND,
  type PolicySpec,
  type QueueSpec,
} from "../domain/policy.ts";
import type { Db } from "./database.ts";

interface PolicyRow {
  dependency: string;
  revision: number;
  spec: string;
  updated_at_ms: number;
  updated_by: string;
}

/** The stored form of a policy's settings: everything but revision, time and author. */
function bodyOf(spec: PolicySpec): string {
  const { revision: _r, updatedAtMs: _u, updatedBy: _b, ...body } = spec;
  return canonicalJson(body);
}

/** A stored policy: rows written by earlier versions lack the settings added since. */
type StoredSpec = Omit<PolicySpec, "queue"> & { queue?: Partial<QueueSpec> };

function fromRow(row: PolicyRow): PolicySpec {
  const spec = JSON.parse(row.spec) as StoredSpec;
  const stored: Partial<PolicySpec["breaker"]> = spec.breaker;
  return {
    ...spec,
    // Settings added after a policy was stored read back with their defaults, so the stored
    // policy and the same policy put again compare equal.
    breaker: {
      windowKind: DEFAULT_WINDOW_KIND,
      windowDurationMs: DEFAULT_WINDOW_DURATION_MS,
      slowCallMs: DEFAULT_SLOW_CALL_MS,
      slowCallRateThresholdPercent: DEFAULT_SLOW_CALL_RATE_THRESHOLD_PERCENT,
      maxRetryAfterOpenMs: DEFAULT_MAX_RETRY_AFTER_OPEN_MS,
      ...stored,
    } as PolicySpec["breaker"],
    queue: { ...DEFAULT_QUEUE, ...spec.queue },
    revision: row.revision,
    updatedAtMs: row.updated_at_ms,
    updatedBy: row.updated_by,
  };
}

/** Policies in SQLite, one row per dependency; each write bumps the revision. */
export class PolicyStore {
  private readonly selectOne;
  private readonly selectAll;
  private readonly upsert;
  private readonly remove;
  private readonly tombstone;

  constructor(private readonly db: Db) {
    this.selectOne = db.prepare<[string], PolicyRow>("SELECT * FROM policies WHERE dependency = ?");
    this.selectAll = db.prepare<[], PolicyRow>("SELECT * FROM policies ORDER BY dependency");
    this.upsert = db.prepare(
      `INSERT INTO policies (dependency, revision, spec, updated_at_ms, updated_by)
       VALUES (@dependency, @revision, @spec, @updatedAtMs, @updatedBy)
       ON CONFLICT (dependency) DO UPDATE SET revision = excluded.revision, spec = excluded.spec,
         updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by`,
    );
    this.remove = db.prepare("DELETE FROM policies WHERE dependency = ?");
    this.tombstone = db.prepare<[string], { revision: number }>(
      "SELECT revision FROM policy_tombstones WHERE dependency = ?",
    );
  }

  get(dependency: string): PolicySpec | undefined {
    const row = this.selectOne.get(dependency);
    return row === undefined ? undefined : fromRow(row);
  }

  list(): PolicySpec[] {
    return this.selectAll.all().map(fromRow);
  }

  /**
   * Stores `spec` as the next revision and returns what was stored. With `expectedRevision`
   * the write happens only if the stored revision equals it (0: the policy must not exist).
   */
  put(
    spec: PolicySpec,
    expectedRevision: number | undefined,
    principal: string,
    nowMs: number,
  ): { policy: PolicySpec; changed: boolean } {
    return this.db
      .transaction(() => {
        const current = this.get(spec.dependency);
        const currentRevision = current?.revision ?? 0;
        if (expectedRevision !== undefined && expectedRevision !== currentRevision) {
          throw new FailedPreconditionError(
            current === undefined
              ? `policy ${spec.dependency} does not exist; expect revision 0 to create it`
              : `policy ${spec.dependency} is at revision ${currentRevision}, not the expected ${expectedRevision}`,
          );
        }
        // The same settings again (a deploy job applying its files) change nothing: no new
        // revision, no event, no audit record.
        if (current !== undefined && bodyOf(current) === bodyOf(spec)) {
          return { policy: current, changed: false };
        }
        // A re-created policy continues the numbering of the deleted one.
        const deletedRevision = this.tombstone.get(spec.dependency)?.revision ?? 0;
        const stored: PolicySpec = {
          ...spec,
          revision: Math.max(currentRevision, deletedRevision) + 1,
          updatedAtMs: nowMs,
          updatedBy: principal,
        };
        this.upsert.run({
          dependency: stored.dependency,
          revision: stored.revision,
          spec: bodyOf(stored),
          updatedAtMs: nowMs,
          updatedBy: principal,
        });
        return { policy: stored, changed: true };
      })
      .immediate();
  }

  /** Deletes a policy and returns the revision it had. */
  delete(dependency: string, expectedRevision: number | undefined): number {
    return this.db
      .transaction(() => {
        const current = this.get(dependency);
        if (current === undefined)
          throw new NotFoundError(`no policy for dependency ${dependency}`);
        if (expectedRevision !== undefined && expectedRevision !== current.revision) {
          throw new FailedPreconditionError(
            `policy ${dependency} is at revision ${current.revision}, not the expected ${expectedRevision}`,
          );
        }
        this.remove.run(dependency);
        this.db
          .prepare(
            `INSERT INTO policy_tombstones (dependency, revision) VALUES (?, ?)
             ON CONFLICT (dependency) DO UPDATE SET revision = excluded.revision`,
          )
          .run(dependency, current.revision);
        this.db.prepare("DELETE FROM breakers WHERE dependency = ?").run(dependency);
        return current.revision;
      })
      .immediate();
  }
}
