/**
 * Schema migrations, applied in order inside one transaction each. Never edit a released entry;
 * append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE policies (
    dependency TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    spec TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL
  );
  CREATE TABLE breakers (
    dependency TEXT NOT NULL,
    service TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (dependency, service)
  );
  CREATE TABLE transitions (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    dependency TEXT NOT NULL,
    service TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    calls INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    failure_rate_percent REAL NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    policy_revision INTEGER NOT NULL,
    open_until_ms INTEGER NOT NULL
  );
  CREATE INDEX transitions_by_dependency ON transitions (dependency, sequence);
  `,
  `
  -- The last revision of each deleted policy, so a re-created policy continues its numbering and
  -- a writer holding a revision from before the delete cannot overwrite it by accident.
  CREATE TABLE policy_tombstones (
    dependency TEXT PRIMARY KEY,
    revision INTEGER NOT NULL
  );
  -- The server process that owns this file (one writer per operational database).
  CREATE TABLE server_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL
  );
  `,
  `
  -- Slow-call figures and the actor of each transition: the operator for a forced state, the
  -- server ('bulwark') for its own decisions, which is what every earlier transition was.
  ALTER TABLE transitions ADD COLUMN slow_calls INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE transitions ADD COLUMN slow_call_rate_percent REAL NOT NULL DEFAULT 0;
  ALTER TABLE transitions ADD COLUMN actor TEXT NOT NULL DEFAULT 'bulwark';
  `,
  `
  -- The idempotency ledger (DESIGN §7): one row per (scope, key). scope is 'service:<name>' or
  -- 'shared:<name>'. The lease token identifies the holder of an in-progress key.
  CREATE TABLE idempotency_records (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    response BLOB,
    holder TEXT NOT NULL,
    lease_token TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    lease_expires_at_ms INTEGER NOT NULL,
    completed_at_ms INTEGER NOT NULL,
    retention_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    takeovers INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
  );
  CREATE INDEX idempotency_by_expiry ON idempotency_records (expires_at_ms);
  `,
  `
  -- Deferred jobs a worker gave up on (DESIGN §6). The payload is kept so that Replay can put the
  -- job back with its original bytes even after the dead-letter stream has aged it out.
  CREATE TABLE dead_letters (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    letter_id TEXT NOT NULL UNIQUE,
    dependency TEXT NOT NULL,
    job_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BLOB NOT NULL,
    payload_hash TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    error_type TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    causation_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    dead_lettered_at_ms INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    recorded_by TEXT NOT NULL,
    dlq_sequence INTEGER NOT NULL,
    replay_of TEXT NOT NULL,
    replay_count INTEGER NOT NULL DEFAULT 0,
    replayed_at_ms INTEGER NOT NULL DEFAULT 0,
    replayed_by TEXT NOT NULL DEFAULT '',
    replay_job_id TEXT NOT NULL DEFAULT '',
    resolved_at_ms INTEGER NOT NULL DEFAULT 0,
    resolved_by TEXT NOT NULL DEFAULT '',
    resolution TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX dead_letters_by_dependency ON dead_letters (dependency, status, cursor);
  CREATE INDEX dead_letters_by_trace ON dead_letters (trace_id, cursor) WHERE trace_id <> '';
  `,
];
