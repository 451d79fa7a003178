import { ControlPlane } from "./control-plane.ts";
import { deferrableCall } from "./deferred/deferrable-call.ts";
import { DeferredWork } from "./deferred/deferred-work.ts";
import type { EnqueueOptions, JobPayload } from "./deferred/job-queue.ts";
import type { JobHandler, JobWorker, WorkerOptions } from "./deferred/job-worker.ts";
import { type BulwarkEventListener, EventEmitter } from "./events.ts";
import {
  type AttemptContext,
  type CallOptions,
  type CallResult,
  guardedCall,
} from "./guarded-call.ts";
import { createGuardedFetch, type GuardedFetchOptions } from "./guarded-fetch.ts";
import { idempotentCall, type OnceContext, type OnceOptions, once } from "./idempotent-call.ts";
import { NatsLink } from "./nats-link.ts";
import { type BulwarkOptions, normalizeOptions } from "./options.ts";
import { newTraceId } from "./trace.ts";

/** A Bulwark client: one per service instance. */
export interface Bulwark {
  /** The calling service's name, as the control plane sees it. */
  readonly service: string;
  /**
   * Runs `fn` as a guarded call to `dependency` and returns its value (or the fallback's).
   * Throws the typed errors of ./errors.ts when the call fails and there is no fallback.
   */
  call<T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    options?: CallOptions<T>,
  ): Promise<T>;
  /** Like call, but says how the value came about (degraded, attempts, trace id). */
  execute<T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    options?: CallOptions<T>,
  ): Promise<CallResult<T>>;
  /**
   * Runs `fn` once per key across the fleet and returns its result (stored as JSON); a later
   * call with the same key and request returns the stored result without running `fn`. Throws
   * IdempotencyConflictError for the same key with another request, IdempotencyInProgressError
   * when another caller holds the key longer than `waitMs`, IdempotencyUnavailableError when the
   * control plane cannot be reached (unless `runWithoutLedger`).
   */
  once<T>(key: string, fn: (ctx: OnceContext) => Promise<T>, options?: OnceOptions): Promise<T>;
  /** A fetch whose requests are guarded calls to `dependency`. */
  fetch(dependency: string, options?: GuardedFetchOptions): typeof globalThis.fetch;
  /**
   * Queues a job for `dependency`'s workers and returns its id. Refuses a payload over the
   * policy's queue.max_payload_bytes (PayloadTooLargeError), a dependency without a policy
   * (PolicyNotFoundError), and fails with QueueUnavailableError without NATS or
   * QueueFullError when the queue holds queue.max_jobs.
   */
  enqueue(dependency: string, payload: JobPayload, options?: EnqueueOptions): Promise<string>;
  /**
   * Starts a worker that runs `handler` for `dependency`'s queued jobs, each as a guarded call,
   * and pauses while the dependency's breaker is open. Needs the `nats` option.
   */
  worker(dependency: string, handler: JobHandler, options?: WorkerOptions): JobWorker;
  /** Subscribes to the SDK's typed events; returns the unsubscribe function. */
  on(listener: BulwarkEventListener): () => void;
  /** Whether the control plane answered the last time it was asked. */
  readonly controlPlaneConnected: boolean;
  /** Resolves once every outcome queued so far has reached the control plane (or failed to). */
  flush(): Promise<void>;
  /** Sends every queued outcome report. Calls made after close still work but are reported late. */
  close(): Promise<void>;
}

/**
 * Creates a Bulwark client for one service instance.
 *
 * ```ts
 * const bulwark = createBulwark({ url: "http://127.0.0.1:50051", service: "checkout" });
 * const openai = new OpenAI({ fetch: bulwark.fetch("openai.chat"), maxRetries: 0 });
 * ```
 */
export function createBulwark(options: BulwarkOptions): Bulwark {
  const config = normalizeOptions(options);
  const events = new EventEmitter();
  const cp = new ControlPlane({
    url: config.url,
    service: config.service,
    acquireTimeoutMs: config.acquireTimeoutMs,
    token: config.token,
    ca: config.ca,
    events,
  });
  const link = config.nats.length === 0 ? undefined : new NatsLink(config.nats, config.natsToken);
  const guarded = <T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    callOptions: CallOptions<T> = {},
  ) =>
    callOptions.idempotencyKey === undefined
      ? guardedCall(cp, events, config.service, dependency, fn, callOptions)
      : idempotentCall(cp, events, config.service, dependency, fn, callOptions);
  const deferred = new DeferredWork(link, cp, events, config.service, guarded, (key, fn, o) =>
    once(cp, events, config.service, key, fn, o),
  );
  const execute = <T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    callOptions: CallOptions<T> = {},
  ): Promise<CallResult<T>> => {
    const defer = callOptions.deferrable;
    if (defer === undefined) return guarded(dependency, fn, callOptions);
    // One trace for the call and the job it may become, and the call's key for the job.
    const traceId = callOptions.traceId ?? newTraceId();
    const idempotencyKey = defer.idempotencyKey ?? callOptions.idempotencyKey;
    return deferrableCall(
      dependency,
      () => guarded(dependency, fn, { ...callOptions, traceId }),
      idempotencyKey === undefined ? defer : { ...defer, idempotencyKey },
      traceId,
      (dep, payload, options) => deferred.enqueue(dep, payload, options),
      callOptions.discardValue,
    );
  };
  return {
    service: config.service,
    execute,
    async call(dependency, fn, callOptions) {
      return (await execute(dependency, fn, callOptions)).value;
    },
    once: (key, fn, onceOptions) => once(cp, events, config.service, key, fn, onceOptions),
    fetch: (dependency, fetchOptions) => createGuardedFetch(execute, dependency, fetchOptions),
    enqueue: (dependency, payload, options) => deferred.enqueue(dependency, payload, options),
    worker: (dependency, handler, options) => deferred.worker(dependency, handler, options),
    on: (listener) => events.on(listener),
    get controlPlaneConnected() {
      return cp.connected;
    },
    flush: () => cp.reporter.settle(),
    async close() {
      await deferred.close();
      await cp.close();
    },
  };
}
