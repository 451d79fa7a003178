import { ControlPlane } from "./control-plane.ts";
import { deferrableCall } from "./deferred/deferrable-call.ts";
import { DeferredWork } from "./deferred/deferred-work.ts";
import type { EnqueueOptions, JobPayload } from "./deferred/job-queue.ts";
import type { JobHandler, JobWorker, WorkerOptions } from "./deferred/job-worker.ts";
import { type BulwarkEventListener, EventEmitter } from "./events.ts";
import {
  type FleetEvent,
  type FleetEventListener,
  type FleetSubscribeOptions,
  type FleetWatchOptions,
  subscribeFleet,
  watchFleet,
} from "./fleet-events.ts";
import {
  type AttemptContext,
  type CallOptions,
  type CallResult,
  guardedCall,
  guardedValue,
} from "./guarded-call.ts";
import { createGuardedFetch, type GuardedFetchOptions } from "./guarded-fetch.ts";
import { idempotentCall, type OnceContext, type OnceOptions, once } from "./idempotent-call.ts";
import { NatsLink } from "./nats-link.ts";
import { type BulwarkOptions, normalizeOptions } from "./options.ts";
import { newTraceId } from "./trace.ts";

/** Options of a call made without any: shared, so such a call allocates no object for them. */
const NO_OPTIONS: CallOptions<unknown> = Object.freeze({});

function noOptions<T>(): CallOptions<T> {
  return NO_OPTIONS as CallOptions<T>;
}

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
  /**
   * Calls `listener` with the current state of every breaker and policy (`origin: "current"`),
   * then with every change as it reaches this instance, in order; after a reconnect, with the
   * state of anything that changed meanwhile (`origin: "resync"`). Returns the unsubscribe
   * function.
   */
  subscribe(listener: FleetEventListener, options?: FleetSubscribeOptions): () => void;
  /**
   * The same events as an async iterator: `for await (const ev of bulwark.watch())`. It ends
   * on `options.signal`, on `break`, or when the client closes.
   */
  watch(options?: FleetWatchOptions): AsyncIterableIterator<FleetEvent>;
  /**
   * Resolves once the fleet's state has been received and is being followed, so that calls are
   * admitted without a round trip to the control plane. Calls made before work too (they ask
   * the control plane). Resolves at once after close.
   */
  ready(): Promise<void>;
  /** Whether the control plane answered the last time it was asked. */
  readonly controlPlaneConnected: boolean;
  /**
   * Whether attempts are admitted from the fleet's followed state; false while the SDK decides
   * with its local breaker (control plane or event source down) or has not synced yet.
   */
  readonly followingFleet: boolean;
  /** Outcome reports dropped so far: by the bounded queue, or refused by the control plane. */
  readonly reportsDropped: number;
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
  const nats = config.nats.length === 0 ? undefined : new NatsLink(config.nats, config.natsToken);
  const cp = new ControlPlane({
    url: config.url,
    service: config.service,
    acquireTimeoutMs: config.acquireTimeoutMs,
    token: config.token,
    ca: config.ca,
    strict: config.strict,
    nats,
    events,
  });
  // Ends every watch() iterator when the client closes.
  const closing = new AbortController();
  const guarded = <T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    callOptions: CallOptions<T> = noOptions(),
  ) =>
    callOptions.idempotencyKey === undefined
      ? guardedCall(cp, events, config.service, dependency, fn, callOptions)
      : idempotentCall(cp, events, config.service, dependency, fn, callOptions);
  const deferred = new DeferredWork(nats, cp, events, config.service, guarded, (key, fn, o) =>
    once(cp, events, config.service, key, fn, o),
  );
  const execute = <T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    callOptions: CallOptions<T> = noOptions(),
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
    call: (dependency, fn, callOptions = noOptions()) =>
      callOptions.idempotencyKey === undefined && callOptions.deferrable === undefined
        ? guardedValue(cp, events, config.service, dependency, fn, callOptions)
        : execute(dependency, fn, callOptions).then((result) => result.value),
    once: (key, fn, onceOptions) => once(cp, events, config.service, key, fn, onceOptions),
    fetch: (dependency, fetchOptions) => createGuardedFetch(execute, dependency, fetchOptions),
    enqueue: (dependency, payload, options) => deferred.enqueue(dependency, payload, options),
    worker: (dependency, handler, options) => deferred.worker(dependency, handler, options),
    on: (listener) => events.on(listener),
    subscribe: (listener, subscribeOptions) => subscribeFleet(cp.state, listener, subscribeOptions),
    watch: (watchOptions) =>
      watchFleet(cp.state, {
        ...watchOptions,
        signal:
          watchOptions?.signal === undefined
            ? closing.signal
            : AbortSignal.any([watchOptions.signal, closing.signal]),
      }),
    ready: () => cp.ready(),
    get controlPlaneConnected() {
      return cp.connected;
    },
    get followingFleet() {
      return cp.fleetLive;
    },
    get reportsDropped() {
      return cp.reporter.dropped;
    },
    flush: () => cp.reporter.settle(),
    async close() {
      closing.abort();
      await deferred.close();
      await cp.close();
      await nats?.close();
    },
  };
}
