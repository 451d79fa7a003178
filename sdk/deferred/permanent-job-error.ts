const BRAND = Symbol.for("bulwark.permanent-job-error");

/**
 * Thrown by a job handler for a job that no retry can fix (a malformed payload, a request the
 * dependency refuses for good): the worker moves it to the dead-letter queue at once instead of
 * redelivering it. Like a 4xx answer, it does not count against the dependency's breaker.
 */
export class PermanentJobError extends Error {
  override readonly name = "PermanentJobError";
  readonly [BRAND] = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Type guard that survives duplicate installs of the SDK. */
export function isPermanentJobError(value: unknown): value is PermanentJobError {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<symbol, unknown>)[BRAND] === true
  );
}
