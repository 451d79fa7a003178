import type { Client } from "@connectrpc/connect";
import type { BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import type { FleetState } from "./fleet-state.ts";
import { type ListState, NatsFollower } from "./nats-follower.ts";
import type { NatsLink } from "./nats-link.ts";
import { WatchFollower } from "./watch-follower.ts";

/**
 * With NATS configured, how long the SDK waits for NATS before it follows the Watch stream as
 * well: long enough for a healthy NATS to answer, short enough that a dead one costs little.
 */
export const NATS_FALLBACK_AFTER_MS = 1_000;

/** Which source a status change is about. */
export type FleetSource = "nats" | "watch";

export type SourceStatusListener = (source: FleetSource, live: boolean, error: unknown) => void;

/**
 * Picks the source the fleet's state is followed on (DESIGN §5, §9): NATS when configured, with
 * the Watch stream as a second source while NATS is not live; the Watch stream alone otherwise.
 * Both feed the same FleetState, which ignores what it already holds.
 */
export class FleetFollower {
  private readonly watch: WatchFollower;
  private readonly nats: NatsFollower | undefined;
  private fallbackTimer: NodeJS.Timeout | undefined;
  private watchStopping: Promise<void> | undefined;
  private closed = false;

  constructor(
    client: Client<typeof BreakerService>,
    headers: Record<string, string>,
    state: FleetState,
    link: NatsLink | undefined,
    list: ListState,
    private readonly onStatus: SourceStatusListener,
  ) {
    this.watch = new WatchFollower(client, headers, state, (live, err) =>
      this.onSourceStatus("watch", live, err),
    );
    this.nats =
      link === undefined
        ? undefined
        : new NatsFollower(link, list, state, (live, err) =>
            this.onSourceStatus("nats", live, err),
          );
  }

  /** A source is live: the held state is the fleet's current one. */
  get live(): boolean {
    return this.watch.live || this.nats?.live === true;
  }

  start(): void {
    if (this.nats === undefined) {
      this.watch.start();
      return;
    }
    this.nats.start();
    this.armFallback();
  }

  /** Lists the state again on NATS (the Watch stream does so by itself when it reopens). */
  resync(): void {
    this.nats?.resync();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.fallbackTimer !== undefined) clearTimeout(this.fallbackTimer);
    this.nats?.close();
    await this.watch.close();
  }

  private onSourceStatus(source: FleetSource, live: boolean, error: unknown): void {
    if (source === "nats") {
      if (live) {
        if (this.fallbackTimer !== undefined) clearTimeout(this.fallbackTimer);
        this.fallbackTimer = undefined;
        // NATS carries the events again; the second source is no longer needed.
        void this.stopWatch();
      } else {
        this.armFallback();
      }
    }
    this.onStatus(source, live, error);
  }

  /** Follows Watch as well if NATS is not live within NATS_FALLBACK_AFTER_MS. */
  private armFallback(): void {
    if (this.closed || this.fallbackTimer !== undefined) return;
    this.fallbackTimer = setTimeout(() => {
      this.fallbackTimer = undefined;
      if (!this.closed && this.nats?.live !== true) this.watch.start();
    }, NATS_FALLBACK_AFTER_MS);
    this.fallbackTimer.unref();
  }

  private async stopWatch(): Promise<void> {
    if (!this.watch.started || this.watchStopping !== undefined) return;
    this.watchStopping = this.watch.close();
    await this.watchStopping;
    this.watchStopping = undefined;
  }
}
