import type { Consumer, JsMsg, NatsConnection } from "nats";
import { classifyError } from "../classify.ts";
import type { ControlPlane } from "../control-plane.ts";
import { isBulwarkError, isCircuitOpenError, isIdempotencyInProgressError } from "../errors.ts";
import type { EventEmitter, JobEvent } from "../events.ts";
import type { AttemptContext, CallOptions, CallResult } from "../guarded-call.ts";
import type { CallPolicy } from "../policy.ts";
import { pause, reconnectDelayMs } from "../reconnect.ts";
import { newSpanId, newTraceId, traceparent } from "../trace.ts";
import type { BreakerGate } from "./breaker-gate.ts";
import { type DeadLetterRecorder, isRetryableRecordError } from "./dead-letter-recorder.ts";
import {
  deadLetterHeaders,
  dlqSubject,
  type Job,
  jobFromMessage,
  jobStreamName,
  letterIdOf,
  WORKER_CONSUMER,
} from "./job-message.ts";
import type { JobQueue } from "./job-queue.ts";
import { isPermanentJobError } from "./permanent-job-error.ts";

/** What a job event says beyond the job it is about (one variant per status). */
type JobEventDetail = JobEvent extends infer E
  ? E extends JobEvent
    ? Omit<E, "type" | "dependency" | "jobId" | "traceId" | "delivery">
    : never
  : never;

/** Handles one job. Throw to fail it: PermanentJobError dead-letters it at once. */
export type JobHandler = (job: Job, ctx: AttemptContext) => Promise<void>;

export interface WorkerOptions {
  /** Jobs handled at once by this worker, 1..1000. Default 1. */
  concurrency?: number;
  /**
   * Run each job as one guarded call of the dependency: the policy's timeout and retries,
   * admission by the breaker, the outcome reported to the fleet. Default true. Set it to false
   * when the handler guards its own calls (`bulwark.call`, `bulwark.fetch`), for instance to make
   * several calls per job; the worker still pauses while the breaker is open and holds a job
   * whose call the breaker refuses. The handler's signal then aborts after the ack wait.
   */
  guarded?: boolean;
}

/** One at a time: the least load on a dependency until the operator chooses more. */
export const DEFAULT_WORKER_CONCURRENCY = 1;
const MAX_WORKER_CONCURRENCY = 1_000;
/** How long one pull waits for jobs on an empty queue; also bounds how late stop() returns. */
const PULL_EXPIRES_MS = 1_000;
/**
 * Shortest wait of a job the breaker rejected before it is tried again, when the breaker names
 * no time (HALF_OPEN with its probes out).
 */
const HOLD_MIN_MS = 250;
/** Delay before a job whose dead-lettering failed (control plane away) is tried again. */
const DEAD_LETTER_RETRY_MS = 5_000;
/** Last errors remembered for jobs that will be redelivered; older ones are forgotten. */
const MAX_REMEMBERED_ERRORS = 10_000;
/** The ledger's longest scope name. */
const MAX_SCOPE_LENGTH = 128;
/** How long moving a job to the dead-letter stream may take. */
const DLQ_PUBLISH_TIMEOUT_MS = 5_000;

/** Runs `fn` once per key across processes (the idempotency ledger). */
export type OnceRunner = <T>(
  key: string,
  fn: () => Promise<T>,
  options: { scope: string; leaseMs: number; waitMs: number; traceId?: string },
) => Promise<T>;

/** What a worker needs from the Bulwark client it belongs to. */
export interface WorkerDeps {
  queue: JobQueue;
  cp: ControlPlane;
  events: EventEmitter;
  gate: BreakerGate;
  recorder: DeadLetterRecorder;
  execute: <T>(
    dependency: string,
    fn: (ctx: AttemptContext) => Promise<T>,
    options?: CallOptions<T>,
  ) => Promise<CallResult<T>>;
  /** The idempotency ledger, when the client has one. */
  once: OnceRunner | undefined;
}

/** A running worker. */
export interface JobWorker {
  readonly dependency: string;
  readonly state: WorkerState["kind"];
  /**
   * Stops pulling, waits for the jobs in hand to finish, and returns. Jobs held for an open
   * breaker are handed back to the queue (which counts that as a delivery).
   */
  stop(): Promise<void>;
}

export type WorkerState =
  | { kind: "starting" }
  | { kind: "running" }
  | { kind: "paused"; openUntilMs: number }
  | { kind: "stopping" }
  | { kind: "stopped" };

export function checkWorkerOptions(options: WorkerOptions): {
  concurrency: number;
  guarded: boolean;
} {
  const concurrency = options.concurrency ?? DEFAULT_WORKER_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_WORKER_CONCURRENCY) {
    throw new RangeError(
      `options.concurrency must be an integer in [1, ${MAX_WORKER_CONCURRENCY}]; got ${concurrency}`,
    );
  }
  return { concurrency, guarded: options.guarded ?? true };
}

/** Capped exponential back-off with equal jitter: never less than half the exponential step. */
function redeliveryDelayMs(policy: CallPolicy, delivery: number): number {
  const { workerInitialBackoffMs: base, workerMaxBackoffMs: cap } = policy.queue;
  const stepMs = Math.min(cap, base * 2 ** Math.max(0, delivery - 1));
  return Math.round(stepMs / 2 + (Math.random() * stepMs) / 2);
}

/** A failure's message and type for the dead letter, looking through the SDK's wrappers. */
function describeFailure(err: unknown): { error: string; errorType: string } {
  const cause = isBulwarkError(err) && err.cause !== undefined ? err.cause : err;
  const text = (e: unknown) => (e instanceof Error ? e.message : String(e));
  const error = cause === err ? text(err) : `${text(err)}: ${text(cause)}`;
  const errorType =
    isBulwarkError(err) && cause === err ? err.code : classifyError(cause).errorType;
  return { error, errorType };
}

/** Whether retrying can never help: the handler said so, or the dependency refused for good. */
function isPermanent(err: unknown): boolean {
  if (isPermanentJobError(err)) return true;
  if (isBulwarkError(err)) return false;
  return classifyError(err).result === "ignored";
}

/**
 * Pulls a dependency's jobs from its work queue with bounded concurrency and runs each as a
 * guarded call (DESIGN §6). Success acknowledges the job; a transient failure hands it back to
 * JetStream with the policy's worker back-off; after max_deliveries deliveries, or at once for a
 * permanent failure, the job moves to the dead-letter stream and is recorded on the control
 * plane. While the dependency's breaker is open the worker pulls nothing, and a job the breaker
 * rejects is held (its delivery not used up) until the breaker lets calls through again.
 */
export class Worker implements JobWorker {
  private current: WorkerState = { kind: "starting" };
  private inFlight = 0;
  private slotFreed: (() => void) | undefined;
  private readonly stopping = new AbortController();
  private readonly lastErrors = new Map<number, { error: string; errorType: string }>();
  private readonly done: Promise<void>;
  private readonly idle: Promise<void>;
  private resolveIdle: () => void = () => {};
  private consumer: { nc: NatsConnection; consumer: Consumer } | undefined;

  constructor(
    readonly dependency: string,
    private readonly handler: JobHandler,
    private readonly concurrency: number,
    private readonly guarded: boolean,
    private readonly deps: WorkerDeps,
  ) {
    this.idle = new Promise((resolve) => {
      this.resolveIdle = resolve;
    });
    this.done = this.run();
  }

  get state(): WorkerState["kind"] {
    return this.current.kind;
  }

  async stop(): Promise<void> {
    if (this.current.kind === "stopped") return;
    this.current = { kind: "stopping" };
    this.stopping.abort();
    this.slotFreed?.();
    await this.done;
    if (this.inFlight > 0) await this.idle;
    this.current = { kind: "stopped" };
    this.emitWorker("stopped");
  }

  private emitWorker(status: "started" | "resumed" | "stopped"): void {
    this.deps.events.emit({ type: "worker", dependency: this.dependency, status });
  }

  private async consumerFor(policy: CallPolicy): Promise<Consumer> {
    const nc = await this.deps.queue.connection(this.dependency);
    if (this.consumer?.nc !== nc) {
      await this.deps.queue.ensureStreams(nc, policy, true);
      const consumer = await nc
        .jetstream()
        .consumers.get(jobStreamName(this.dependency), WORKER_CONSUMER);
      this.consumer = { nc, consumer };
    }
    return this.consumer.consumer;
  }

  /** Waits until the breaker lets calls through, it changes, or the worker stops. */
  private async waitForGate(): Promise<void> {
    const { gate } = this.deps;
    const untilMs = gate.openUntilMs(this.dependency);
    const stopping = this.stopping.signal;
    await new Promise<void>((resolve) => {
      const unsubscribe = gate.onChange(finish);
      const timer = Number.isFinite(untilMs)
        ? setTimeout(finish, Math.max(0, untilMs - Date.now()))
        : undefined;
      timer?.unref();
      stopping.addEventListener("abort", finish, { once: true });
      function finish() {
        unsubscribe();
        if (timer !== undefined) clearTimeout(timer);
        // A paused worker waits here once per breaker change: each wait leaves no listener.
        stopping.removeEventListener("abort", finish);
        resolve();
      }
    });
  }

  private async run(): Promise<void> {
    const signal = this.stopping.signal;
    let failures = 0;
    let started = false;
    while (!signal.aborted) {
      try {
        const policy = await this.deps.cp.policy(this.dependency);
        const consumer = await this.consumerFor(policy);
        if (!started) {
          started = true;
          this.current = { kind: "running" };
          this.emitWorker("started");
        }
        const { gate } = this.deps;
        if (gate.isOpen(this.dependency)) {
          if (this.current.kind !== "paused") {
            const openUntilMs = gate.openUntilMs(this.dependency);
            this.current = { kind: "paused", openUntilMs };
            this.deps.events.emit({
              type: "worker",
              dependency: this.dependency,
              status: "paused",
              openUntilMs,
            });
          }
          await this.waitForGate();
          continue;
        }
        if (this.current.kind === "paused") {
          this.current = { kind: "running" };
          this.emitWorker("resumed");
        }
        const free = this.concurrency - this.inFlight;
        if (free <= 0) {
          await new Promise<void>((resolve) => {
            this.slotFreed = resolve;
          });
          this.slotFreed = undefined;
          continue;
        }
        const batch = await consumer.fetch({ max_messages: free, expires: PULL_EXPIRES_MS });
        for await (const m of batch) this.start(m);
        failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        this.consumer = undefined;
        failures++;
        // Pulling failed (NATS away, stream missing): retried like any lost connection.
        const retryInMs = reconnectDelayMs(failures);
        this.deps.events.emit({
          type: "worker",
          dependency: this.dependency,
          status: "error",
          error: err instanceof Error ? err.message : String(err),
          retryInMs,
        });
        await pause(retryInMs, signal);
      }
    }
  }

  private start(m: JsMsg): void {
    this.inFlight++;
    void this.process(m)
      .catch(() => {
        // process() settles every outcome itself; nothing may escape into the pull loop.
      })
      .finally(() => {
        this.inFlight--;
        this.slotFreed?.();
        if (this.inFlight === 0 && this.stopping.signal.aborted) this.resolveIdle();
      });
  }

  private emitJob(job: Job, detail: JobEventDetail): void {
    if (!this.deps.events.active) return;
    this.deps.events.emit({
      type: "job",
      dependency: this.dependency,
      jobId: job.id,
      traceId: job.traceId,
      delivery: job.delivery,
      ...detail,
    });
  }

  private async process(m: JsMsg): Promise<void> {
    const job = jobFromMessage(this.dependency, m);
    const policy = await this.deps.cp.policy(this.dependency);
    const { maxDeliveries } = policy.queue;
    if (job.delivery > maxDeliveries) {
      // Delivered again after its last attempt: the worker that had it crashed, or the
      // dead-lettering failed. Move it on without running it again.
      const last = this.lastErrors.get(m.seq) ?? {
        error: `delivered ${job.delivery} times; no attempt finished in this worker (a worker stopped or crashed mid-job, or the ack wait lapsed)`,
        errorType: "redelivered",
      };
      await this.deadLetter(m, job, "max-deliveries", job.delivery - 1, last);
      return;
    }
    this.emitJob(job, { status: "started" });
    for (;;) {
      if (this.deps.gate.isOpen(this.dependency)) {
        if (!(await this.hold(m, job, this.deps.gate.openUntilMs(this.dependency)))) return;
        continue;
      }
      try {
        await this.runHandler(job, policy);
      } catch (err) {
        if (isCircuitOpenError(err)) {
          // Nothing was sent: the breaker refused. Wait for it without using a delivery.
          const retryAtMs = Math.max(err.retryAtMs, Date.now() + HOLD_MIN_MS);
          if (!(await this.hold(m, job, retryAtMs))) return;
          continue;
        }
        if (isIdempotencyInProgressError(err)) {
          // Another worker holds the job's key (a redelivery while the first run is still going,
          // or a crashed worker's lease): wait for its lease without using a delivery.
          const retryAtMs = Math.max(err.leaseExpiresAtMs, Date.now() + HOLD_MIN_MS);
          if (!(await this.hold(m, job, retryAtMs))) return;
          continue;
        }
        const failure = describeFailure(err);
        if (isPermanent(err)) {
          await this.deadLetter(m, job, "permanent", job.delivery, failure);
        } else if (job.delivery >= maxDeliveries) {
          await this.deadLetter(m, job, "max-deliveries", job.delivery, failure);
        } else {
          const delayMs = redeliveryDelayMs(policy, job.delivery);
          this.remember(m.seq, failure);
          m.nak(delayMs);
          this.emitJob(job, { status: "retrying", delayMs, ...failure });
        }
        return;
      }
      this.lastErrors.delete(m.seq);
      // Said before the acknowledgement goes out: a process that dies between the two has its
      // job delivered again, and the idempotency key keeps the work from running twice.
      this.emitJob(job, { status: "succeeded" });
      m.ack();
      return;
    }
  }

  /**
   * Runs the handler as one guarded call of the dependency; a job with an idempotency key runs
   * through the ledger, so a redelivered or replayed job whose run completed does not run again.
   * The lease is the queue's ack wait: as long as JetStream lets one worker hold the job.
   */
  private async runHandler(job: Job, policy: CallPolicy): Promise<void> {
    const traceId = /^[0-9a-f]{32}$/.test(job.traceId) ? job.traceId : undefined;
    const causationId = job.causationId === "" ? undefined : job.causationId.slice(0, 128);
    const run = () => {
      if (!this.guarded) {
        const spanId = newSpanId();
        const trace = traceId ?? newTraceId();
        return this.handler(job, {
          signal: AbortSignal.timeout(policy.queue.ackWaitMs),
          attempt: 1,
          traceId: trace,
          spanId,
          traceparent: traceparent(trace, spanId),
        });
      }
      return this.deps.execute(this.dependency, (ctx) => this.handler(job, ctx), {
        ...(traceId === undefined ? {} : { traceId }),
        ...(causationId === undefined ? {} : { causationId }),
      });
    };
    const once = this.deps.once;
    if (job.idempotencyKey === "" || once === undefined) {
      await run();
      return;
    }
    await once(
      job.idempotencyKey,
      async () => {
        await run();
        return null;
      },
      {
        // Shared by every service whose workers take this dependency's jobs.
        scope: `jobs.${this.dependency}`.slice(0, MAX_SCOPE_LENGTH),
        leaseMs: policy.queue.ackWaitMs,
        waitMs: 0,
        ...(traceId === undefined ? {} : { traceId }),
      },
    );
  }

  /**
   * Keeps a job whose call the breaker refuses, telling JetStream it is still being worked on,
   * until `untilMs` or a breaker change. False when the worker stopped meanwhile (the job is
   * then handed back).
   */
  private async hold(m: JsMsg, job: Job, untilMs: number): Promise<boolean> {
    this.emitJob(job, { status: "held", retryAtMs: untilMs });
    const policy = await this.deps.cp.policy(this.dependency);
    const keepAlive = setInterval(() => m.working(), Math.max(250, policy.queue.ackWaitMs / 3));
    keepAlive.unref();
    try {
      m.working();
      const waitMs = Number.isFinite(untilMs) ? Math.max(HOLD_MIN_MS, untilMs - Date.now()) : 0;
      await new Promise<void>((resolve) => {
        const unsubscribe = this.deps.gate.onChange(finish);
        const timer = waitMs > 0 ? setTimeout(finish, waitMs) : undefined;
        timer?.unref();
        const signal = this.stopping.signal;
        signal.addEventListener("abort", finish, { once: true });
        function finish() {
          unsubscribe();
          if (timer !== undefined) clearTimeout(timer);
          signal.removeEventListener("abort", finish);
          resolve();
        }
      });
    } finally {
      clearInterval(keepAlive);
    }
    if (this.stopping.signal.aborted) {
      m.nak();
      return false;
    }
    return true;
  }

  private remember(seq: number, failure: { error: string; errorType: string }): void {
    this.lastErrors.delete(seq);
    this.lastErrors.set(seq, failure);
    if (this.lastErrors.size > MAX_REMEMBERED_ERRORS) {
      const oldest = this.lastErrors.keys().next().value;
      if (oldest !== undefined) this.lastErrors.delete(oldest);
    }
  }

  /**
   * Moves a job to the dead-letter stream, records it on the control plane, then acknowledges
   * it. Each step may be repeated after a crash: the copy carries the letter id as its
   * deduplication id, and recording the same letter twice keeps the first record.
   */
  private async deadLetter(
    m: JsMsg,
    job: Job,
    reason: "max-deliveries" | "permanent",
    attempts: number,
    failure: { error: string; errorType: string },
  ): Promise<void> {
    const letterId = letterIdOf(job.id, m.seq);
    const atMs = Date.now();
    let dlqSequence: number;
    try {
      const nc = await this.deps.queue.connection(this.dependency);
      const ack = await nc.jetstream().publish(dlqSubject(this.dependency), job.payload, {
        msgID: letterId,
        timeout: DLQ_PUBLISH_TIMEOUT_MS,
        headers: deadLetterHeaders(job, {
          letterId,
          reason,
          attempts,
          lastError: failure.error,
          errorType: failure.errorType,
          atMs,
        }),
      });
      dlqSequence = ack.seq;
    } catch (err) {
      this.retryDeadLetter(m, job, failure, err);
      return;
    }
    try {
      await this.deps.recorder.record({
        letterId,
        dependency: this.dependency,
        jobId: job.id,
        reason,
        payload: job.payload,
        attempts,
        lastError: failure.error,
        errorType: failure.errorType,
        traceId: job.traceId,
        causationId: job.causationId,
        idempotencyKey: job.idempotencyKey,
        enqueuedAtMs: job.enqueuedAtMs,
        deadLetteredAtMs: atMs,
        dlqSequence,
        replayOf: job.replayOf,
      });
    } catch (err) {
      if (isRetryableRecordError(err)) {
        this.retryDeadLetter(m, job, failure, err);
        return;
      }
      // Refused for good: the copy in the dead-letter stream is all there is; say so.
      this.emitJob(job, {
        status: "dead-letter-failed",
        error: `the control plane refused the dead letter: ${(err as Error).message}`,
      });
    }
    this.lastErrors.delete(m.seq);
    m.ack();
    this.emitJob(job, { status: "dead-lettered", letterId, reason, ...failure });
  }

  private retryDeadLetter(
    m: JsMsg,
    job: Job,
    failure: { error: string; errorType: string },
    err: unknown,
  ): void {
    this.remember(m.seq, failure);
    m.nak(DEAD_LETTER_RETRY_MS);
    this.emitJob(job, {
      status: "dead-letter-failed",
      error: err instanceof Error ? err.message : String(err),
    });
  }
}
