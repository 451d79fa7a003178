import { hostname } from "node:os";
import type { Db } from "./database.ts";

/** Another running server owns the database. */
export class DatabaseInUseError extends Error {
  override readonly name = "DatabaseInUseError";
  constructor(
    readonly pid: number,
    readonly hostname: string,
  ) {
    super(`the database is in use by process ${pid} on ${hostname}; stop it or use another file`);
  }
}

/**
 * Claims the operational database for this process. Two servers writing one file would both run
 * the breaker timers and record every transition twice, so the second one refuses to start. A
 * claim left by a process that no longer runs (killed, crashed) on this host is taken over; a
 * claim from another host is honoured until its owner releases it.
 */
export function claimDatabase(db: Db, nowMs: number): () => void {
  const host = hostname();
  db.transaction(() => {
    const owner = db
      .prepare<[], { pid: number; hostname: string }>("SELECT pid, hostname FROM server_lock")
      .get();
    if (owner !== undefined && owner.pid !== process.pid) {
      const alive = owner.hostname !== host || isRunning(owner.pid);
      if (alive) {
        throw new DatabaseInUseError(owner.pid, owner.hostname);
      }
    }
    db.prepare(
      "INSERT OR REPLACE INTO server_lock (id, pid, hostname, started_at_ms) VALUES (1, ?, ?, ?)",
    ).run(process.pid, host, nowMs);
  }).immediate();
  return () => {
    db.prepare("DELETE FROM server_lock WHERE pid = ? AND hostname = ?").run(process.pid, host);
  };
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, under another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
