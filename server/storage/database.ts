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
/** A file's schema: its migrations, and the table that records which of them were applied. */
export interface Schema {
  /** What the file holds, for error messages ("operational", "audit"). */
  kind: string;
  /** Table recording applied migrations; distinct per schema, so files cannot be mistaken. */
  versionTable: string;
  migrations: readonly string[];
}

export const OPERATIONAL_SCHEMA: Schema = {
  kind: "operational",
  versionTable: "schema_migrations",
  migrations: MIGRATIONS,
};

export function openDatabase(path: string, schema: Schema = OPERATIONAL_SCHEMA): Db {
  let db: Db;
  try {
    db = new Database(path);
  } catch (err) {
    throw new DatabaseOpenError(path, err);
  }
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    // A second process (an operator's backup, a test) may hold the lock briefly.
    db.pragma("busy_timeout = 5000");
    migrate(db, schema);
  } catch (err) {
    db.close();
    throw err instanceof DatabaseOpenError ? err : new DatabaseOpenError(path, err);
  }
  return db;
}

/**
 * Applies the missing migrations inside one IMMEDIATE transaction, so two processes opening the
 * same file at once cannot both apply them. A file that holds tables but not this schema's
 * version table is another kind of file, and is refused rather than written into.
 */
function migrate(db: Db, schema: Schema): void {
  const { versionTable: table, migrations } = schema;
  db.transaction(() => {
    const tables = db
      .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
      .all()
      .map((t) => t.name);
    if (tables.length > 0 && !tables.includes(table)) {
      throw new Error(`it is not a Bulwark ${schema.kind} database (it holds other tables)`);
    }
    db.exec(
      `CREATE TABLE IF NOT EXISTS ${table} (version INTEGER PRIMARY KEY, applied_at_ms INTEGER NOT NULL)`,
    );
    const row = db.prepare(`SELECT MAX(version) AS v FROM ${table}`).get() as {
      v: number | null;
    };
    const current = row.v ?? 0;
    if (current > migrations.length) {
      throw new Error(
        `its ${schema.kind} schema version ${current} is newer than this server knows (${migrations.length}); upgrade the server`,
      );
    }
    const record = db.prepare(`INSERT INTO ${table} (version, applied_at_ms) VALUES (?, ?)`);
    for (let v = current + 1; v <= migrations.length; v++) {
      db.exec(migrations[v - 1]!);
      record.run(v, Date.now());
    }
  }).immediate();
}
