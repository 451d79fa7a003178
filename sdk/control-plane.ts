import { type Client, Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { AcquireDecision, BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import type { Outcome } from "../gen/bulwark/v1/breaker_types_pb.ts";
import { IdempotencyService } from "../gen/bulwark/v1/idempotency_pb.ts";
import { PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { ControlPlaneError, PolicyNotFoundError } from "./errors.ts";
import type { EventEmitter } from "./events.ts";
import { type CallPolicy, callPolicyFromWire, localPolicy } from "./policy.ts";
import { Reporter } from "./reporter.ts";

/** Header the SDK names its service with (see the server's call context). */
const PRINCIPAL_HEADER = "x-bulwark-principal";
/** A cached policy is refreshed in the background once it is this old. */
export const POLICY_REFRESH_MS = 5_000;
/** First and longest wait before the SDK tries an unreachable control plane again. */
export const RECONNECT_BASE_MS = 100;
export const RECONNECT_MAX_MS = 5_000;
/**
 * How long a HALF_OPEN rejection is assumed to hold when the server cannot be asked: probes
 * usually settle within seconds, after which calls should flow again.
 */
const LOCAL_HALF_OPEN_HOLD_MS = 5_000;
/** A Report that has not been answered in this time counts as failed and is sent again later. */
const REPORT_TIMEOUT_MS = 2_000;

/** How one attempt was admitted. */
export type Admission =
  | { kind: "allow" }
  | { kind: "probe"; permitId: string }
  | { kind: "local" }
  | { kind: "reject"; retryAtMs: number };

type Reachability =
  | { kind: "connected" }
  | { kind: "unreachable"; failures: number; retryAtMs: number; error: string };

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
  events: EventEmitter;
}

/** Certificate errors of Node's TLS: the control plane is reachable but not trusted. */
const TLS_TRUST_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** The TLS trust failure in an error's cause chain, if there is one. */
function tlsTrustFailure(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 6 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && TLS_TRUST_CODES.has(code)) {
      return `${code}: ${(current as Error).message}`;
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The error for a control plane that answered but refused, or is not trusted. */
export function refused(what: string, err: unknown): ControlPlaneError {
  const tls = tlsTrustFailure(err);
  return new ControlPlaneError(
    tls === undefined
      ? `${what}: ${(err as Error).message}`
      : `the control plane's TLS certificate is not trusted (${tls}); pass its CA as options.ca`,
    err,
  );
}

/**
 * Errors that mean "the control plane cannot be reached now", not "it said no". A certificate
 * the SDK does not trust is not an outage but a configuration mistake, and is not one of them.
 */
export function isUnreachable(err: unknown): boolean {
  if (tlsTrustFailure(err) !== undefined) return false;
  if (!(err instanceof ConnectError)) return true;
  return (
    err.code === Code.Unavailable ||
    err.code === Code.DeadlineExceeded ||
    err.code === Code.Canceled ||
    err.code === Code.Unknown ||
    err.code === Code.Internal ||
    err.code === Code.ResourceExhausted
  );
}

/**
 * The SDK's side of the control plane: policies (cached), Acquire, batched Report, and the
 * decision to go on locally while the server cannot be reached, retrying it with jittered,
 * growing waits.
 */
export class ControlPlane {
  private readonly policyClient: Client<typeof PolicyService>;
  private readonly breakerClient: Client<typeof BreakerService>;
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
  readonly reporter: Reporter;

  constructor(private readonly options: ControlPlaneOptions) {
    const token = options.token;
    const transport = createGrpcTransport({
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
    this.transport = transport;
    this.policyClient = createClient(PolicyService, transport);
    this.breakerClient = createClient(BreakerService, transport);
    this.idempotency = createClient(IdempotencyService, transport);
    this.headers = { [PRINCIPAL_HEADER]: options.service };
    this.reporter = new Reporter(
      async (outcomes) => {
        try {
          await this.breakerClient.report(
            { outcomes },
            { timeoutMs: REPORT_TIMEOUT_MS, headers: this.headers },
          );
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
  }

  get connected(): boolean {
    return this.reachability.kind === "connected";
  }

  /** The dependency's policy: cached, refreshed in the background, local while unreachable. */
  async policy(dependency: string): Promise<CallPolicy> {
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
   * Decides without the server from the last answer it gave for the dependency: while that
   * answer said the breaker is open, attempts are rejected until the time it named; otherwise
   * they go out. A known shortcoming: outcomes seen meanwhile do not open a local breaker.
   */
  private decideLocally(dependency: string): Admission {
    const openUntilMs = this.lastRejectUntil.get(dependency);
    if (openUntilMs !== undefined && Date.now() < openUntilMs) {
      return { kind: "reject", retryAtMs: openUntilMs };
    }
    return { kind: "local" };
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
    // The server must have counted this instance's earlier outcomes before it decides.
    if (this.reporter.busy) {
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
          // While probes are in flight the server names no time: hold off for one open wait's
          // worth of the attempt timeout, after which the local decision lets calls through.
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

  report(outcome: Omit<Outcome, "$typeName" | "$unknown">): void {
    this.reporter.add(outcome);
  }

  /** Sends every queued outcome (as far as the server can be reached). */
  async close(): Promise<void> {
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    this.reporter.resume();
    await this.reporter.settle();
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
    this.reporter.resume();
  }

  private markUnreachable(err: unknown): void {
    const previous = this.reachability;
    const failures = previous.kind === "unreachable" ? previous.failures + 1 : 1;
    // Full jitter over a growing cap spreads a fleet's reconnects after a restart.
    const capMs = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** (failures - 1));
    const waitMs = Math.round(capMs / 2 + (Math.random() * capMs) / 2);
    const error = err instanceof Error ? err.message : String(err);
    this.reachability = { kind: "unreachable", failures, retryAtMs: Date.now() + waitMs, error };
    if (previous.kind === "connected") {
      this.options.events.emit({ type: "control-plane", status: "unreachable", error });
    }
    // Queued outcomes are retried on this schedule even when no call comes along.
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
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
