import { Code, ConnectError } from "@connectrpc/connect";
import { ControlPlaneError } from "./errors.ts";

/** Certificate errors of Node's TLS: the control plane is reachable but not trusted. */
const TLS_TRUST_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The TLS trust failure in an error's cause chain, if there is one. */
function tlsTrustFailure(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 6 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && TLS_TRUST_CODES.has(code)) {
      return `${code}: ${(current as Error).message}`;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The error for a control plane that answered but refused, or is not trusted. */
export function refused(what: string, err: unknown): ControlPlaneError {
  const tls = tlsTrustFailure(err);
  return new ControlPlaneError(
    tls === undefined
      ? `${what}: ${(err as Error).message}`
      : `the control plane's TLS certificate is not trusted (${tls}); pass its CA as options.ca`,
    err,
  );
}

/**
 * Errors that mean "the control plane cannot be reached now", not "it said no". A certificate
 * the SDK does not trust is not an outage but a configuration mistake, and is not one of them.
 */
export function isUnreachable(err: unknown): boolean {
  if (tlsTrustFailure(err) !== undefined) return false;
  if (!(err instanceof ConnectError)) return true;
  return (
    err.code === Code.Unavailable ||
    err.code === Code.DeadlineExceeded ||
    err.code === Code.Canceled ||
    err.code === Code.Unknown ||
    // A connection reset mid-call (ECONNRESET) surfaces as Aborted: the server went away. A
    // Report cut off this way may have been counted already and is sent again: outcomes are
    // delivered at least once, so a crash can count a batch twice.
    err.code === Code.Aborted ||
    err.code === Code.Internal ||
    err.code === Code.ResourceExhausted
  );
}
