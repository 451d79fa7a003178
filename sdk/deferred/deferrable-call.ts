import {
  type BulwarkError,
  CallDeferredError,
  isCircuitOpenError,
  isDeadlineExceededError,
  isRetriesExhaustedError,
} from "../errors.ts";
import type { CallResult } from "../guarded-call.ts";
import type { EnqueueOptions, JobPayload } from "./job-queue.ts";

/**
 * Marks a call as deferrable (DESIGN §5): when it cannot be made now — the breaker is open, its
 * retries are exhausted or its deadline passed — the payload is queued for the dependency's
 * workers instead of the call failing.
 */
export interface DeferrableOptions extends EnqueueOptions {
  /** What the dependency's worker handler gets as the job's payload. */
  payload: JobPayload;
}

/** The failures a deferrable call is queued for; the caller's own errors are not among them. */
export function isDeferrableFailure(error: unknown): error is BulwarkError {
  return (
    isCircuitOpenError(error) || isRetriesExhaustedError(error) || isDeadlineExceededError(error)
  );
}

/**
 * Runs a guarded call and, when it fails in a deferrable way, queues its payload instead.
 * - With a fallback, the fallback's degraded value is returned and `deferredJobId` names the job.
 * - Without one, CallDeferredError is thrown: a typed error naming the job id, with the reason
 *   as its cause, so callers that did not expect deferral cannot mistake it for a success.
 * When the job cannot be queued either (NATS away, payload too large), the call's own failure
 * is what the caller gets, as if it had not been deferrable.
 */
export async function deferrableCall<T>(
  dependency: string,
  call: () => Promise<CallResult<T>>,
  defer: DeferrableOptions,
  traceId: string,
  enqueue: (dependency: string, payload: JobPayload, options: EnqueueOptions) => Promise<string>,
  discardValue: ((value: T) => void) | undefined,
): Promise<CallResult<T>> {
  let result: CallResult<T>;
  try {
    result = await call();
  } catch (err) {
    if (!isDeferrableFailure(err)) throw err;
    const jobId = await queue(err);
    throw new CallDeferredError(dependency, jobId, err);
  }
  if (result.error === undefined || !isDeferrableFailure(result.error)) return result;
  const error = result.error;
  const jobId = await queue(error);
  if (result.degraded) return { ...result, deferredJobId: jobId };
  // A failed value (the dependency's last 503) is not an answer once the call is queued.
  discardValue?.(result.value);
  throw new CallDeferredError(dependency, jobId, error);

  async function queue(failure: BulwarkError): Promise<string> {
    const { payload, ...options } = defer;
    try {
      return await enqueue(dependency, payload, {
        ...options,
        traceId: options.traceId ?? traceId,
      });
    } catch {
      throw failure;
    }
  }
}
