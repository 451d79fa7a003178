/**
 * Validation of every request, in one place. Each RPC's request passes through one function here
 * before a handler touches the domain; it returns the request's values in domain terms or throws
 * InvalidArgumentError naming the field (its path in the request) and the rule it broke. Nothing
 * is stored before validation has passed for the whole request, batches included.
 */
import type { AppendRequest, QueryRequest } from "../../gen/bulwark/v1/audit_pb.ts";
import {
  type AcquireRequest,
  type ForceBreakerRequest,
  type GetBreakerRequest,
  type ListTransitionsRequest,
  type ReportRequest,
  type WatchRequest,
  ForceAction as WireForceAction,
} from "../../gen/bulwark/v1/breaker_pb.ts";
import { OutcomeResult } from "../../gen/bulwark/v1/breaker_types_pb.ts";
import type {
  GetDeadLetterRequest,
  ListDeadLettersRequest,
  RecordDeadLetterRequest,
  ReplayDeadLetterRequest,
  ResolveDeadLetterRequest,
} from "../../gen/bulwark/v1/dead_letter_pb.ts";
import type {
  AbandonRequest,
  BeginRequest,
  CompleteRequest,
  GetRecordRequest,
} from "../../gen/bulwark/v1/idempotency_pb.ts";
import type {
  DeletePolicyRequest,
  GetPolicyRequest,
  PutPolicyRequest,
} from "../../gen/bulwark/v1/policy_pb.ts";
import type { AppendInput } from "../audit/audit-log.ts";
import type { AuditQuery } from "../audit/audit-store.ts";
import type { CountedResult, ForceAction } from "../domain/breaker-engine.ts";
import type { ReportedOutcome } from "../domain/breaker-registry.ts";
import type { DeadLetterQuery, NewDeadLetter } from "../domain/dead-letter.ts";
import { InvalidArgumentError } from "../domain/errors.ts";
import {
  type BeginInput,
  DEFAULT_LEASE_MS,
  DEFAULT_RETENTION_MS,
  MAX_KEY_BYTES,
  MAX_LEASE_MS,
  MAX_RESPONSE_BYTES,
  MAX_RETENTION_MS,
  MIN_LEASE_MS,
  MIN_RETENTION_MS,
  REQUEST_HASH_BYTES,
  scopeOf,
} from "../domain/idempotency-ledger.ts";
import { assertName, assertStoredName, quoted } from "../domain/names.ts";
import { MAX_JOB_PAYLOAD_BYTES, type PolicySpec } from "../domain/policy.ts";
import { normalizePolicy } from "../domain/policy-validation.ts";
import { reasonFromWire, statusFromWire } from "../wire/dead-letter-convert.ts";

/** Largest Report batch: bounds the work one request makes the server do in one turn. */
export const MAX_REPORT_BATCH = 1_000;
/** Largest Append batch: one transaction, kept short so other appenders are not held up. */
export const MAX_APPEND_BATCH = 1_000;
/** Largest payload of one audit entry: audit payloads are events, not documents. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;
/** Default and largest page of ListTransitions and audit Query. */
export const DEFAULT_PAGE_LIMIT = 100;
export const MAX_PAGE_LIMIT = 1_000;
/** Length caps of free-text identifiers (trace, request, permit and event ids, error types). */
const MAX_ID_LENGTH = 128;
/** Length cap of an audit aggregate id (order numbers, composite keys). */
const MAX_AGGREGATE_LENGTH = 256;
/** Attempts per call the SDK may number; policies allow at most 10. */
const MAX_ATTEMPT = 1_000;
/** A day: the longest latency or Retry-After an outcome may carry. */
const MAX_DURATION_MS = 86_400_000;
const TRACE_ID = /^[0-9a-f]{32}$/;
/** Length cap of a ForceBreaker reason: a sentence or two for the audit log, not a document. */
export const MAX_FORCE_REASON_LENGTH = 512;

/** ForceBreaker actions as the domain names them. */
const FORCE_ACTIONS: Record<number, ForceAction | undefined> = {
  [WireForceAction.FORCED_OPEN]: "forced-open",
  [WireForceAction.DISABLED]: "disabled",
  [WireForceAction.METRICS_ONLY]: "metrics-only",
  [WireForceAction.RESET]: "reset",
};
/** In a `u` regex, surrogate pairs are one code point: this matches only unpaired halves. */
const LONE_SURROGATE = /\p{Cs}/u;

/** Each known outcome result: its name (metrics, logs) and how the breaker counts it. */
export const RESULTS: Record<number, { name: string; counted: CountedResult } | undefined> = {
  [OutcomeResult.SUCCESS]: { name: "success", counted: "success" },
  [OutcomeResult.FAILURE]: { name: "failure", counted: "failure" },
  [OutcomeResult.TIMEOUT]: { name: "timeout", counted: "timeout" },
  [OutcomeResult.REJECTED]: { name: "rejected", counted: "not-counted" },
  [OutcomeResult.CANCELLED]: { name: "cancelled", counted: "not-counted" },
  [OutcomeResult.IGNORED]: { name: "ignored", counted: "not-counted" },
};

function int(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}]; got ${value}`);
  }
  return value;
}

function text(field: string, value: string, maxLength: number): string {
  if (value.length > maxLength) {
    throw new InvalidArgumentError(
      field,
      `must be at most ${maxLength} characters; got ${value.length}`,
    );
  }
  return value;
}

/** A service name; empty only where the caller's service is optional. */
function service(field: string, value: string, required: boolean): string {
  if (value !== "" || required) assertName(field, value);
  return value;
}

function traceId(field: string, value: string, required: boolean): string {
  if (value === "" && !required) return value;
  if (!TRACE_ID.test(value)) {
    throw new InvalidArgumentError(field, `must be 32 lowercase hex digits; got ${quoted(value)}`);
  }
  return value;
}

/** A non-negative int64 that fits a JavaScript number (revisions, sequences, Unix ms). */
function count(field: string, value: bigint): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgumentError(
      field,
      `must be in [0, ${Number.MAX_SAFE_INTEGER}]; got ${value}`,
    );
  }
  return Number(value);
}

function pageLimit(value: number): number {
  return value === 0 ? DEFAULT_PAGE_LIMIT : int("limit", value, 1, MAX_PAGE_LIMIT);
}

export function validatePutPolicy(req: PutPolicyRequest): {
  spec: PolicySpec;
  expectedRevision: number | undefined;
} {
  const spec = normalizePolicy(req.policy);
  const expectedRevision =
    req.expectedRevision === undefined
      ? undefined
      : count("expected_revision", req.expectedRevision);
  return { spec, expectedRevision };
}

export function validateGetPolicy(req: GetPolicyRequest): string {
  assertStoredName("dependency", req.dependency);
  return req.dependency;
}

export function validateDeletePolicy(req: DeletePolicyRequest): {
  dependency: string;
  expectedRevision: number | undefined;
} {
  assertStoredName("dependency", req.dependency);
  const expectedRevision =
    req.expectedRevision === undefined
      ? undefined
      : count("expected_revision", req.expectedRevision);
  return { dependency: req.dependency, expectedRevision };
}

export function validateAcquire(req: AcquireRequest): AcquireRequest {
  assertName("dependency", req.dependency);
  service("service", req.service, true);
  int("attempt", req.attempt, 0, MAX_ATTEMPT);
  text("trace_id", req.traceId, MAX_ID_LENGTH);
  text("request_id", req.requestId, MAX_ID_LENGTH);
  return req;
}

/** The whole batch is checked before any of it is counted, so a bad batch changes no window. */
export function validateReport(req: ReportRequest): ReportedOutcome[] {
  if (req.outcomes.length === 0 || req.outcomes.length > MAX_REPORT_BATCH) {
    throw new InvalidArgumentError(
      "outcomes",
      `must hold 1 to ${MAX_REPORT_BATCH} outcomes; got ${req.outcomes.length}`,
    );
  }
  return req.outcomes.map((o, i) => {
    const at = `outcomes[${i}]`;
    assertName(`${at}.dependency`, o.dependency);
    service(`${at}.service`, o.service, true);
    const result = RESULTS[o.result]?.counted;
    if (result === undefined) {
      throw new InvalidArgumentError(`${at}.result`, `must be a known result; got ${o.result}`);
    }
    int(`${at}.attempt`, o.attempt, 0, MAX_ATTEMPT);
    int(`${at}.latency_ms`, o.latencyMs, 0, MAX_DURATION_MS);
    int(`${at}.retry_after_ms`, o.retryAfterMs, 0, MAX_DURATION_MS);
    int(`${at}.status_code`, o.statusCode, 0, 999);
    text(`${at}.request_id`, o.requestId, MAX_ID_LENGTH);
    return {
      dependency: o.dependency,
      service: o.service,
      permitId: text(`${at}.permit_id`, o.permitId, MAX_ID_LENGTH),
      result,
      errorType: text(`${at}.error_type`, o.errorType, MAX_ID_LENGTH),
      latencyMs: o.latencyMs,
      statusCode: o.statusCode,
      retryAfterMs: o.retryAfterMs,
      traceId: text(`${at}.trace_id`, o.traceId, MAX_ID_LENGTH),
      causationId: text(`${at}.causation_id`, o.causationId, MAX_ID_LENGTH),
    };
  });
}

/**
 * The request's form only: whether `service` must be set depends on the policy's scope, which
 * the registry checks (still before anything changes).
 */
export function validateForceBreaker(req: ForceBreakerRequest): {
  dependency: string;
  service: string;
  action: ForceAction;
  reason: string;
} {
  assertName("dependency", req.dependency);
  service("service", req.service, false);
  const action = FORCE_ACTIONS[req.action];
  if (action === undefined) {
    throw new InvalidArgumentError(
      "action",
      req.action === WireForceAction.UNSPECIFIED
        ? "is required"
        : `must be a known action; got ${req.action}`,
    );
  }
  if (req.reason.trim() === "") throw new InvalidArgumentError("reason", "is required");
  const length = [...req.reason].length;
  if (length > MAX_FORCE_REASON_LENGTH) {
    throw new InvalidArgumentError(
      "reason",
      `must be at most ${MAX_FORCE_REASON_LENGTH} characters; got ${length}`,
    );
  }
  return { dependency: req.dependency, service: req.service, action, reason: req.reason };
}

export function validateGetBreaker(req: GetBreakerRequest): {
  dependency: string;
  service: string;
} {
  assertName("dependency", req.dependency);
  return { dependency: req.dependency, service: service("service", req.service, false) };
}

export function validateListTransitions(req: ListTransitionsRequest): {
  dependency: string;
  afterSequence: number;
  limit: number;
} {
  if (req.dependency !== "") assertName("dependency", req.dependency);
  return {
    dependency: req.dependency,
    afterSequence: count("after_sequence", req.afterSequence),
    limit: pageLimit(req.limit),
  };
}

export function validateWatch(req: WatchRequest): Set<string> {
  if (req.dependencies.length > MAX_PAGE_LIMIT) {
    throw new InvalidArgumentError(
      "dependencies",
      `must name at most ${MAX_PAGE_LIMIT} dependencies; got ${req.dependencies.length}`,
    );
  }
  req.dependencies.forEach((d, i) => {
    assertName(`dependencies[${i}]`, d);
  });
  return new Set(req.dependencies);
}

export function validateAppend(req: AppendRequest): AppendInput[] {
  if (req.entries.length === 0 || req.entries.length > MAX_APPEND_BATCH) {
    throw new InvalidArgumentError(
      "entries",
      `must hold 1 to ${MAX_APPEND_BATCH} entries; got ${req.entries.length}`,
    );
  }
  return req.entries.map((e, i) => {
    const at = `entries[${i}]`;
    if (e.eventType === "") throw new InvalidArgumentError(`${at}.event_type`, "is required");
    assertName(`${at}.event_type`, e.eventType);
    if (e.payload.byteLength > MAX_PAYLOAD_BYTES) {
      throw new InvalidArgumentError(
        `${at}.payload`,
        `must be at most ${MAX_PAYLOAD_BYTES} bytes; got ${e.payload.byteLength}`,
      );
    }
    return {
      eventId: text(`${at}.event_id`, e.eventId, MAX_ID_LENGTH),
      eventType: e.eventType,
      aggregateId: text(`${at}.aggregate_id`, e.aggregateId, MAX_AGGREGATE_LENGTH),
      payload: e.payload,
      producer: text(`${at}.producer`, e.producer, MAX_ID_LENGTH),
      traceId: traceId(`${at}.trace_id`, e.traceId, false),
      causationId: text(`${at}.causation_id`, e.causationId, MAX_ID_LENGTH),
    };
  });
}

export function validateQuery(req: QueryRequest): AuditQuery {
  return {
    traceId: traceId("trace_id", req.traceId, false),
    aggregateId: text("aggregate_id", req.aggregateId, MAX_AGGREGATE_LENGTH),
    eventType: text("event_type", req.eventType, MAX_ID_LENGTH),
    fromMs: count("from_unix_ms", req.fromUnixMs),
    toMs: count("to_unix_ms", req.toUnixMs),
    afterSequence: count("after_sequence", req.afterSequence),
    limit: pageLimit(req.limit),
  };
}

export function validateTrace(req: { traceId: string }): string {
  return traceId("trace_id", req.traceId, true);
}

/** An idempotency key: 1..MAX_KEY_BYTES bytes of UTF-8. */
function idempotencyKey(field: string, value: string): string {
  if (value === "") throw new InvalidArgumentError(field, "is required");
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes > MAX_KEY_BYTES) {
    throw new InvalidArgumentError(field, `must be at most ${MAX_KEY_BYTES} bytes; got ${bytes}`);
  }
  // A lone surrogate would be stored as U+FFFD and match another key.
  if (LONE_SURROGATE.test(value)) {
    throw new InvalidArgumentError(field, "must be well-formed UTF-8 text");
  }
  return value;
}

/** The stored scope of an idempotency request: the service's own, or the named shared one. */
function idempotencyScope(req: { service: string; sharedScope: string }): string {
  assertName("service", req.service);
  if (req.sharedScope !== "") assertName("shared_scope", req.sharedScope);
  return scopeOf(req.service, req.sharedScope);
}

function leaseToken(value: string): string {
  if (value === "") throw new InvalidArgumentError("lease_token", "is required");
  return text("lease_token", value, MAX_ID_LENGTH);
}

export function validateBegin(req: BeginRequest): BeginInput & {
  traceId: string;
  causationId: string;
} {
  const scope = idempotencyScope(req);
  const key = idempotencyKey("key", req.key);
  if (req.requestHash.byteLength !== REQUEST_HASH_BYTES) {
    throw new InvalidArgumentError(
      "request_hash",
      `must be a SHA-256 digest of ${REQUEST_HASH_BYTES} bytes; got ${req.requestHash.byteLength} bytes`,
    );
  }
  const leaseMs =
    req.leaseMs === 0 ? DEFAULT_LEASE_MS : int("lease_ms", req.leaseMs, MIN_LEASE_MS, MAX_LEASE_MS);
  if (
    req.retentionMs !== 0n &&
    (req.retentionMs < BigInt(MIN_RETENTION_MS) || req.retentionMs > BigInt(MAX_RETENTION_MS))
  ) {
    throw new InvalidArgumentError(
      "retention_ms",
      `must be 0 (the default) or in [${MIN_RETENTION_MS}, ${MAX_RETENTION_MS}]; got ${req.retentionMs}`,
    );
  }
  return {
    service: req.service,
    scope,
    key,
    requestHash: req.requestHash,
    leaseMs,
    retentionMs: req.retentionMs === 0n ? DEFAULT_RETENTION_MS : Number(req.retentionMs),
    traceId: traceId("trace_id", req.traceId, false),
    causationId: text("causation_id", req.causationId, MAX_ID_LENGTH),
  };
}

export function validateComplete(req: CompleteRequest): {
  leaseToken: string;
  response: Uint8Array;
  traceId: string;
  causationId: string;
} {
  const token = leaseToken(req.leaseToken);
  if (req.response.byteLength > MAX_RESPONSE_BYTES) {
    throw new InvalidArgumentError(
      "response",
      `must be at most ${MAX_RESPONSE_BYTES} bytes; got ${req.response.byteLength}`,
    );
  }
  return {
    leaseToken: token,
    response: req.response,
    traceId: traceId("trace_id", req.traceId, false),
    causationId: text("causation_id", req.causationId, MAX_ID_LENGTH),
  };
}

export function validateAbandon(req: AbandonRequest): string {
  return leaseToken(req.leaseToken);
}

export function validateGetRecord(req: GetRecordRequest): { scope: string; key: string } {
  return { scope: idempotencyScope(req), key: idempotencyKey("key", req.key) };
}

/** A dead letter id: chosen by the worker, safe in logs and subjects. */
const LETTER_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
/** Length cap of a dead letter's last error: enough for a message and a short stack. */
const MAX_ERROR_LENGTH = 4_096;
/** Length cap of a resolution reason. */
const MAX_RESOLUTION_LENGTH = 1_024;
/** Deliveries a letter may name: far beyond max_deliveries, for jobs whose workers crashed. */
const MAX_DELIVERY_COUNT = 1_000_000;

function letterId(field: string, value: string, required: boolean): string {
  if (value === "" && !required) return value;
  if (!LETTER_ID.test(value)) {
    throw new InvalidArgumentError(
      field,
      `must be 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit; got ${quoted(value)}`,
    );
  }
  return value;
}

export function validateRecordDeadLetter(req: RecordDeadLetterRequest): NewDeadLetter {
  const l = req.letter;
  if (l === undefined) throw new InvalidArgumentError("letter", "is required");
  assertName("letter.dependency", l.dependency);
  if (l.jobId === "") throw new InvalidArgumentError("letter.job_id", "is required");
  const reason = reasonFromWire(l.reason);
  if (reason === undefined) {
    throw new InvalidArgumentError("letter.reason", `must be a known reason; got ${l.reason}`);
  }
  if (l.payload.byteLength > MAX_JOB_PAYLOAD_BYTES) {
    throw new InvalidArgumentError(
      "letter.payload",
      `must be at most ${MAX_JOB_PAYLOAD_BYTES} bytes; got ${l.payload.byteLength}`,
    );
  }
  // Output-only fields: the server owns them.
  const outputOnly: [string, boolean][] = [
    ["letter.status", l.status !== 0],
    ["letter.payload_hash", l.payloadHash !== ""],
    ["letter.recorded_by", l.recordedBy !== ""],
    ["letter.replay_count", l.replayCount !== 0],
    ["letter.replayed_at_unix_ms", l.replayedAtUnixMs !== 0n],
    ["letter.replayed_by", l.replayedBy !== ""],
    ["letter.replay_job_id", l.replayJobId !== ""],
    ["letter.resolved_at_unix_ms", l.resolvedAtUnixMs !== 0n],
    ["letter.resolved_by", l.resolvedBy !== ""],
    ["letter.resolution", l.resolution !== ""],
  ];
  for (const [field, set] of outputOnly) {
    if (set) throw new InvalidArgumentError(field, "is output only and must be left unset");
  }
  return {
    letterId: letterId("letter.letter_id", l.letterId, true),
    dependency: l.dependency,
    jobId: text("letter.job_id", l.jobId, MAX_ID_LENGTH),
    reason,
    payload: l.payload,
    attempts: int("letter.attempts", l.attempts, 0, MAX_DELIVERY_COUNT),
    lastError: text("letter.last_error", l.lastError, MAX_ERROR_LENGTH),
    errorType: text("letter.error_type", l.errorType, MAX_ID_LENGTH),
    traceId: traceId("letter.trace_id", l.traceId, false),
    causationId: text("letter.causation_id", l.causationId, MAX_ID_LENGTH),
    idempotencyKey:
      l.idempotencyKey === "" ? "" : idempotencyKey("letter.idempotency_key", l.idempotencyKey),
    enqueuedAtMs: count("letter.enqueued_at_unix_ms", l.enqueuedAtUnixMs),
    deadLetteredAtMs: count("letter.dead_lettered_at_unix_ms", l.deadLetteredAtUnixMs),
    dlqSequence: count("letter.dlq_sequence", l.dlqSequence),
    replayOf: letterId("letter.replay_of", l.replayOf, false),
  };
}

export function validateListDeadLetters(req: ListDeadLettersRequest): DeadLetterQuery {
  if (req.dependency !== "") assertName("dependency", req.dependency);
  const status = req.status === 0 ? undefined : statusFromWire(req.status);
  if (req.status !== 0 && status === undefined) {
    throw new InvalidArgumentError("status", `must be a known status; got ${req.status}`);
  }
  return {
    dependency: req.dependency,
    status,
    traceId: traceId("trace_id", req.traceId, false),
    afterCursor: count("after_cursor", req.afterCursor),
    limit: pageLimit(req.limit),
  };
}

export function validateGetDeadLetter(req: GetDeadLetterRequest): string {
  return letterId("letter_id", req.letterId, true);
}

export function validateReplayDeadLetter(req: ReplayDeadLetterRequest): {
  letterId: string;
  force: boolean;
} {
  return { letterId: letterId("letter_id", req.letterId, true), force: req.force };
}

export function validateResolveDeadLetter(req: ResolveDeadLetterRequest): {
  letterId: string;
  reason: string;
} {
  const id = letterId("letter_id", req.letterId, true);
  if (req.reason.trim() === "") throw new InvalidArgumentError("reason", "is required");
  return { letterId: id, reason: text("reason", req.reason, MAX_RESOLUTION_LENGTH) };
}
