import { connect, type NatsConnection } from "nats";
import { reconnectDelayMs } from "./reconnect.ts";

/**
 * Between reconnect attempts to NATS; the client adds its own jitter. Short, because events and
 * jobs wait while the link is down.
 */
const NATS_RECONNECT_WAIT_MS = 250;

/** Link state changes, for the SDK's control-plane status events. */
export type NatsLinkStatus = "connected" | "disconnected" | "reconnected";

/**
 * One NATS connection per Bulwark client, shared by the event follower and the deferred-work
 * queue. It is opened on first use, reconnects forever with jittered waits, and never throws
 * into a guarded call: callers that cannot wait check `current` instead of awaiting `connection`.
 */
export class NatsLink {
  private pending: Promise<NatsConnection> | undefined;
  private open: NatsConnection | undefined;
  private closed = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private wakeRetry: (() => void) | undefined;
  private readonly statusListeners = new Set<(status: NatsLinkStatus) => void>();

  constructor(
    private readonly servers: readonly string[],
    private readonly token: string | undefined,
  ) {}

  /** The connection once it has been established and while it is not closed. */
  get current(): NatsConnection | undefined {
    return this.open;
  }

  /** Resolves with the connection, waiting (and retrying) until NATS is first reached. */
  connection(): Promise<NatsConnection> {
    if (this.closed) return Promise.reject(new Error("the Bulwark client is closed"));
    this.pending ??= this.connectUntilReached();
    return this.pending;
  }

  onStatus(listener: (status: NatsLinkStatus) => void): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.wakeRetry?.();
    const nc = this.open;
    this.open = undefined;
    if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => nc.close());
  }

  private async connectUntilReached(): Promise<NatsConnection> {
    // Each first attempt is made by hand rather than with the client's waitOnFirstConnect, which
    // cannot be stopped: a client closed before NATS was ever reached must not keep retrying
    // (and keep the process alive).
    for (let failures = 1; ; failures++) {
      if (this.closed) throw new Error("the Bulwark client is closed");
      let nc: NatsConnection;
      try {
        nc = await connect({
          servers: [...this.servers],
          ...(this.token === undefined ? {} : { token: this.token }),
          maxReconnectAttempts: -1,
          reconnectTimeWait: NATS_RECONNECT_WAIT_MS,
          name: "bulwark-sdk",
        });
      } catch {
        await new Promise<void>((resolve) => {
          this.wakeRetry = resolve;
          this.retryTimer = setTimeout(resolve, reconnectDelayMs(failures));
          this.retryTimer.unref();
        });
        continue;
      }
      if (this.closed) {
        await nc.close();
        throw new Error("the Bulwark client is closed");
      }
      this.open = nc;
      this.emit("connected");
      void this.followStatus(nc);
      return nc;
    }
  }

  private async followStatus(nc: NatsConnection): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === "disconnect") this.emit("disconnected");
      else if (status.type === "reconnect") this.emit("reconnected");
    }
  }

  private emit(status: NatsLinkStatus): void {
    for (const listener of this.statusListeners) {
      try {
        listener(status);
      } catch {
        // A listener's bug must not break the link.
      }
    }
  }
}
