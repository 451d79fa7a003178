import type { ControlPlane } from "../control-plane.ts";
import type { EventEmitter } from "../events.ts";
import type { NatsLink } from "../nats-link.ts";
import type { BreakerGate } from "./breaker-gate.ts";
import { DeadLetterRecorder } from "./dead-letter-recorder.ts";
import { FleetBreakerGate } from "./fleet-breaker-gate.ts";
import { type EnqueueOptions, type JobPayload, JobQueue } from "./job-queue.ts";
import {
  checkWorkerOptions,
  type JobHandler,
  type JobWorker,
  type OnceRunner,
  Worker,
  type WorkerDeps,
  type WorkerOptions,
} from "./job-worker.ts";

/**
 * The deferred path of one Bulwark client: the queue jobs are enqueued on, the workers it runs,
 * and the breaker gate they share (opened with the first worker).
 */
export class DeferredWork {
  private readonly queue: JobQueue;
  private readonly recorder: DeadLetterRecorder;
  private readonly workers = new Set<Worker>();
  private gate: BreakerGate | undefined;

  constructor(
    private readonly link: NatsLink | undefined,
    private readonly cp: ControlPlane,
    private readonly events: EventEmitter,
    private readonly service: string,
    private readonly execute: WorkerDeps["execute"],
    private readonly once: OnceRunner | undefined,
  ) {
    this.queue = new JobQueue(link, cp, events);
    this.recorder = new DeadLetterRecorder(cp);
  }

  enqueue(dependency: string, payload: JobPayload, options?: EnqueueOptions): Promise<string> {
    return this.queue.enqueue(dependency, payload, options);
  }

  worker(dependency: string, handler: JobHandler, options: WorkerOptions = {}): JobWorker {
    const { concurrency, guarded } = checkWorkerOptions(options);
    this.gate ??= new FleetBreakerGate(this.cp.state, this.service);
    const worker = new Worker(dependency, handler, concurrency, guarded, {
      queue: this.queue,
      cp: this.cp,
      events: this.events,
      gate: this.gate,
      recorder: this.recorder,
      execute: this.execute,
      once: this.once,
    });
    this.workers.add(worker);
    return {
      dependency,
      get state() {
        return worker.state;
      },
      stop: async () => {
        await worker.stop();
        this.workers.delete(worker);
      },
    };
  }

  /** Stops every worker (letting jobs in hand finish), the gate, and the NATS link. */
  async close(): Promise<void> {
    await Promise.all([...this.workers].map((w) => w.stop()));
    this.workers.clear();
    this.gate?.close();
    await this.link?.close();
  }
}
