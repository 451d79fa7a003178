import { fromBinary } from "@bufbuild/protobuf";
import type { NatsConnection, Subscription } from "nats";
import type { BreakerStatus, BreakerTransition } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { type Event, EventSchema } from "../gen/bulwark/v1/event_pb.ts";
import type { Policy } from "../gen/bulwark/v1/policy_pb.ts";
import { type FleetState, newerThanListing } from "./fleet-state.ts";
import type { NatsLink } from "./nats-link.ts";
import { pause, reconnectDelayMs } from "./reconnect.ts";
import type { FollowerStatusListener } from "./watch-follower.ts";

/** Subjects of DESIGN §9 the follower listens on (the server publishes protobuf Events). */
export const BREAKER_SUBJECTS = "bulwark.breaker.>";
export const POLICY_SUBJECTS = "bulwark.policy.>";

/** The control plane's current state, read with ListPolicies and ListBreakers. */
export type ListState = () => Promise<{ policies: Policy[]; breakers: BreakerStatus[] }>;

/**
 * Follows the fleet over NATS. On every (re)connection it subscribes first, then lists the
 * current state from the control plane, applies it, and only then the events that arrived
 * meanwhile that are newer than the listing; after that each event is applied as it comes. Core
 * NATS does not replay what was published while the link was down: the listing is what makes
 * up for it.
 */
export class NatsFollower {
  private readonly stop = new AbortController();
  private subscriptions: Subscription[] = [];
  /** Events received while a listing is under way; undefined once it has been applied. */
  private buffer: Event[] | undefined = [];
  /** Bumped on each (re)connection so a listing from an older one is not applied. */
  private epoch = 0;
  private unlisten: (() => void) | undefined;
  /** The NATS connection is up (events can arrive). */
  private linkUp = false;
  live = false;

  constructor(
    private readonly link: NatsLink,
    private readonly list: ListState,
    private readonly state: FleetState,
    private readonly onStatus: FollowerStatusListener,
  ) {}

  start(): void {
    if (this.unlisten !== undefined) return;
    this.unlisten = this.link.onStatus((status) => {
      if (status === "disconnected") {
        this.linkUp = false;
        this.buffer = [];
        this.epoch++;
        this.setLive(false, new Error("NATS disconnected"));
      } else if (status === "reconnected") {
        this.linkUp = true;
        this.resync();
      }
    });
    this.link
      .connection()
      .then((nc) => {
        if (this.stop.signal.aborted) return;
        this.subscribe(nc);
        this.linkUp = true;
        this.resync();
      })
      .catch(() => {
        // Only a closed client ends the wait for NATS.
      });
  }

  close(): void {
    this.stop.abort();
    this.unlisten?.();
    for (const sub of this.subscriptions) sub.unsubscribe();
    this.subscriptions = [];
    this.live = false;
  }

  private subscribe(nc: NatsConnection): void {
    const callback = (err: unknown, msg: { data: Uint8Array }) => {
      if (err !== null) return;
      let event: Event;
      try {
        event = fromBinary(EventSchema, msg.data);
      } catch {
        return; // not an Event: nothing this follower can use
      }
      if (this.buffer !== undefined) this.buffer.push(event);
      else this.state.applyEvent(event);
    };
    // The client re-subscribes by itself after a reconnection.
    this.subscriptions = [
      nc.subscribe(BREAKER_SUBJECTS, { callback }),
      nc.subscribe(POLICY_SUBJECTS, { callback }),
    ];
  }

  /**
   * Lists the current state again and applies it with the events received meanwhile: on every
   * (re)connection, and when the control plane is back after an outage.
   */
  resync(): void {
    if (!this.linkUp || this.stop.signal.aborted) return;
    void this.listAndApply();
  }

  /** Lists until it succeeds (or the link drops again), then applies listing and buffer. */
  private async listAndApply(): Promise<void> {
    const epoch = ++this.epoch;
    this.buffer = [];
    let failures = 0;
    while (!this.stop.signal.aborted && epoch === this.epoch) {
      const nc = this.link.current;
      try {
        // The subscriptions must be in place on the server before the listing is taken.
        await nc?.flush();
        const listing = await this.list();
        if (epoch !== this.epoch || this.stop.signal.aborted) return;
        this.applyListing(listing.policies, listing.breakers);
        this.setLive(true);
        return;
      } catch (err) {
        failures++;
        this.setLive(false, err);
        await pause(reconnectDelayMs(failures), this.stop.signal);
      }
    }
  }

  private applyListing(policies: Policy[], breakers: BreakerStatus[]): void {
    const buffered = this.buffer ?? [];
    this.buffer = undefined;
    this.state.applyListing(policies, breakers);
    // Policies carry their revision, which the state compares; transitions are placed against
    // the listed breaker per breaker.
    const listed = new Map(breakers.map((b) => [`${b.dependency}\u0000${b.service}`, b]));
    const transitions = new Map<string, BreakerTransition[]>();
    for (const event of buffered) {
      if (event.kind.case !== "breakerTransition") continue;
      const t = event.kind.value;
      const key = `${t.dependency}\u0000${t.service}`;
      const list = transitions.get(key) ?? [];
      list.push(t);
      transitions.set(key, list);
    }
    const newer = new Set<BreakerTransition>();
    for (const [key, list] of transitions) {
      for (const t of newerThanListing(list, listed.get(key))) newer.add(t);
    }
    for (const event of buffered) {
      if (event.kind.case === "breakerTransition" && !newer.has(event.kind.value)) continue;
      this.state.applyEvent(event);
    }
  }

  private setLive(live: boolean, error?: unknown): void {
    if (this.live === live) return;
    this.live = live;
    this.onStatus(live, error);
  }
}
