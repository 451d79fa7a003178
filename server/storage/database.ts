import Database from "better-sqlite3";
import { MIGRATIONS } from "./migrations.ts";

export type Db = Database.Database;

/** A database file that cannot be opened (missing directory, no permission). */
export class DatabaseOpenError extends Error {
  override readonly name = "DatabaseOpenError";
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot open ${path}: ${(cause as Error).message}`, { cause });
  }
}

/**
 * Opens (or creates) the operational SQLite database and brings its schema up to date.
 *
 * WAL lets readers run beside the single writer; `synchronous = FULL` makes every committed
 * transaction survive power loss, which is what "durable before acknowledged" needs for
 * policies and transitions. High-rate window counters avoid the cost by being group-committed.
 */
export function openDatabase(path: string, migrations: readonly string[] = MIGRATIONS): Db {
  let db: Db;
  try {
    db = new Database(path);
  } catch (err) {
    throw new DatabaseOpenError(path, err);
  }
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma("foreign_keys = ON");
  // A second process (an operator's backup, a test) may hold the lock briefly.
  db.pragma("busy_timeout = 5000");
  migrate(db, migrations);
  return db;
}

/**
 * Applies the missing migrations inside one IMMEDIATE transaction, so two processes opening the
 * same file at once cannot both apply them.
 */
function migrate(db: Db, migrations: readonly string[]): void {
  db.transaction(() => {
    db.exec(
      "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)",
    );
    const row = db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as {
      v: number | null;
    };
    const current = row.v ?? 0;
    if (current > migrations.length) {
      throw new Error(
        `database schema version ${current} is newer than this server knows (${migrations.length}); upgrade the server`,
      );
    }
    const record = db.prepare(
      "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)",
    );
    for (let v = current + 1; v <= migrations.length; v++) {
      db.exec(migrations[v - 1]!);
      record.run(v, Date.now());
    }
  }).immediate();
}
