import { Code, ConnectError } from "@connectrpc/connect";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  UnavailableError,
} from "../domain/errors.ts";

/** SQLite result codes better-sqlite3 puts on its errors that clients can act on. */
function fromSqlite(err: Error & { code?: unknown }): ConnectError | undefined {
  if (typeof err.code !== "string" || !err.code.startsWith("SQLITE_")) return undefined;
  if (err.code.startsWith("SQLITE_BUSY") || err.code.startsWith("SQLITE_LOCKED")) {
    return new ConnectError("storage is busy; retry", Code.Unavailable);
  }
  if (err.code.startsWith("SQLITE_FULL")) {
    return new ConnectError("storage is full", Code.ResourceExhausted);
  }
  return undefined;
}

/**
 * The one place where errors become gRPC statuses. Domain errors keep their message; anything
 * unexpected becomes a generic Internal error, and `internal` is true so the caller logs the
 * cause server-side instead of sending it to the client.
 */
export function toConnectError(err: unknown): { error: ConnectError; internal: boolean } {
  if (err instanceof ConnectError) return { error: err, internal: false };
  if (err instanceof InvalidArgumentError) {
    return { error: new ConnectError(err.message, Code.InvalidArgument), internal: false };
  }
  if (err instanceof NotFoundError) {
    return { error: new ConnectError(err.message, Code.NotFound), internal: false };
  }
  if (err instanceof FailedPreconditionError) {
    return { error: new ConnectError(err.message, Code.FailedPrecondition), internal: false };
  }
  if (err instanceof AlreadyExistsError) {
    return { error: new ConnectError(err.message, Code.AlreadyExists), internal: false };
  }
  if (err instanceof ResourceExhaustedError) {
    return { error: new ConnectError(err.message, Code.ResourceExhausted), internal: false };
  }
  if (err instanceof UnavailableError) {
    return { error: new ConnectError(err.message, Code.Unavailable), internal: false };
  }
  if (err instanceof Error) {
    const sqlite = fromSqlite(err);
    if (sqlite !== undefined) return { error: sqlite, internal: true };
  }
  return { error: new ConnectError("internal error", Code.Internal), internal: true };
}
