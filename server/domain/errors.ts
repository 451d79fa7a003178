/**
 * Errors raised by the domain core. Each names what went wrong in terms of the contract; the RPC
 * boundary (rpc/error-mapping.ts) turns them into gRPC status codes, and nothing else does.
 */

/** A request field broke a rule. `field` is the path in the request, e.g. `policy.timeout_ms`. */
export class InvalidArgumentError extends Error {
  override readonly name = "InvalidArgumentError";
  constructor(
    readonly field: string,
    readonly rule: string,
  ) {
    super(`${field}: ${rule}`);
  }
}

/** The named entity does not exist. */
export class NotFoundError extends Error {
  override readonly name = "NotFoundError";
}

/** The request was valid but the stored state does not allow it (e.g. a revision mismatch). */
export class FailedPreconditionError extends Error {
  override readonly name = "FailedPreconditionError";
}

/** A bounded resource (a subscriber's event buffer) ran out. */
export class ResourceExhaustedError extends Error {
  override readonly name = "ResourceExhaustedError";
}

/** The entity to create exists already (an audit event id used twice). */
export class AlreadyExistsError extends Error {
  override readonly name = "AlreadyExistsError";
}

/** Something the request needs (NATS, for a replay) cannot be reached now; retrying may work. */
export class UnavailableError extends Error {
  override readonly name = "UnavailableError";
}
