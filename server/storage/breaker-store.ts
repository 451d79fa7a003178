import type {
  Breaker,
  BreakerPhase,
  ForcedStateName,
  Permit,
  Transition,
} from "../domain/breaker-engine.ts";
import { restoreWindow, type WindowShape } from "../domain/sliding-window.ts";
import type { Db } from "./database.ts";

/** A transition as stored, with its sequence number. */
export interface StoredTransition extends Transition {
  sequence: number;
}

interface StoredBody {
  phase:
    | { kind: "closed" }
    | { kind: "open"; untilMs: number }
    | { kind: "half-open"; permits: [string, Permit][]; succeeded: number }
    | { kind: ForcedStateName };
  /** Size of a count window; for a time window its length in ms (see windowKind). */
  windowSize: number;
  /** Absent in rows written before time windows existed: a count window. */
  windowKind?: WindowShape["kind"];
  window: string;
  consecutiveFailures: number;
  consecutiveOpens: number;
  changedAtMs: number;
  reason: string;
  policyRevision: number;
  /** Absent in rows written before forced states existed. */
  forcedBy?: string;
}

interface BreakerRow {
  dependency: string;
  service: string;
  body: string;
}

interface TransitionRow {
  sequence: number;
  dependency: string;
  service: string;
  from_state: Transition["from"];
  to_state: Transition["to"];
  at_ms: number;
  reason: string;
  calls: number;
  failures: number;
  failure_rate_percent: number;
  consecutive_failures: number;
  policy_revision: number;
  open_until_ms: number;
  slow_calls: number;
  slow_call_rate_percent: number;
  actor: string;
}

function bodyOf(b: Breaker): StoredBody {
  const p = b.phase;
  const shape = b.window.shape;
  return {
    phase: p.kind === "half-open" ? { ...p, permits: [...p.permits] } : p,
    windowSize: shape.kind === "count" ? shape.size : shape.durationMs,
    windowKind: shape.kind,
    window: b.window.serialize(),
    consecutiveFailures: b.consecutiveFailures,
    consecutiveOpens: b.consecutiveOpens,
    changedAtMs: b.changedAtMs,
    reason: b.reason,
    policyRevision: b.policyRevision,
    forcedBy: b.forcedBy,
  };
}

function breakerOf(row: BreakerRow): Breaker {
  const body = JSON.parse(row.body) as StoredBody;
  const p = body.phase;
  const phase: BreakerPhase = p.kind === "half-open" ? { ...p, permits: new Map(p.permits) } : p;
  return {
    dependency: row.dependency,
    service: row.service,
    phase,
    window: restoreWindow(
      body.windowKind === "time"
        ? { kind: "time", durationMs: body.windowSize }
        : { kind: "count", size: body.windowSize },
      body.window,
    ),
    consecutiveFailures: body.consecutiveFailures,
    consecutiveOpens: body.consecutiveOpens,
    changedAtMs: body.changedAtMs,
    reason: body.reason,
    policyRevision: body.policyRevision,
    forcedBy: body.forcedBy ?? "",
  };
}

function transitionOf(r: TransitionRow): StoredTransition {
  return {
    sequence: r.sequence,
    dependency: r.dependency,
    service: r.service,
    from: r.from_state,
    to: r.to_state,
    atMs: r.at_ms,
    reason: r.reason,
    window: {
      calls: r.calls,
      failures: r.failures,
      failureRatePercent: r.failure_rate_percent,
      consecutiveFailures: r.consecutive_failures,
      slowCalls: r.slow_calls,
      slowCallRatePercent: r.slow_call_rate_percent,
    },
    policyRevision: r.policy_revision,
    openUntilMs: r.open_until_ms,
    actor: r.actor,
  };
}

/** Breaker state and the transition history in SQLite. */
export class BreakerStore {
  private readonly upsert;
  private readonly insertTransition;
  private readonly selectAll;
  private readonly selectTransitions;

  constructor(private readonly db: Db) {
    this.upsert = db.prepare(
      `INSERT INTO breakers (dependency, service, state, body, updated_at_ms) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (dependency, service) DO UPDATE SET state = excluded.state, body = excluded.body,
         updated_at_ms = excluded.updated_at_ms`,
    );
    this.insertTransition = db.prepare(
      `INSERT INTO transitions (dependency, service, from_state, to_state, at_ms, reason, calls,
         failures, failure_rate_percent, consecutive_failures, policy_revision, open_until_ms,
         slow_calls, slow_call_rate_percent, actor)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.selectAll = db.prepare<[], BreakerRow>("SELECT dependency, service, body FROM breakers");
    this.selectTransitions = db.prepare<[string, string, number, number], TransitionRow>(
      `SELECT * FROM transitions WHERE (? = '' OR dependency = ?) AND sequence > ?
       ORDER BY sequence LIMIT ?`,
    );
  }

  /** Deletes the stored state of breakers that no longer exist. */
  remove(breakers: readonly Breaker[]): void {
    const del = this.db.prepare("DELETE FROM breakers WHERE dependency = ? AND service = ?");
    this.db.transaction(() => {
      for (const b of breakers) del.run(b.dependency, b.service);
    })();
  }

  loadAll(): Breaker[] {
    return this.selectAll.all().map(breakerOf);
  }

  /**
   * Writes breakers and transitions in one transaction and returns the transitions with their
   * sequence numbers. Returns only once the transaction is committed.
   */
  save(breakers: Iterable<Breaker>, transitions: readonly Transition[]): StoredTransition[] {
    return this.db
      .transaction(() => {
        const nowMs = Date.now();
        for (const b of breakers) {
          this.upsert.run(b.dependency, b.service, b.phase.kind, JSON.stringify(bodyOf(b)), nowMs);
        }
        return transitions.map((t) => {
          const info = this.insertTransition.run(
            t.dependency,
            t.service,
            t.from,
            t.to,
            t.atMs,
            t.reason,
            t.window.calls,
            t.window.failures,
            t.window.failureRatePercent,
            t.window.consecutiveFailures,
            t.policyRevision,
            t.openUntilMs,
            t.window.slowCalls,
            t.window.slowCallRatePercent,
            t.actor,
          );
          return { ...t, sequence: Number(info.lastInsertRowid) };
        });
      })
      .immediate();
  }

  listTransitions(dependency: string, afterSequence: number, limit: number): StoredTransition[] {
    return this.selectTransitions
      .all(dependency, dependency, afterSequence, limit)
      .map(transitionOf);
  }
}
