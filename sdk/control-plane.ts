import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AcquireDecision, BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import { OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { IdempotencyService } from "../gen/bulwark/v1/idempotency_pb.ts";
import { PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import type { CountedResult } from "../server/domain/breaker-engine.ts";
import { type Admission, admitFromFleet, HOLD, LOCAL } from "./admission.ts";
import { isUnreachable, refused } from "./control-plane-errors.ts";
import { PolicyNotFoundError } from "./errors.ts";
import type { EventEmitter } from "./events.ts";
import { FleetFollower } from "./fleet-follower.ts";
import { FleetState } from "./fleet-state.ts";
import { createGrpcJsTransport } from "./grpc-js-transport.ts";
import { LocalBreakers } from "./local-breakers.ts";
import type { NatsLink } from "./nats-link.ts";
import { encodeReportRequest } from "./outcome-encoding.ts";
import { type CallPolicy, callPolicyFromWire, localPolicy } from "./policy.ts";
import { reconnectDelayMs } from "./reconnect.ts";
import { type OutcomeFields, Reporter } from "./reporter.ts";

/** Header the SDK names its service with (see the server's call context). */
const PRINCIPAL_HEADER = "x-bulwark-principal";
/** A cached policy is refreshed in the background once it is this old (when not followed). */
export const POLICY_REFRESH_MS = 5_000;
/**
 * How long a HALF_OPEN rejection is assumed to hold when the server cannot be asked: probes
 * usually settle within seconds, after which calls should flow again.
 */
const LOCAL_HALF_OPEN_HOLD_MS = 5_000;
/** BreakerService.Report, sent as bytes encoded by outcome-encoding.ts. */
const REPORT_PATH = `/${BreakerService.typeName}/${BreakerService.method.report.name}`;
/** A Report that has not been answered in this time counts as failed and is sent again later. */
const REPORT_TIMEOUT_MS = 2_000;
/** A listing (ListPolicies + ListBreakers) taking longer than this is tried again. */
const LIST_TIMEOUT_MS = 2_000;
type Reachability =
  | { kind: "connected" }
  | {
      kind: "unreachable";
      failures: number;
      retryAtMs: number;
      error: string;
      /** When the control plane stopped answering (Unix ms). */
      sinceMs: number;
    };

interface CachedPolicy {
  policy: CallPolicy;
  fetchedAtMs: number;
  refreshing: boolean;
}

export interface ControlPlaneOptions {
  url: string;
  service: string;
  acquireTimeoutMs: number;
  token: string | undefined;
  ca: string | Buffer | undefined;
  /** Ask the server before every attempt instead of deciding from the followed state. */
  strict: boolean;
  /** The NATS link to follow events on; the Watch stream alone when undefined. */
  nats: NatsLink | undefined;
  events: EventEmitter;
}

const COUNTED: Record<number, CountedResult> = {
  [OutcomeResult.SUCCESS]: "success",
  [OutcomeResult.FAILURE]: "failure",
  [OutcomeResult.TIMEOUT]: "timeout",
};

/**
 * The SDK's side of the control plane. It follows the fleet's policies and breakers (NATS when
 * configured, the Watch stream otherwise or while NATS is down) and admits attempts from that
 * state without a round trip while the breaker is CLOSED; only HALF_OPEN (and OPEN past its
 * time) asks the server for a permit, and `strict` asks every time. Outcomes go out in batches.
 * While the fleet cannot be followed or told (control plane or event source down), a local
 * breaker running the server's engine on the last known policy decides, and the server is
 * retried with jittered, growing waits; once back, the state is listed again.
 */
export class ControlPlane {
  private readonly policyClient: Client<typeof PolicyService>;
  private readonly breakerClient: Client<typeof BreakerService>;
  /** Policies read with GetPolicy, for dependencies the followed state does not hold yet. */
  private readonly policies = new Map<string, CachedPolicy>();
  /** Per dependency, until when the server's last answer said the breaker rejects. */
  private readonly lastRejectUntil = new Map<string, number>();
  /** The authenticated transport, for the SDK's other clients (dead letters, Watch). */
  readonly transport: Transport;
  /** The idempotency ledger's client (used by ./idempotency-ledger.ts). */
  readonly idempotency: Client<typeof IdempotencyService>;
  /** Headers every control-plane call carries. */
  readonly headers: Record<string, string>;
  private reachability: Reachability = { kind: "connected" };
  private reconnectTimer: NodeJS.Timeout | undefined;
  private readonly follower: FleetFollower;
  private readonly localBreakers = new LocalBreakers();
  private closed = false;
  private readyWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  readonly state = new FleetState();
  readonly reporter: Reporter;

  private readonly closeTransport: () => void;

  constructor(private readonly options: ControlPlaneOptions) {
    const token = options.token;
    const grpcJs = options.url.startsWith("http://")
      ? createGrpcJsTransport(
          options.url,
          token === undefined ? {} : { authorization: `Bearer ${token}` },
        )
      : undefined;
    const transport =
      grpcJs ??
      createGrpcTransport({
        baseUrl: options.url,
        ...(options.ca === undefined ? {} : { nodeOptions: { ca: options.ca } }),
        interceptors:
          token === undefined
            ? []
            : [
                (next) => (req) => {
                  req.header.set("authorization", `Bearer ${token}`);
                  return next(req);
                },
              ],
      });
    this.closeTransport = () => grpcJs?.close();
    this.transport = transport;
    this.policyClient = createClient(PolicyService, transport);
    this.breakerClient = createClient(BreakerService, transport);
    this.idempotency = createClient(IdempotencyService, transport);
    this.headers = { [PRINCIPAL_HEADER]: options.service };
    this.reporter = new Reporter(
      async (outcomes) => {
        try {
          if (grpcJs !== undefined) {
            await grpcJs.unaryBytes(
              REPORT_PATH,
              encodeReportRequest(outcomes),
              this.headers,
              REPORT_TIMEOUT_MS,
            );
          } else {
            await this.breakerClient.report(
              { outcomes },
              { timeoutMs: REPORT_TIMEOUT_MS, headers: this.headers },
            );
          }
          this.markConnected();
        } catch (err) {
          // A refused batch (InvalidArgument, PermissionDenied) would be refused again: drop it
          // and count it, keep the rest.
          if (!isUnreachable(err)) {
            this.reporter.drop(outcomes.length);
            return;
          }
          this.markUnreachable(err);
          throw err;
        }
      },
      (count, total) => options.events.emit({ type: "report-dropped", count, totalDropped: total }),
    );
    this.follower = new FleetFollower(
      this.breakerClient,
      this.headers,
      this.state,
      options.nats,
      () => this.list(),
      (source, live, err) => this.onSourceStatus(source, live, err),
    );
    this.follower.start();
  }

  get connected(): boolean {
    return this.reachability.kind === "connected";
  }

  /** The followed state is current: a source is live and the control plane hears our reports. */
  get fleetLive(): boolean {
    return this.state.synced && this.reachability.kind === "connected" && this.follower.live;
  }

  /** Resolves once the fleet's state has been received and is followed (see Bulwark.ready). */
  ready(): Promise<void> {
    if (this.fleetLive || this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  private onSourceStatus(source: "nats" | "watch", live: boolean, err: unknown): void {
    const error = err === undefined ? undefined : err instanceof Error ? err.message : String(err);
    this.options.events.emit({
      type: "event-source",
      source,
      status: live ? "live" : "lost",
      ...(error === undefined ? {} : { error }),
    });
    if (source === "watch") {
      // The snapshot is an answer from the control plane; a broken stream may be an outage.
      if (live) this.markConnected();
      else if (err !== undefined && isUnreachable(err) && !this.closed) this.markUnreachable(err);
      else if (err !== undefined && !this.closed) {
        // Refused (a token without the reader role, an untrusted certificate): waiting for the
        // state would never end, so ready() says why. The follower keeps trying.
        const waiters = this.readyWaiters;
        this.readyWaiters = [];
        const refusal = refused("following the fleet's state was refused", err);
        for (const w of waiters) w.reject(refusal);
      }
    }
    this.checkReady();
  }

  private checkReady(): void {
    if (!this.fleetLive || this.readyWaiters.length === 0) return;
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.resolve();
  }

  private async list() {
    const [p, b] = await Promise.all([
      this.policyClient.listPolicies({}, { timeoutMs: LIST_TIMEOUT_MS, headers: this.headers }),
      this.breakerClient.listBreakers({}, { timeoutMs: LIST_TIMEOUT_MS, headers: this.headers }),
    ]).catch((err: unknown) => {
      if (isUnreachable(err)) this.markUnreachable(err);
      throw err;
    });
    this.markConnected();
    return { policies: p.policies, breakers: b.breakers };
  }

  /** The dependency's policy without waiting, when the followed state holds it. */
  policyNow(dependency: string): CallPolicy | undefined {
    return this.state.policy(dependency)?.call;
  }

  /** The dependency's policy: cached, refreshed in the background, local while unreachable. */
  async policy(dependency: string): Promise<CallPolicy> {
    const followed = this.state.policy(dependency);
    if (followed !== undefined) return followed.call;
    const cached = this.policies.get(dependency);
    if (cached !== undefined) {
      if (Date.now() - cached.fetchedAtMs > POLICY_REFRESH_MS && !cached.refreshing) {
        cached.refreshing = true;
        this.fetchPolicy(dependency)
          .catch(() => {})
          .finally(() => {
            cached.refreshing = false;
          });
      }
      return cached.policy;
    }
    if (!this.mayTry()) return localPolicy(dependency);
    try {
      return await this.fetchPolicy(dependency);
    } catch (err) {
      if (err instanceof PolicyNotFoundError) throw err;
      if (isUnreachable(err)) return localPolicy(dependency);
      throw refused(`policy for ${dependency} could not be read`, err);
    }
  }

  private async fetchPolicy(dependency: string): Promise<CallPolicy> {
    try {
      const res = await this.policyClient.getPolicy(
        { dependency },
        { timeoutMs: this.options.acquireTimeoutMs, headers: this.headers },
      );
      this.markConnected();
      const policy = callPolicyFromWire(res.policy!);
      this.policies.set(dependency, { policy, fetchedAtMs: Date.now(), refreshing: false });
      return policy;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) {
        this.policies.delete(dependency);
        throw new PolicyNotFoundError(dependency);
      }
      if (isUnreachable(err)) this.markUnreachable(err);
      throw err;
    }
  }

  /**
   * The admission decided without a round trip, or undefined when the server must be asked
   * (strict mode, HALF_OPEN, OPEN past its time, or no state received yet).
   */
  admitFast(dependency: string): Admission | undefined {
    if (this.options.strict) return undefined;
    if (!this.fleetLive) return this.state.synced ? this.decideLocally(dependency) : undefined;
    if (this.localBreakers.size > 0) this.localBreakers.clear();
    return admitFromFleet(this.state.breakerFor(dependency, this.options.service));
  }

  /**
   * Decides without the server. With a known policy, the local breaker decides (the server's
   * engine, seeded with the last known fleet state). Without one, the last answer the server
   * gave decides: while it said the breaker is open, attempts are rejected until the time it
   * named; otherwise they go out.
   */
  private decideLocally(dependency: string): Admission {
    const policy = this.state.policy(dependency);
    const nowMs = Date.now();
    if (policy !== undefined) {
      const seed = this.state.breakerFor(dependency, this.options.service);
      // The fleet is probing (or about to): another instance may hold the permit. While that
      // is recent news, hold off rather than probe without a permit; after LOCAL_HALF_OPEN_HOLD_MS
      // of not hearing from the server, the local breaker probes on its own.
      if (seed !== undefined && admitFromFleet(seed, nowMs) === undefined) {
        const r = this.reachability;
        const sinceMs = r.kind === "unreachable" ? r.sinceMs : nowMs;
        if (nowMs - Math.max(sinceMs, seed.changedAtMs) < LOCAL_HALF_OPEN_HOLD_MS) return HOLD;
      }
      const decision = this.localBreakers.admit(policy, seed, nowMs);
      if (decision.kind === "reject") return decision;
      return decision.permitId === "" ? LOCAL : { kind: "local", permitId: decision.permitId };
    }
    const openUntilMs = this.lastRejectUntil.get(dependency);
    if (openUntilMs !== undefined && nowMs < openUntilMs) {
      return { kind: "reject", retryAtMs: openUntilMs };
    }
    return LOCAL;
  }

  /** Asks the server whether an attempt may go out; decides locally when it cannot be asked. */
  async acquire(
    dependency: string,
    attempt: number,
    traceId: string,
    requestId: string,
  ): Promise<Admission> {
    if (!this.mayTry()) return this.decideLocally(dependency);
    // One budget for the whole admission, however it is spent.
    const deadlineMs = Date.now() + this.options.acquireTimeoutMs;
    // In strict mode the server must have counted this instance's earlier outcomes before it
    // decides. Otherwise only HALF_OPEN asks, where only probes count: no need to wait.
    if (this.options.strict && this.reporter.busy) {
      await Promise.race([this.reporter.settle(), delay(this.options.acquireTimeoutMs)]);
    }
    const remainingMs = deadlineMs - Date.now();
    if (!this.mayTry() || remainingMs <= 0) return this.decideLocally(dependency);
    try {
      const res = await this.breakerClient.acquire(
        { dependency, service: this.options.service, attempt, traceId, requestId },
        { timeoutMs: remainingMs, headers: this.headers },
      );
      this.markConnected();
      switch (res.decision) {
        case AcquireDecision.ALLOW:
          this.lastRejectUntil.delete(dependency);
          return { kind: "allow" };
        case AcquireDecision.PROBE:
          return { kind: "probe", permitId: res.permitId };
        default: {
          const retryAtMs = Number(res.retryAtUnixMs);
          // While probes are in flight the server names no time: hold off for a while, after
          // which the local decision lets calls through.
          const untilMs = retryAtMs > 0 ? retryAtMs : Date.now() + LOCAL_HALF_OPEN_HOLD_MS;
          this.lastRejectUntil.set(dependency, untilMs);
          return { kind: "reject", retryAtMs };
        }
      }
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) {
        this.policies.delete(dependency);
        throw new PolicyNotFoundError(dependency);
      }
      if (!isUnreachable(err)) {
        throw refused("acquire was refused", err);
      }
      this.markUnreachable(err);
      return this.decideLocally(dependency);
    }
  }

  /** Queues the outcome for the server; while deciding locally, the local breaker counts it. */
  report(outcome: OutcomeFields, admission: Admission): void {
    this.reporter.add(outcome);
    if (admission.kind === "local" && this.localBreakers.size > 0) {
      this.localBreakers.record(
        outcome.dependency,
        COUNTED[outcome.result] ?? "not-counted",
        admission.permitId,
        outcome.errorType,
        Date.now(),
      );
    }
  }

  /** Stops following, then sends every queued outcome (as far as the server can be reached). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    await this.follower.close();
    this.checkReadyOnClose();
    this.reporter.resume();
    await this.reporter.settle();
    this.closeTransport();
  }

  private checkReadyOnClose(): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.resolve();
  }

  private mayTry(): boolean {
    const r = this.reachability;
    return r.kind === "connected" || Date.now() >= r.retryAtMs;
  }

  private markConnected(): void {
    if (this.reachability.kind === "connected") return;
    this.reachability = { kind: "connected" };
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.options.events.emit({ type: "control-plane", status: "connected" });
    // The fleet decides again; a later outage starts its local breakers afresh.
    this.localBreakers.clear();
    this.reporter.resume();
    // What changed while the server could not be heard is listed again (Watch resyncs by itself
    // with its snapshot when its stream is opened again).
    this.follower.resync();
    this.checkReady();
  }

  private markUnreachable(err: unknown): void {
    const previous = this.reachability;
    const failures = previous.kind === "unreachable" ? previous.failures + 1 : 1;
    const waitMs = reconnectDelayMs(failures);
    const error = err instanceof Error ? err.message : String(err);
    const nowMs = Date.now();
    const sinceMs = previous.kind === "unreachable" ? previous.sinceMs : nowMs;
    this.reachability = {
      kind: "unreachable",
      failures,
      retryAtMs: nowMs + waitMs,
      error,
      sinceMs,
    };
    if (previous.kind === "connected") {
      this.options.events.emit({ type: "control-plane", status: "unreachable", error });
    }
    // Queued outcomes are retried on this schedule even when no call comes along.
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    if (this.closed) return;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.reporter.resume();
    }, waitMs);
    this.reconnectTimer.unref();
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
