import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import { AuditService } from "../gen/bulwark/v1/audit_pb.ts";
import { BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import { DeadLetterService } from "../gen/bulwark/v1/dead_letter_pb.ts";
import { IdempotencyService } from "../gen/bulwark/v1/idempotency_pb.ts";
import { PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { Health } from "../gen/grpc/health/v1/health_pb.ts";
import { canonicalJson, payloadHash } from "./audit/audit-chain.ts";
import { AuditLog, SERVER_PRODUCER } from "./audit/audit-log.ts";
import { AuditMirror } from "./audit/audit-mirror.ts";
import { AuditStore } from "./audit/audit-store.ts";
import { isLoopback } from "./config.ts";
import { AlertMonitor } from "./domain/alert-monitor.ts";
import { BreakerRegistry } from "./domain/breaker-registry.ts";
import type { BurnRateOptions } from "./domain/burn-rate-alerts.ts";
import { type DeadLetterAuditEntry, DeadLetterRegistry } from "./domain/dead-letter-registry.ts";
import { type Completion, IdempotencyLedger } from "./domain/idempotency-ledger.ts";
import { PolicyRegistry } from "./domain/policy-registry.ts";
import { EventHub } from "./events/event-hub.ts";
import { NatsJobRequeue } from "./events/job-requeue.ts";
import { NatsPublisher } from "./events/nats-publisher.ts";
import { registerDeadLetterMetrics } from "./observability/dead-letter-metrics.ts";
import { type HttpEndpoints, startHttpEndpoints } from "./observability/http-endpoints.ts";
import { ServerMetrics } from "./observability/metrics.ts";
import { auditService } from "./rpc/audit-service.ts";
import { breakerService, type DataPathObservers } from "./rpc/breaker-service.ts";
import { deadLetterService } from "./rpc/dead-letter-service.ts";
import { healthService } from "./rpc/health-service.ts";
import { idempotencyService } from "./rpc/idempotency-service.ts";
import { policyService } from "./rpc/policy-service.ts";
import { RpcBoundary } from "./rpc/rpc-boundary.ts";
import type { TokenRegistry } from "./security/token-registry.ts";
import { BreakerStore } from "./storage/breaker-store.ts";
import { openDatabase } from "./storage/database.ts";
import { DeadLetterStore } from "./storage/dead-letter-store.ts";
import { IdempotencyStore } from "./storage/idempotency-store.ts";
import { PolicyStore } from "./storage/policy-store.ts";
import { claimDatabase } from "./storage/server-lock.ts";
import { listen, type TlsFiles, type Transport } from "./transport.ts";

export interface ServerOptions {
  /** SQLite file of the operational state; created when missing. */
  dbPath: string;
  /**
   * SQLite file of the audit log, kept apart so it can live on write-once storage with its own
   * retention. Default: the operational file's path with `.audit` before its extension.
   */
  auditDbPath?: string | undefined;
  /** File holding the key for HMAC-SHA-256 payload hashes; plain SHA-256 when unset. */
  auditKeyFile?: string | undefined;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /**
   * Bearer tokens and their roles; every RPC but health checks then needs one. Unset: no
   * authentication, which the server allows only on a loopback address.
   */
  tokens?: TokenRegistry | undefined;
  /** Serve TLS with this certificate and key. */
  tls?: TlsFiles | undefined;
  /** Serve `/metrics`, `/healthz` and `/readyz` over HTTP here; not served when unset. */
  metrics?: { host: string; port: number } | undefined;
  /** Windows and threshold of the error-budget burn alerts; defaults in burn-rate-alerts.ts. */
  alerts?: Partial<BurnRateOptions> | undefined;
  /** NATS servers (comma-separated URLs) to publish events on; Watch only when unset. */
  natsUrl?: string | undefined;
  logger: Logger;
  /** Milliseconds since the Unix epoch; replaceable for tests. */
  clock?: () => number;
}

export interface BulwarkServer {
  /** `http://host:port`, what the SDK and Connect clients take. */
  url: string;
  port: number;
  /** Base URL of the metrics and health endpoints, when they are served. */
  metricsUrl: string | undefined;
  close(): Promise<void>;
}

/** Opens the database, resumes every breaker and starts serving. */
export async function startServer(options: ServerOptions): Promise<BulwarkServer> {
  const { logger } = options;
  const clock = options.clock ?? Date.now;
  if (options.tokens === undefined && !isLoopback(options.host)) {
    throw new Error(`refusing to serve ${options.host} without tokens: configure tokens first`);
  }
  const db = openDatabase(options.dbPath);
  let release: () => void;
  try {
    release = claimDatabase(db, clock());
  } catch (err) {
    db.close();
    throw err;
  }
  const auditKey =
    options.auditKeyFile === undefined ? undefined : readFileSync(options.auditKeyFile);
  const auditStore = new AuditStore(
    options.auditDbPath ?? defaultAuditPath(options.dbPath),
    auditKey,
  );
  if (auditStore.triggersRestored) {
    logger.error(
      "the audit table's append-only triggers were missing and have been put back; run Verify",
    );
  }
  const hub = new EventHub();
  const policies = new PolicyRegistry(new PolicyStore(db), hub, clock);
  const breakers = new BreakerRegistry(new BreakerStore(db), policies, hub, clock, logger);
  const nats =
    options.natsUrl === undefined ? undefined : NatsPublisher.start(options.natsUrl, logger);
  const unsubscribeNats = nats === undefined ? () => {} : hub.subscribe((e) => nats.publish(e));
  const mirror = nats === undefined ? undefined : new AuditMirror(nats, logger);
  const audit = new AuditLog(auditStore, auditKey, clock, (records) => mirror?.enqueue(records));
  // Every state change is audited right after it is committed, before the RPC that made it
  // answers. Known shortcoming: the audit file is a separate SQLite database, so a crash between
  // the two commits loses that one audit record while the change itself stays.
  const unsubscribeAudit = hub.subscribe((event) => {
    try {
      audit.recordDomainEvent(event);
    } catch (err) {
      logger.error({ err, eventId: event.eventId, kind: event.kind }, "audit append failed");
    }
  });
  const deadLetters = new DeadLetterRegistry(
    new DeadLetterStore(db),
    nats === undefined ? undefined : new NatsJobRequeue(nats),
    (entry) => {
      try {
        audit.append([deadLetterAuditInput(entry)], entry.principal);
      } catch (err) {
        logger.error({ err, eventId: entry.eventId, kind: entry.eventType }, "audit append failed");
      }
    },
    clock,
  );
  const ledger = new IdempotencyLedger(new IdempotencyStore(db), clock, logger, (completions) =>
    auditCompletions(audit, completions),
  );
  const shutdown = new AbortController();
  const metrics = new ServerMetrics({
    breakers: () => breakers.list(),
    processMetrics: options.metrics !== undefined,
  });
  registerDeadLetterMetrics(
    metrics.registry,
    () => deadLetters.counts(),
    () => policies.list().map((p) => p.dependency),
    nats,
  );
  const unsubscribeMetrics = hub.subscribe((event) => {
    if (event.kind === "breaker-transition") {
      metrics.recordTransition(event.transition.dependency, event.transition.to);
    }
  });
  const alerts = new AlertMonitor(
    policies,
    hub,
    clock,
    logger,
    (change) => metrics.setAlert(change.dependency, change.kind === "raised"),
    options.alerts,
  );
  const observers: DataPathObservers = {
    onAcquire: (dependency, decision) => metrics.recordAcquire(dependency, decision),
    onOutcomes: (outcomes) => {
      metrics.recordOutcomes(outcomes);
      alerts.observe(
        outcomes
          .filter((o) => o.result === "success" || o.result === "failure" || o.result === "timeout")
          .map((o) => ({
            dependency: o.dependency,
            failure: o.result !== "success",
            traceId: o.traceId,
          })),
      );
    },
  };

  let transport: Transport | undefined;
  let endpoints: HttpEndpoints | undefined;
  // Stops whatever has started, in reverse order; used by close() and by a failed start.
  const teardown = async () => {
    shutdown.abort();
    await endpoints?.close();
    await transport?.close();
    alerts.close();
    ledger.close();
    unsubscribeMetrics();
    unsubscribeNats();
    breakers.close();
    unsubscribeAudit();
    await nats?.close();
    release();
    db.close();
    auditStore.close();
  };
  try {
    transport = await listen({
      host: options.host,
      port: options.port,
      tls: options.tls,
      boundary: new RpcBoundary(logger, options.tokens, (method, code, durationMs) =>
        metrics.recordRpc(method, code, durationMs),
      ),
      routes: (router) => {
        router.service(PolicyService, policyService(policies));
        router.service(
          BreakerService,
          breakerService(breakers, policies, hub, shutdown.signal, observers),
        );
        router.service(AuditService, auditService(audit));
        router.service(DeadLetterService, deadLetterService(deadLetters));
        router.service(
          IdempotencyService,
          idempotencyService(ledger, (outcome) => metrics.recordIdempotencyBegin(outcome)),
        );
        router.service(
          Health,
          healthService(
            [
              PolicyService.typeName,
              BreakerService.typeName,
              AuditService.typeName,
              DeadLetterService.typeName,
              IdempotencyService.typeName,
            ],
            shutdown.signal,
          ),
        );
      },
    });
    if (options.metrics !== undefined) {
      endpoints = await startHttpEndpoints({
        ...options.metrics,
        metrics,
        ready: () => !shutdown.signal.aborted && db.open,
        onError: (err) => logger.error({ err }, "metrics endpoint failed"),
      });
    }
  } catch (err) {
    await teardown();
    throw err;
  }
  const scheme = options.tls === undefined ? "http" : "https";
  const url = `${scheme}://${options.host.includes(":") ? `[${options.host}]` : options.host}:${transport.port}`;
  if (options.tokens === undefined) {
    logger.warn(
      { host: options.host },
      "authentication is off: no tokens are configured, so the server only listens on loopback",
    );
  }
  logger.info(
    {
      url,
      port: transport.port,
      metricsUrl: endpoints?.url ?? null,
      db: options.dbPath,
      nats: options.natsUrl ?? null,
    },
    "listening",
  );

  let closing: Promise<void> | undefined;
  return {
    url,
    port: transport.port,
    metricsUrl: endpoints?.url,
    close() {
      closing ??= teardown().then(() => logger.info("closed"));
      return closing;
    },
  };
}

/**
 * `bulwark.db` → `bulwark.audit.db`; a path without an extension gets `.audit`; an in-memory
 * database gets an in-memory audit log.
 */
export function defaultAuditPath(dbPath: string): string {
  if (dbPath === ":memory:") return dbPath;
  const dot = dbPath.lastIndexOf(".");
  const slash = dbPath.lastIndexOf("/");
  return dot > slash + 1 ? `${dbPath.slice(0, dot)}.audit${dbPath.slice(dot)}` : `${dbPath}.audit`;
}

/**
 * The audit record of one step of a dead letter: keyed by the letter, in the job's trace, with
 * the letter as it stands after the step (its payload only as the hash).
 */
function deadLetterAuditInput(entry: DeadLetterAuditEntry) {
  const { payload: _payload, ...letter } = entry.letter;
  return {
    eventId: entry.eventId,
    eventType: entry.eventType,
    aggregateId: letter.letterId,
    payload: Buffer.from(canonicalJson({ ...letter, requestTraceId: entry.requestTraceId })),
    producer: SERVER_PRODUCER,
    traceId: letter.traceId,
    causationId: letter.causationId,
  };
}

/** Longest aggregate id of an audit record (the Append rule); longer ledger keys are cut. */
const MAX_AUDIT_AGGREGATE_LENGTH = 256;

/**
 * Records ledger completions in the audit log, one commit for a batch: `idempotency.completed` on
 * the aggregate `<scope>/<key>`, produced by the service that held the lease, with the
 * completion's principal, trace and cause. The payload holds the hashes of the request and of the
 * stored response, not the response. Returns the records' event ids, in order.
 */
function auditCompletions(audit: AuditLog, completions: Completion[]): string[] {
  const byPrincipal = new Map<string, number[]>();
  completions.forEach((c, i) => {
    const indexes = byPrincipal.get(c.principal);
    if (indexes === undefined) byPrincipal.set(c.principal, [i]);
    else indexes.push(i);
  });
  const eventIds: string[] = [];
  for (const [principal, indexes] of byPrincipal) {
    const records = audit.append(
      indexes.map((i) => {
        const c = completions[i]!;
        const r = c.record;
        const body = {
          scope: r.scope,
          key: r.key,
          requestHash: Buffer.from(r.requestHash).toString("hex"),
          responseHash: payloadHash(r.response, undefined),
          responseBytes: r.response.length,
          takeovers: r.takeovers,
          completedAtMs: r.completedAtMs,
        };
        return {
          eventId: "",
          eventType: "idempotency.completed",
          aggregateId: `${r.scope}/${r.key}`.slice(0, MAX_AUDIT_AGGREGATE_LENGTH),
          payload: Buffer.from(canonicalJson(body)),
          producer: r.holder,
          traceId: c.traceId,
          causationId: c.causationId,
        };
      }),
      principal,
    );
    indexes.forEach((i, j) => {
      eventIds[i] = records[j]?.eventId ?? "";
    });
  }
  return eventIds;
}
