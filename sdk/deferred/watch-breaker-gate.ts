import { createClient, type Transport } from "@connectrpc/connect";
import { BreakerService } from "../../gen/bulwark/v1/breaker_pb.ts";
import { BreakerState } from "../../gen/bulwark/v1/breaker_types_pb.ts";
import type { BreakerGate } from "./breaker-gate.ts";

/** First and longest wait before the gate opens its Watch stream again after it broke. */
const WATCH_RETRY_BASE_MS = 100;
const WATCH_RETRY_MAX_MS = 5_000;

interface Known {
  state: BreakerState;
  openUntilMs: number;
}

/**
 * A BreakerGate that follows the control plane's Watch stream: a snapshot of every breaker
 * first, then each transition as it happens. When the stream breaks it is opened again with
 * growing, jittered waits, and the new snapshot replaces what was known. Until the first
 * snapshot, and while the stream is away, the last known state holds: a breaker never seen is
 * taken as closed, and the worker's guarded call still asks the server (or decides locally).
 */
export class WatchBreakerGate implements BreakerGate {
  private readonly known = new Map<string, Known>();
  private readonly listeners = new Set<() => void>();
  private readonly stop = new AbortController();

  constructor(
    transport: Transport,
    private readonly headers: Record<string, string>,
    private readonly service: string,
  ) {
    void this.follow(createClient(BreakerService, transport));
  }

  isOpen(dependency: string): boolean {
    return this.openUntilMs(dependency) > Date.now();
  }

  openUntilMs(dependency: string): number {
    let until = 0;
    for (const service of ["", this.service]) {
      const k = this.known.get(`${dependency}\u0000${service}`);
      if (k === undefined) continue;
      if (k.state === BreakerState.FORCED_OPEN) return Number.POSITIVE_INFINITY;
      if (k.state === BreakerState.OPEN) until = Math.max(until, k.openUntilMs);
    }
    return until;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    this.stop.abort();
    this.listeners.clear();
  }

  private set(dependency: string, service: string, state: BreakerState, openUntilMs: number) {
    this.known.set(`${dependency}\u0000${service}`, { state, openUntilMs });
  }

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch {
        // A listener's bug must not stop the gate.
      }
    }
  }

  private async follow(client: ReturnType<typeof createClient<typeof BreakerService>>) {
    let failures = 0;
    while (!this.stop.signal.aborted) {
      try {
        for await (const res of client.watch(
          {},
          { signal: this.stop.signal, headers: this.headers },
        )) {
          failures = 0;
          if (res.kind.case === "snapshot") {
            this.known.clear();
            for (const b of res.kind.value.breakers) {
              this.set(b.dependency, b.service, b.state, Number(b.openUntilUnixMs));
            }
            this.notify();
          } else if (
            res.kind.case === "event" &&
            res.kind.value.kind.case === "breakerTransition"
          ) {
            const t = res.kind.value.kind.value;
            this.set(t.dependency, t.service, t.to, Number(t.openUntilUnixMs));
            this.notify();
          }
        }
      } catch {
        // The stream broke (server restart, network); opened again below.
      }
      if (this.stop.signal.aborted) return;
      failures++;
      const capMs = Math.min(WATCH_RETRY_MAX_MS, WATCH_RETRY_BASE_MS * 2 ** (failures - 1));
      await new Promise((r) => setTimeout(r, capMs / 2 + (Math.random() * capMs) / 2).unref());
    }
  }
}
