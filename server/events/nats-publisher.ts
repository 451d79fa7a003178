import { toBinary } from "@bufbuild/protobuf";
import { connect, type NatsConnection } from "nats";
import type { Logger } from "pino";
import { EventSchema } from "../../gen/bulwark/v1/event_pb.ts";
import { eventToWire } from "../wire/convert.ts";
import type { DomainEvent } from "./domain-event.ts";

/** Subject prefixes of DESIGN §9: `bulwark.breaker.<dependency>`, `bulwark.policy.<dependency>`. */
export const BREAKER_SUBJECT_PREFIX = "bulwark.breaker.";
export const POLICY_SUBJECT_PREFIX = "bulwark.policy.";
export const ALERT_SUBJECT_PREFIX = "bulwark.alert.";

/** How often the server says so while NATS has not been reached yet. */
const NOT_CONNECTED_WARN_MS = 5_000;
/** Between reconnect attempts; NATS adds its own jitter. Short, since events wait in its buffer. */
const RECONNECT_WAIT_MS = 250;

export function subjectOf(event: DomainEvent): string {
  switch (event.kind) {
    case "breaker-transition":
      return BREAKER_SUBJECT_PREFIX + event.transition.dependency;
    case "policy-changed":
      return POLICY_SUBJECT_PREFIX + event.policy.dependency;
    case "policy-deleted":
      return POLICY_SUBJECT_PREFIX + event.dependency;
    case "alert":
      return ALERT_SUBJECT_PREFIX + event.alert.dependency;
  }
}

/**
 * Publishes domain events on NATS as protobuf-encoded bulwark.v1.Event messages. The server
 * starts without waiting for NATS: until the first connection, and while reconnecting, events
 * go to the client's reconnect buffer or, when none is open yet, are counted as dropped; Watch
 * streams carry them either way.
 */
export class NatsPublisher {
  private connection: NatsConnection | undefined;
  private closed = false;
  /** Events published before any connection existed. */
  dropped = 0;

  private constructor(
    private readonly servers: string,
    private readonly logger: Logger,
  ) {}

  static start(servers: string, logger: Logger): NatsPublisher {
    const publisher = new NatsPublisher(servers, logger);
    void publisher.connectLoop();
    return publisher;
  }

  private async connectLoop(): Promise<void> {
    this.logger.info({ servers: this.servers }, "connecting to nats");
    const warn = setInterval(() => {
      if (this.connection === undefined && !this.closed) {
        this.logger.warn(
          { servers: this.servers, dropped: this.dropped },
          "nats not reachable yet; events go to Watch streams only",
        );
      }
    }, NOT_CONNECTED_WARN_MS);
    warn.unref();
    try {
      const nc = await connect({
        servers: this.servers.split(","),
        name: "bulwark-server",
        waitOnFirstConnect: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: RECONNECT_WAIT_MS,
      });
      if (this.closed) {
        await nc.close();
        return;
      }
      this.connection = nc;
      clearInterval(warn);
      this.logger.info({ servers: this.servers }, "nats connected");
      for await (const status of nc.status()) {
        if (status.type === "disconnect" || status.type === "reconnect") {
          this.logger.warn({ status: status.type, data: String(status.data) }, "nats status");
        }
      }
    } catch (err) {
      if (!this.closed) this.logger.error({ err }, "nats connection failed");
    } finally {
      clearInterval(warn);
    }
  }

  /** The open connection, if there is one (the audit mirror publishes on it too). */
  get current(): NatsConnection | undefined {
    const nc = this.connection;
    return nc === undefined || nc.isClosed() ? undefined : nc;
  }

  publish(event: DomainEvent): void {
    const nc = this.connection;
    if (nc === undefined || nc.isClosed()) {
      this.dropped++;
      return;
    }
    try {
      nc.publish(subjectOf(event), toBinary(EventSchema, eventToWire(event)));
    } catch (err) {
      this.dropped++;
      this.logger.warn({ err, subject: subjectOf(event) }, "nats publish failed");
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const nc = this.connection;
    this.connection = undefined;
    if (nc !== undefined && !nc.isClosed()) await nc.drain().catch(() => nc.close());
  }
}
