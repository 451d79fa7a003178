import type { Client } from "@connectrpc/connect";
import type { BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import type { FleetState } from "./fleet-state.ts";
import { pause, reconnectDelayMs } from "./reconnect.ts";

/** What a follower tells its owner: it holds the fleet's current state, or it lost it. */
export type FollowerStatusListener = (live: boolean, error?: unknown) => void;

/**
 * Follows the fleet over the control plane's Watch stream: the snapshot replaces the held state,
 * then each event moves it on. When the stream breaks it is opened again after a jittered,
 * growing wait, and the new snapshot tells what changed meanwhile.
 */
export class WatchFollower {
  private stop = new AbortController();
  private running: Promise<void> | undefined;
  live = false;

  constructor(
    private readonly client: Client<typeof BreakerService>,
    private readonly headers: Record<string, string>,
    private readonly state: FleetState,
    private readonly onStatus: FollowerStatusListener,
  ) {}

  /** Whether the stream is being followed (it may be between two openings). */
  get started(): boolean {
    return this.running !== undefined;
  }

  start(): void {
    if (this.running !== undefined) return;
    this.stop = new AbortController();
    this.running = this.follow(this.stop.signal);
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.running;
    this.running = undefined;
  }

  /** The first failure before the stream was ever live has been reported. */
  private firstFailureTold = false;

  private async follow(stop: AbortSignal): Promise<void> {
    let failures = 0;
    while (!stop.aborted) {
      let error: unknown;
      try {
        const stream = this.client.watch({}, { signal: stop, headers: this.headers });
        for await (const res of stream) {
          if (res.kind.case === "snapshot") {
            this.state.applyListing(res.kind.value.policies, res.kind.value.breakers);
            failures = 0;
            this.setLive(true);
          } else if (res.kind.case === "event") {
            this.state.applyEvent(res.kind.value);
          }
        }
        error = new Error("the Watch stream ended");
      } catch (err) {
        error = err;
      }
      if (stop.aborted) break;
      if (!this.live && failures === 0 && !this.firstFailureTold) {
        // Never live yet: say why once (a refused token would otherwise go unnoticed).
        this.firstFailureTold = true;
        this.onStatus(false, error);
      }
      this.setLive(false, error);
      failures++;
      await pause(reconnectDelayMs(failures), stop);
    }
    this.live = false;
  }

  private setLive(live: boolean, error?: unknown): void {
    if (this.live === live) return;
    this.live = live;
    this.onStatus(live, error);
  }
}
