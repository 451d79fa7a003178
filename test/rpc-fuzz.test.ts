/**
 * Property-based fuzzing of every RPC. Well-typed but hostile messages go through a gRPC client;
 * malformed bodies are posted as raw Connect requests over HTTP/1.1. Every call must get a status
 * within CALL_TIMEOUT_MS (never a dropped connection or a hang) that is a success or a specific
 * error, never Internal or Unknown; the only exceptions are the few answers gRPC prescribes for
 * undecodable wire input (PROTOCOL_ANSWERS). The server must stay SERVING, and nothing invalid
 * may be stored. A failure prints fast-check's seed and path; `FUZZ_SEED=<seed>` with
 * `-t "<test name>"` replays one property (the server's state differs, so not always exactly).
 */
import { randomUUID } from "node:crypto";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescService,
  fromBinary,
  fromJsonString,
  type JsonValue,
  type MessageInitShape,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { type CallOptions, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type AppendRequestSchema,
  AuditService,
  type QueryRequestSchema,
  type TraceRequestSchema,
} from "../gen/bulwark/v1/audit_pb.ts";
import {
  AcquireDecision,
  type AcquireRequestSchema,
  BreakerService,
  type ForceBreakerRequestSchema,
  type GetBreakerRequestSchema,
  type ListTransitionsRequestSchema,
  type ReportRequestSchema,
  type WatchRequestSchema,
} from "../gen/bulwark/v1/breaker_pb.ts";
import { BreakerState, type BreakerTransition } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  DeadLetterService,
  type GetDeadLetterRequestSchema,
  type ListDeadLettersRequestSchema,
  type RecordDeadLetterRequestSchema,
  type ReplayDeadLetterRequestSchema,
  type ResolveDeadLetterRequestSchema,
} from "../gen/bulwark/v1/dead_letter_pb.ts";
import {
  type AbandonRequestSchema,
  type BeginRequestSchema,
  type CompleteRequestSchema,
  type GetRecordRequestSchema,
  IdempotencyService,
} from "../gen/bulwark/v1/idempotency_pb.ts";
import {
  type DeletePolicyRequestSchema,
  type GetPolicyRequestSchema,
  PolicyService,
  type PutPolicyRequestSchema,
} from "../gen/bulwark/v1/policy_pb.ts";
import {
  Health,
  type HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/grpc/health/v1/health_pb.ts";
import { type Clients, clientsFor, startTestServer, testPolicy } from "./harness.ts";

/** An answer slower than this counts as a hang. */
const CALL_TIMEOUT_MS = 5_000;
/** Shrink steps per failure: enough for a readable counterexample, bounded in time. */
const MAX_SHRINKS = 200;
/** Per-test limit of vitest; a failing property also spends time shrinking. */
const TEST_TIMEOUT_MS = 60_000;
const REPLAY = process.env.FUZZ_SEED === undefined ? {} : { seed: Number(process.env.FUZZ_SEED) };

/** Error codes that name a problem with the input or the stored state: the only ones allowed. */
const SPECIFIC_CODES: ReadonlySet<Code> = new Set([
  Code.InvalidArgument,
  Code.NotFound,
  Code.FailedPrecondition,
  Code.ResourceExhausted,
  Code.OutOfRange,
  Code.AlreadyExists,
]);
/** The same codes as the Connect protocol spells them in JSON error bodies. */
const SPECIFIC_CODE_NAMES: ReadonlySet<string> = new Set([
  "invalid_argument",
  "not_found",
  "failed_precondition",
  "resource_exhausted",
  "out_of_range",
  "already_exists",
]);

/**
 * proto/bulwark/v1/policy.proto, Policy.dependency: 1 to 128 letters, digits, '.', '_' and '-',
 * starting with a letter or digit. Calling services follow the same rule (server/domain/names.ts).
 */
const DOCUMENTED_DEPENDENCY = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** A breaker's service: the rule above, or empty for a dependency-wide breaker. */
const DOCUMENTED_SERVICE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,127})?$/;

/** Dependencies that get a policy before fuzzing, so hostile calls reach the breaker engine. */
const PER_SERVICE = "fuzz.per-service";
const POOL = ["fuzz.a", "fuzz.b", "fuzz_c-1", "0fuzz", PER_SERVICE];
const SERVICES = ["svc-a", "svc-b", "Svc.C"];
const TRACES = ["0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"];
/** The trace causal chains are appended under, so Trace meets deep causal trees. */
const CHAIN_TRACE = "5ce0e9a56015fec5aadfa328ae398115";
/** Event ids reused across calls, as a buggy or replaying client would. */
const REUSED_IDS = ["7d444840-9dc0-11d1-b245-5ffdce74fad2", "not-a-uuid"];

let server: Awaited<ReturnType<typeof startTestServer>>;
let rpc: Clients;
let health: ReturnType<typeof createClient<typeof Health>>;
let letters: ReturnType<typeof createClient<typeof DeadLetterService>>;
let ledger: ReturnType<typeof createClient<typeof IdempotencyService>>;

/** (Re)stores the pooled policies: fuzzed Puts and Deletes change or remove them. */
async function seedPolicies(): Promise<void> {
  for (const dependency of POOL) {
    const breaker = { scope: dependency === PER_SERVICE ? 2 : 1, openWaitMs: 50 };
    await rpc.policies.putPolicy({ policy: testPolicy(dependency, { breaker }) });
  }
}

beforeAll(async () => {
  server = await startTestServer();
  rpc = clientsFor(server.url, "fuzzer");
  health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
  letters = createClient(DeadLetterService, createGrpcTransport({ baseUrl: server.url }));
  ledger = createClient(IdempotencyService, createGrpcTransport({ baseUrl: server.url }));
  await seedPolicies();
});
afterAll(async () => {
  await server?.cleanup();
});

// ---------------------------------------------------------------------------------------------
// Arbitraries for well-typed but hostile values.

const INT32_MIN = -(2 ** 31);
const INT32_MAX = 2 ** 31 - 1;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

const anyInt32 = fc.oneof(
  fc.constantFrom(0, 1, -1, INT32_MAX, INT32_MIN, 1_000, 1_001, 65_536, 86_400_001),
  fc.integer({ min: INT32_MIN, max: INT32_MAX }),
);
/** Mostly in [min, max] so requests get past validation, sometimes any int32. */
const int32In = (min: number, max: number) =>
  fc.oneof({ weight: 9, arbitrary: fc.integer({ min, max }) }, { weight: 1, arbitrary: anyInt32 });
const anyInt64 = fc.oneof(
  fc.constantFrom(0n, 1n, -1n, INT64_MAX, INT64_MIN, MAX_SAFE, MAX_SAFE + 1n),
  fc.bigInt({ min: INT64_MIN, max: INT64_MAX }),
  fc.bigInt({ min: 0n, max: 1_000n }),
);
const anyDouble = fc.oneof(
  fc.constantFrom(Number.NaN, Infinity, -Infinity, -0, 0, Number.MAX_VALUE, Number.MIN_VALUE, 100),
  fc.double(),
);
const doubleIn = (min: number, max: number) =>
  fc.oneof(
    { weight: 9, arbitrary: fc.double({ min, max, noNaN: true }) },
    { weight: 1, arbitrary: anyDouble },
  );
/** Enum numbers: mostly the declared ones, sometimes unknown ones. */
const enumUpTo = (max: number) =>
  fc.oneof(
    { weight: 9, arbitrary: fc.integer({ min: 0, max }) },
    { weight: 1, arbitrary: fc.oneof(fc.constant(max + 1), anyInt32) },
  );
const optional = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 3 });

/** Short hostile strings: empty, whitespace, NATS wildcards, unicode, lone surrogates. */
const shortHostile = fc.oneof(
  fc.constantFrom("", " ", "*", ">", "a.*", "a.>", "\t\n", "a b", ".", "-a", "a\u0000b", "é"),
  fc.constantFrom("🙂", "\u202e", "ａ", "\ud800", "a".repeat(128), "a".repeat(129)),
  fc.string({ maxLength: 32 }),
  fc.string({ unit: "grapheme", maxLength: 32 }),
  fc.string({ unit: "binary", maxLength: 32 }),
);
const hostileString = fc.oneof(
  { weight: 5, arbitrary: shortHostile },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.string({ unit: "grapheme", minLength: 1, maxLength: 3 }), fc.nat(5_000))
      .map(([unit, n]) => unit.repeat(n).slice(0, 5_000)),
  },
);
/** Names the documented pattern accepts, capitals included. */
const validName = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/),
  fc.constantFrom("Fuzz.Mixed", "a".repeat(128), `Z${"-".repeat(127)}`),
);
const nameFrom = (pool: readonly string[], hostile: fc.Arbitrary<string>) =>
  fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...pool) },
    { weight: 2, arbitrary: validName },
    { weight: 3, arbitrary: hostile },
  );
const dependency = nameFrom(POOL, hostileString);
const service = nameFrom(SERVICES, hostileString);
const hex32 = fc.stringMatching(/^[0-9a-f]{32}$/);
const traceId = fc.oneof(
  fc.constant(""),
  fc.constantFrom(...TRACES, CHAIN_TRACE),
  hex32,
  hex32.map((s) => s.toUpperCase()),
  hex32.map((s) => s.slice(1)),
  shortHostile,
);
/** Fresh event ids: empty (the server picks one) or a UUID unlikely to have been used. */
const freshEventId = fc.oneof(
  { weight: 2, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.noBias(fc.uuid()) },
);
const eventId = fc.oneof(
  { weight: 9, arbitrary: freshEventId },
  { weight: 1, arbitrary: fc.constantFrom(...REUSED_IDS) },
);
/** Arrays up to `max` elements: mostly short, sometimes anywhere up to the maximum. */
const arrayUpTo = <T>(arb: fc.Arbitrary<T>, max: number, minLength = 0) =>
  fc.oneof(
    fc.array(arb, { minLength, maxLength: 8 }),
    fc.array(arb, { minLength, maxLength: max, size: "max" }),
  );

type Init<S extends DescMessage> = MessageInitShape<S>;

const policy = fc.record(
  {
    dependency,
    revision: anyInt64,
    sla: fc.record({
      latencyObjectiveMs: int32In(1, 3_600_000),
      availabilityTargetPercent: doubleIn(0, 100),
    }),
    timeoutMs: int32In(1, 10_000),
    deadlineMs: optional(int32In(1, 600_000)),
    retry: fc.record(
      {
        maxAttempts: optional(int32In(1, 10)),
        initialBackoffMs: optional(int32In(0, 60_000)),
        maxBackoffMs: optional(int32In(0, 60_000)),
        backoffMultiplier: optional(doubleIn(1, 10)),
        jitter: enumUpTo(3),
        maxRetryAfterMs: optional(int32In(0, 600_000)),
      },
      { requiredKeys: [] },
    ),
    breaker: fc.record(
      {
        windowSize: optional(int32In(1, 10_000)),
        minimumCalls: optional(int32In(1, 100)),
        failureRateThresholdPercent: optional(doubleIn(0, 100)),
        consecutiveFailures: optional(int32In(0, 10_000)),
        openWaitMs: optional(int32In(1, 3_600_000)),
        openWaitMultiplier: optional(doubleIn(1, 10)),
        maxOpenWaitMs: optional(int32In(1, 3_600_000)),
        halfOpenPermits: optional(int32In(1, 100)),
        scope: enumUpTo(2),
        windowKind: enumUpTo(2),
        windowDurationMs: optional(
          fc.oneof(
            fc.integer({ min: 1, max: 3_600 }).map((s) => s * 1_000),
            int32In(0, 3_600_000),
          ),
        ),
        slowCallMs: optional(int32In(0, 10_000)),
        slowCallRateThresholdPercent: optional(doubleIn(0, 100)),
        maxRetryAfterOpenMs: optional(int32In(0, 3_600_000)),
      },
      { requiredKeys: [] },
    ),
    queue: fc.option(
      fc.record(
        {
          maxDeliveries: optional(int32In(1, 100)),
          workerInitialBackoffMs: optional(int32In(0, 3_600_000)),
          workerMaxBackoffMs: optional(int32In(0, 3_600_000)),
          maxAgeMs: optional(fc.oneof(fc.bigInt({ min: 1_000n, max: 2_592_000_000n }), anyInt64)),
          maxJobs: optional(int32In(1, 10_000_000)),
          maxPayloadBytes: optional(int32In(1, 1_048_576)),
          ackWaitMs: optional(int32In(1_000, 3_600_000)),
        },
        { requiredKeys: [] },
      ),
      { nil: undefined },
    ),
    updatedAtUnixMs: anyInt64,
    updatedBy: hostileString,
  },
  { requiredKeys: ["dependency", "sla", "timeoutMs"] },
);
const revision = fc.oneof(fc.bigInt({ min: 0n, max: 5n }), anyInt64);

const putPolicy: fc.Arbitrary<Init<typeof PutPolicyRequestSchema>> = fc.record(
  { policy: fc.option(policy, { nil: undefined, freq: 20 }), expectedRevision: optional(revision) },
  { requiredKeys: ["policy"] },
);
const getPolicy: fc.Arbitrary<Init<typeof GetPolicyRequestSchema>> = fc.record({ dependency });
const deletePolicy: fc.Arbitrary<Init<typeof DeletePolicyRequestSchema>> = fc.record(
  { dependency, expectedRevision: optional(revision) },
  { requiredKeys: ["dependency"] },
);
const acquire: fc.Arbitrary<Init<typeof AcquireRequestSchema>> = fc.record({
  dependency,
  service,
  attempt: int32In(0, 5),
  traceId,
  requestId: hostileString,
});

/** An outcome that passes validation, to make batches that count. */
const cleanOutcome = fc.record({
  dependency: fc.constantFrom(...POOL),
  // Many distinct callers, as a client inventing service names would send.
  service: fc.oneof(
    fc.constantFrom(...SERVICES),
    validName,
    fc.nat(99_999).map((n) => `svc-${n}`),
  ),
  attempt: fc.integer({ min: 0, max: 5 }),
  permitId: fc.oneof(fc.constant(""), fc.uuid()),
  result: fc.integer({ min: 1, max: 6 }),
  errorType: fc.constantFrom("", "http_503", "ECONNRESET"),
  // 429 and 503 often, so the back-off signal opens and extends breakers during the run.
  statusCode: fc.oneof(fc.constantFrom(429, 503), fc.integer({ min: 0, max: 999 })),
  latencyMs: fc.integer({ min: 0, max: 60_000 }),
  retryAfterMs: fc.integer({ min: 0, max: 60_000 }),
  traceId: fc.constantFrom("", ...TRACES),
  requestId: fc.constantFrom("", "r-1"),
  causationId: fc.oneof(fc.constant(""), fc.uuid()),
});
const hostileOutcome = fc.record(
  {
    dependency: nameFrom(POOL, shortHostile),
    service: nameFrom(SERVICES, shortHostile),
    attempt: int32In(0, 5),
    permitId: shortHostile,
    result: enumUpTo(6),
    errorType: shortHostile,
    statusCode: int32In(0, 999),
    latencyMs: int32In(0, 60_000),
    retryAfterMs: int32In(0, 60_000),
    traceId,
    requestId: shortHostile,
    causationId: shortHostile,
  },
  { requiredKeys: [] },
);
const report: fc.Arbitrary<Init<typeof ReportRequestSchema>> = fc.record({
  outcomes: fc.oneof(arrayUpTo(cleanOutcome, 1_000, 1), arrayUpTo(hostileOutcome, 1_200)),
});
/** An attempt as the SDK makes it: Acquire, then its outcome somewhere in the next batch. */
const acquireThenReport = fc.record({
  dependency: fc.constantFrom(...POOL),
  service: fc.constantFrom(...SERVICES),
  result: fc.integer({ min: 1, max: 6 }),
  // Where the probe's outcome goes in the batch: mostly early, as the SDK flushes in order.
  at: fc.nat(16),
  batch: arrayUpTo(cleanOutcome, 999),
});
type Attempt = typeof acquireThenReport extends fc.Arbitrary<infer T> ? T : never;
/** Operators forcing breakers: every action, valid and hostile names, reasons and services. */
const forceBreaker: fc.Arbitrary<Init<typeof ForceBreakerRequestSchema>> = fc.record({
  dependency,
  service: fc.oneof(fc.constant(""), service),
  action: enumUpTo(4),
  reason: fc.oneof(
    fc.constantFrom("maintenance", "incident 42", "", " ", "x".repeat(512), "x".repeat(513)),
    hostileString,
  ),
});
const getBreaker: fc.Arbitrary<Init<typeof GetBreakerRequestSchema>> = fc.record({
  dependency,
  service: fc.oneof(fc.constant(""), service),
});
const listTransitions: fc.Arbitrary<Init<typeof ListTransitionsRequestSchema>> = fc.record({
  dependency: fc.oneof(fc.constant(""), dependency),
  afterSequence: anyInt64,
  limit: int32In(0, 1_000),
});
const watch: fc.Arbitrary<Init<typeof WatchRequestSchema>> = fc.record({
  dependencies: fc.array(dependency, { maxLength: 50 }),
});

const smallPayload = fc.uint8Array({ maxLength: 256 });
const bigPayload = fc
  .oneof(fc.constantFrom(65_535, 65_536, 65_537, 70 * 1024), fc.integer({ min: 0, max: 70 * 1024 }))
  .map((n) => new Uint8Array(n).fill(n & 0xff));
/** An entry that passes validation, so big batches are stored and Query and Trace have work. */
const cleanEntry = (id: fc.Arbitrary<string>) =>
  fc.record({
    eventId: id,
    eventType: fc.oneof(validName, fc.constantFrom("order.placed", "policy.changed")),
    aggregateId: fc.string({ maxLength: 40 }),
    payload: smallPayload,
    producer: fc.oneof(fc.constant(""), validName),
    traceId: fc.oneof(
      { weight: 8, arbitrary: fc.constant("") },
      { weight: 1, arbitrary: fc.constantFrom(...TRACES) },
    ),
    causationId: fc.oneof(fc.constant(""), fc.uuid(), fc.constantFrom(...REUSED_IDS)),
  });
const hostileEntry = (payload: fc.Arbitrary<Uint8Array>, text: fc.Arbitrary<string>) =>
  fc.record(
    {
      eventId: fc.oneof(eventId, text),
      eventType: fc.oneof(validName, text),
      aggregateId: text,
      payload,
      producer: text,
      traceId,
      causationId: fc.oneof(eventId, text),
    },
    { requiredKeys: [] },
  );
const append: fc.Arbitrary<Init<typeof AppendRequestSchema>> = fc.record({
  entries: fc.oneof(
    arrayUpTo(cleanEntry(freshEventId), 1_000, 1),
    // Event ids used before or twice in the batch, as a replaying client sends them.
    fc.array(cleanEntry(eventId), { minLength: 1, maxLength: 4 }),
    arrayUpTo(hostileEntry(smallPayload, shortHostile), 1_200),
    fc.array(hostileEntry(bigPayload, hostileString), { maxLength: 4 }),
  ),
});
const query: fc.Arbitrary<Init<typeof QueryRequestSchema>> = fc.record({
  traceId,
  aggregateId: fc.oneof(fc.constantFrom("", ...POOL), hostileString),
  eventType: fc.oneof(fc.constantFrom("", "policy.changed", "breaker.transition"), hostileString),
  fromUnixMs: anyInt64,
  toUnixMs: anyInt64,
  afterSequence: anyInt64,
  limit: int32In(0, 1_000),
});
/** Length of a causal chain: each event caused by the one before, as a saga would append. */
const chainLength = fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 90, max: 200 }));
const trace: fc.Arbitrary<Init<typeof TraceRequestSchema>> = fc.record({ traceId });
const healthCheck: fc.Arbitrary<Init<typeof HealthCheckRequestSchema>> = fc.record({
  service: fc.oneof(
    fc.constantFrom(
      "",
      PolicyService.typeName,
      BreakerService.typeName,
      AuditService.typeName,
      IdempotencyService.typeName,
    ),
    hostileString,
  ),
});
/** Idempotency keys reused across calls, so Begins meet stored and leased records. */
const KEYS = ["order-1", "order-2", "é-key", "k".repeat(255)];
const HASHES = [new Uint8Array(32).fill(1), new Uint8Array(32).fill(2)];
const idemKey = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...KEYS) },
  { weight: 1, arbitrary: fc.constantFrom("", "k".repeat(256), "é".repeat(128), "a\ud800") },
  { weight: 3, arbitrary: hostileString },
);
const requestHashArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HASHES) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
);
const sharedScope = fc.oneof(fc.constantFrom("", "", "shared-a"), shortHostile);
const begin: fc.Arbitrary<Init<typeof BeginRequestSchema>> = fc.record(
  {
    service,
    sharedScope,
    key: idemKey,
    requestHash: requestHashArb,
    leaseMs: fc.oneof(fc.constantFrom(0, 99, 100, 3_600_000, 3_600_001), int32In(0, 60_000)),
    retentionMs: fc.oneof(
      fc.constantFrom(0n, 999n, 1_000n, 2_592_000_000n, 2_592_000_001n),
      anyInt64,
    ),
    traceId,
    causationId: shortHostile,
  },
  { requiredKeys: [] },
);
/** Response sizes around the 1 MiB limit, mostly small. */
const response = fc.oneof(
  { weight: 9, arbitrary: fc.uint8Array({ maxLength: 256 }) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(1_048_575, 1_048_576, 1_048_577)
      .map((n) => new Uint8Array(n).fill(7)),
  },
);
const complete: fc.Arbitrary<Init<typeof CompleteRequestSchema>> = fc.record(
  {
    leaseToken: fc.oneof(fc.uuid(), shortHostile),
    response,
    traceId,
    causationId: shortHostile,
  },
  { requiredKeys: [] },
);
/** A ledger round as the SDK makes it: Begin a pooled key, then Complete or Abandon it. */
const beginThenEnd = fc.record({
  key: fc.constantFrom(...KEYS),
  requestHash: fc.constantFrom(...HASHES),
  service: fc.constantFrom(...SERVICES),
  leaseMs: fc.constantFrom(100, 30_000),
  end: fc.constantFrom("complete", "abandon", "none"),
  response,
});
type LedgerRound = typeof beginThenEnd extends fc.Arbitrary<infer T> ? T : never;
const abandon: fc.Arbitrary<Init<typeof AbandonRequestSchema>> = fc.record({
  leaseToken: fc.oneof(fc.uuid(), shortHostile),
});
const getRecord: fc.Arbitrary<Init<typeof GetRecordRequestSchema>> = fc.record({
  service,
  sharedScope,
  key: idemKey,
});
const empty = fc.constant({});

/** Dead letters recorded by clean Records, so Get, Replay and Resolve meet stored ones. */
const LETTER_IDS = ["dl-fuzz-1", "dl-fuzz-2", "dl-fuzz-3"];
const letterId = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...LETTER_IDS) },
  { weight: 2, arbitrary: fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:-]{0,30}$/) },
  { weight: 3, arbitrary: hostileString },
);
const jobPayload = fc.oneof(
  { weight: 9, arbitrary: smallPayload },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(1_048_575, 1_048_576, 1_048_577)
      .map((n) => new Uint8Array(n).fill(7)),
  },
);
/** A letter that passes validation. */
const cleanLetter = fc.record({
  letterId: fc.constantFrom(...LETTER_IDS),
  dependency: fc.constantFrom(...POOL),
  jobId: hex32,
  reason: fc.integer({ min: 1, max: 2 }),
  payload: smallPayload,
  attempts: fc.integer({ min: 0, max: 10 }),
  lastError: fc.string({ maxLength: 100 }),
  errorType: fc.constantFrom("", "http_503"),
  traceId: fc.constantFrom("", ...TRACES),
  idempotencyKey: fc.constantFrom("", "order-1"),
  enqueuedAtUnixMs: fc.bigInt({ min: 0n, max: MAX_SAFE }),
  dlqSequence: fc.bigInt({ min: 0n, max: 1_000n }),
});
const hostileLetter = fc.record(
  {
    letterId,
    dependency,
    jobId: hostileString,
    reason: enumUpTo(2),
    status: fc.oneof(
      { weight: 9, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: enumUpTo(3) },
    ),
    payload: jobPayload,
    attempts: int32In(0, 10),
    lastError: hostileString,
    errorType: shortHostile,
    traceId,
    causationId: shortHostile,
    idempotencyKey: hostileString,
    enqueuedAtUnixMs: anyInt64,
    deadLetteredAtUnixMs: anyInt64,
    dlqSequence: anyInt64,
    replayOf: fc.oneof(fc.constant(""), letterId),
    replayCount: fc.oneof(
      { weight: 9, arbitrary: fc.constant(0) },
      { weight: 1, arbitrary: anyInt32 },
    ),
    resolution: fc.oneof(
      { weight: 9, arbitrary: fc.constant("") },
      { weight: 1, arbitrary: shortHostile },
    ),
  },
  { requiredKeys: [] },
);
const recordDeadLetter: fc.Arbitrary<Init<typeof RecordDeadLetterRequestSchema>> = fc.record(
  {
    letter: fc.option(fc.oneof(cleanLetter, hostileLetter), { nil: undefined, freq: 20 }),
  },
  { requiredKeys: [] },
);
const listDeadLetters: fc.Arbitrary<Init<typeof ListDeadLettersRequestSchema>> = fc.record({
  dependency: fc.oneof(fc.constant(""), dependency),
  status: enumUpTo(3),
  traceId,
  afterCursor: anyInt64,
  limit: int32In(0, 1_000),
});
const getDeadLetter: fc.Arbitrary<Init<typeof GetDeadLetterRequestSchema>> = fc.record({
  letterId,
});
const replayDeadLetter: fc.Arbitrary<Init<typeof ReplayDeadLetterRequestSchema>> = fc.record({
  letterId,
  force: fc.boolean(),
});
const resolveDeadLetter: fc.Arbitrary<Init<typeof ResolveDeadLetterRequestSchema>> = fc.record({
  letterId,
  reason: hostileString,
});

/** The well-typed request arbitrary of every method, by `package.Service/Method`. */
const REQUESTS: Record<string, fc.Arbitrary<object>> = {
  "bulwark.v1.PolicyService/PutPolicy": putPolicy,
  "bulwark.v1.PolicyService/GetPolicy": getPolicy,
  "bulwark.v1.PolicyService/ListPolicies": empty,
  "bulwark.v1.PolicyService/DeletePolicy": deletePolicy,
  "bulwark.v1.BreakerService/Acquire": acquire,
  "bulwark.v1.BreakerService/Report": report,
  "bulwark.v1.BreakerService/GetBreaker": getBreaker,
  "bulwark.v1.BreakerService/ListBreakers": empty,
  "bulwark.v1.BreakerService/ListTransitions": listTransitions,
  "bulwark.v1.BreakerService/Watch": watch,
  "bulwark.v1.BreakerService/ForceBreaker": forceBreaker,
  "bulwark.v1.AuditService/Append": append,
  "bulwark.v1.AuditService/Query": query,
  "bulwark.v1.AuditService/Verify": empty,
  "bulwark.v1.AuditService/Trace": trace,
  "bulwark.v1.DeadLetterService/RecordDeadLetter": recordDeadLetter,
  "bulwark.v1.DeadLetterService/ListDeadLetters": listDeadLetters,
  "bulwark.v1.DeadLetterService/GetDeadLetter": getDeadLetter,
  "bulwark.v1.DeadLetterService/ReplayDeadLetter": replayDeadLetter,
  "bulwark.v1.DeadLetterService/ResolveDeadLetter": resolveDeadLetter,
  "bulwark.v1.IdempotencyService/Begin": begin,
  "bulwark.v1.IdempotencyService/Complete": complete,
  "bulwark.v1.IdempotencyService/Abandon": abandon,
  "bulwark.v1.IdempotencyService/GetRecord": getRecord,
  "grpc.health.v1.Health/Check": healthCheck,
  "grpc.health.v1.Health/Watch": healthCheck,
};

// ---------------------------------------------------------------------------------------------
// Calls and what their answers must be.

type Answer = { ok: true } | { ok: false; code: Code; message: string };

async function answerOf(call: (options: CallOptions) => Promise<unknown>): Promise<Answer> {
  try {
    await call({ timeoutMs: CALL_TIMEOUT_MS });
    return { ok: true };
  } catch (err) {
    const e = ConnectError.from(err);
    return { ok: false, code: e.code, message: e.rawMessage };
  }
}

/** Throws unless the answer is a success or one of the specific error codes. */
function expectSpecific(answer: Answer): void {
  if (answer.ok || SPECIFIC_CODES.has(answer.code)) return;
  throw new Error(`answered ${Code[answer.code]}: ${answer.message.slice(0, 300)}`);
}

async function expectServing(): Promise<void> {
  const res = await health.check({ service: "" }, { timeoutMs: CALL_TIMEOUT_MS });
  expect(res.status).toBe(ServingStatus.SERVING);
}

function runs(numRuns: number): fc.Parameters<unknown> {
  return { numRuns, plugins: [fc.timeout(2 * CALL_TIMEOUT_MS)], ...REPLAY };
}

/** One fuzzed RPC: the request arbitrary, the call, and how many runs it gets. */
interface RpcCase {
  name: string;
  numRuns: number;
  arb: fc.Arbitrary<unknown>;
  call: (req: never, options: CallOptions) => Promise<unknown>;
}

async function firstWatchMessage(req: object, options: CallOptions): Promise<void> {
  const controller = new AbortController();
  try {
    const stream = rpc.breakers.watch(req, { ...options, signal: controller.signal });
    for await (const message of stream) {
      expect(message.kind.case).toBe("snapshot");
      break;
    }
  } finally {
    controller.abort();
  }
}

const POLICY_CASES: RpcCase[] = [
  {
    name: "PolicyService/PutPolicy",
    numRuns: 250,
    arb: putPolicy,
    call: (r, o) => rpc.policies.putPolicy(r, o),
  },
  {
    name: "PolicyService/GetPolicy",
    numRuns: 100,
    arb: getPolicy,
    call: (r, o) => rpc.policies.getPolicy(r, o),
  },
  {
    name: "PolicyService/ListPolicies",
    numRuns: 5,
    arb: empty,
    call: (r, o) => rpc.policies.listPolicies(r, o),
  },
];

/** The data path and the reads, run on freshly seeded policies. */
const DATA_PATH_CASES: RpcCase[] = [
  {
    name: "BreakerService/Acquire",
    numRuns: 150,
    arb: acquire,
    call: async (r, o) => {
      const res = await rpc.breakers.acquire(r, o);
      expect([AcquireDecision.ALLOW, AcquireDecision.REJECT, AcquireDecision.PROBE]).toContain(
        res.decision,
      );
    },
  },
  {
    name: "BreakerService/Report",
    numRuns: 100,
    arb: report,
    call: (r, o) => rpc.breakers.report(r, o),
  },
  {
    name: "BreakerService/Acquire then Report",
    numRuns: 120,
    arb: acquireThenReport,
    call: async (r: Attempt, o) => {
      const { dependency, service, result, at, batch } = r;
      const { permitId } = await rpc.breakers.acquire({ dependency, service, attempt: 1 }, o);
      const outcomes: object[] = [...batch];
      if (permitId !== "") {
        outcomes.splice(at % (batch.length + 1), 0, { dependency, service, permitId, result });
      }
      if (outcomes.length > 0) await rpc.breakers.report({ outcomes }, o);
    },
  },
  {
    name: "BreakerService/ForceBreaker",
    numRuns: 120,
    arb: forceBreaker,
    call: (r, o) => rpc.breakers.forceBreaker(r, o),
  },
  {
    name: "BreakerService/GetBreaker",
    numRuns: 100,
    arb: getBreaker,
    call: (r, o) => rpc.breakers.getBreaker(r, o),
  },
  {
    name: "BreakerService/ListBreakers",
    numRuns: 5,
    arb: empty,
    call: (r, o) => rpc.breakers.listBreakers(r, o),
  },
  {
    name: "BreakerService/ListTransitions",
    numRuns: 100,
    arb: listTransitions,
    call: (r, o) => rpc.breakers.listTransitions(r, o),
  },
  { name: "BreakerService/Watch", numRuns: 60, arb: watch, call: firstWatchMessage },
  {
    name: "AuditService/Append",
    numRuns: 120,
    arb: append,
    call: (r, o) => rpc.audit.append(r, o),
  },
  {
    name: "AuditService/Append of causal chains",
    numRuns: 10,
    arb: chainLength,
    call: (length: number, o) => {
      const ids = Array.from({ length }, () => randomUUID());
      const entries = ids.map((eventId, i) => ({
        eventId,
        eventType: "saga.step",
        traceId: CHAIN_TRACE,
        causationId: ids[i - 1] ?? "",
      }));
      return rpc.audit.append({ entries }, o);
    },
  },
  { name: "AuditService/Query", numRuns: 100, arb: query, call: (r, o) => rpc.audit.query(r, o) },
  { name: "AuditService/Trace", numRuns: 60, arb: trace, call: (r, o) => rpc.audit.trace(r, o) },
  {
    name: "AuditService/Verify",
    numRuns: 5,
    arb: empty,
    call: async (r, o) => {
      expect((await rpc.audit.verify(r, o)).valid).toBe(true);
    },
  },
  {
    name: "DeadLetterService/RecordDeadLetter",
    numRuns: 100,
    arb: recordDeadLetter,
    call: (r, o) => letters.recordDeadLetter(r, o),
  },
  {
    name: "DeadLetterService/ListDeadLetters",
    numRuns: 60,
    arb: listDeadLetters,
    call: (r, o) => letters.listDeadLetters(r, o),
  },
  {
    name: "DeadLetterService/GetDeadLetter",
    numRuns: 40,
    arb: getDeadLetter,
    call: (r, o) => letters.getDeadLetter(r, o),
  },
  {
    // Without NATS, a stored letter's replay is FailedPrecondition: a specific answer.
    name: "DeadLetterService/ReplayDeadLetter",
    numRuns: 40,
    arb: replayDeadLetter,
    call: (r, o) => letters.replayDeadLetter(r, o),
  },
  {
    name: "DeadLetterService/ResolveDeadLetter",
    numRuns: 40,
    arb: resolveDeadLetter,
    call: (r, o) => letters.resolveDeadLetter(r, o),
  },
  {
    name: "IdempotencyService/Begin",
    numRuns: 150,
    arb: begin,
    call: (r, o) => ledger.begin(r, o),
  },
  {
    name: "IdempotencyService/Begin then Complete or Abandon",
    numRuns: 100,
    arb: beginThenEnd,
    call: async (r: LedgerRound, o) => {
      const { key, requestHash, service, leaseMs, end } = r;
      const res = await ledger.begin({ key, requestHash, service, leaseMs }, o);
      if (res.leaseToken === "" || end === "none") return;
      if (end === "abandon") await ledger.abandon({ leaseToken: res.leaseToken }, o);
      else await ledger.complete({ leaseToken: res.leaseToken, response: r.response }, o);
    },
  },
  {
    name: "IdempotencyService/Complete",
    numRuns: 60,
    arb: complete,
    call: (r, o) => ledger.complete(r, o),
  },
  {
    name: "IdempotencyService/Abandon",
    numRuns: 40,
    arb: abandon,
    call: (r, o) => ledger.abandon(r, o),
  },
  {
    name: "IdempotencyService/GetRecord",
    numRuns: 80,
    arb: getRecord,
    call: (r, o) => ledger.getRecord(r, o),
  },
  {
    name: "Health/Check",
    numRuns: 100,
    arb: healthCheck,
    call: async (r: { service?: string }, o) => {
      const res = await health.check(r, o);
      expect(res.status).toBe(ServingStatus.SERVING);
    },
  },
];

/** Runs after the data-path properties; deleting the pooled policies leaves them less to reach. */
const DELETE_CASE: RpcCase = {
  name: "PolicyService/DeletePolicy",
  numRuns: 100,
  arb: deletePolicy,
  call: (r, o) => rpc.policies.deletePolicy(r, o),
};

function fuzzRpc(c: RpcCase): void {
  it(
    `${c.name}: every answer is a success or a specific error, and the server stays up`,
    async () => {
      await fc.assert(
        fc.asyncProperty(fc.limitShrink(c.arb, MAX_SHRINKS), async (req) => {
          expectSpecific(await answerOf((o) => c.call(req as never, o)));
          await expectServing();
        }),
        runs(c.numRuns),
      );
    },
    TEST_TIMEOUT_MS,
  );
}

// ---------------------------------------------------------------------------------------------
// What the fuzzing left behind must still be valid.

async function allTransitions(): Promise<BreakerTransition[]> {
  const all: BreakerTransition[] = [];
  for (;;) {
    const afterSequence = all.at(-1)?.sequence ?? 0n;
    const page = await rpc.breakers.listTransitions({ afterSequence, limit: 1_000 });
    all.push(...page.transitions);
    if (page.transitions.length < 1_000) return all;
  }
}

const keyOf = (b: { dependency: string; service: string }) => `${b.dependency}/${b.service}`;

/**
 * The invariants of the stored state, checked after the data path and again at the end. Until
 * policies are deleted or change scope, each breaker's recorded transitions also form one
 * unbroken chain (each starts where the one before ended); a delete legitimately restarts it.
 */
function checkStoredState(when: string, chainsUnbroken: boolean): void {
  describe(`stored state ${when}`, () => {
    it("re-validates every stored policy by putting it back at its revision", async () => {
      const { policies } = await rpc.policies.listPolicies({});
      for (const p of policies) {
        const answer = await answerOf((o) =>
          rpc.policies.putPolicy({ policy: p, expectedRevision: p.revision }, o),
        );
        expect(answer, `policy ${JSON.stringify(p.dependency)}`).toEqual({ ok: true });
      }
    });

    it("holds only breakers and policies whose names follow the documented pattern", async () => {
      const { breakers } = await rpc.breakers.listBreakers({});
      const { policies } = await rpc.policies.listPolicies({});
      const badBreakers = breakers
        .filter((b) => !DOCUMENTED_DEPENDENCY.test(b.dependency))
        .concat(breakers.filter((b) => !DOCUMENTED_SERVICE.test(b.service)))
        .map((b) => `${b.dependency}/${b.service}`);
      const badPolicies = policies
        .map((p) => p.dependency)
        .filter((d) => !DOCUMENTED_DEPENDENCY.test(d));
      expect({ badBreakers, badPolicies }).toEqual({ badBreakers: [], badPolicies: [] });
    });

    it("holds no breaker outside CLOSED without the recorded transition into its state", async () => {
      const before = (await rpc.breakers.listBreakers({})).breakers;
      const transitions = await allTransitions();
      const after = (await rpc.breakers.listBreakers({})).breakers;
      // A timer may move a breaker between the reads: only those that stood still are judged.
      const still = new Set(after.map((b) => `${keyOf(b)}@${b.changedAtUnixMs}`));
      const last = new Map<string, BreakerTransition>();
      for (const t of transitions) last.set(keyOf(t), t);
      const unrecorded = before
        .filter((b) => b.state !== BreakerState.CLOSED)
        .filter((b) => still.has(`${keyOf(b)}@${b.changedAtUnixMs}`))
        .filter((b) => {
          const t = last.get(keyOf(b));
          return t === undefined || t.to !== b.state || t.atUnixMs !== b.changedAtUnixMs;
        })
        .map((b) => `${keyOf(b)} ${BreakerState[b.state]} since ${b.changedAtUnixMs}`);
      expect(unrecorded).toEqual([]);
    });

    if (chainsUnbroken) {
      it("records every breaker's transitions as one unbroken chain", async () => {
        const last = new Map<string, BreakerTransition>();
        const gaps: string[] = [];
        for (const t of await allTransitions()) {
          const before = last.get(keyOf(t));
          if (t.from !== (before?.to ?? BreakerState.CLOSED)) {
            const after =
              before === undefined
                ? "nothing"
                : `#${before.sequence} to ${BreakerState[before.to]}`;
            gaps.push(`${keyOf(t)}: #${t.sequence} from ${BreakerState[t.from]} follows ${after}`);
          }
          last.set(keyOf(t), t);
        }
        expect(gaps).toEqual([]);
      });
    }

    it("holds only idempotency records that follow the documented rules", () => {
      const db = new Database(server.dbPath, { readonly: true });
      try {
        const rows = db
          .prepare(
            "SELECT scope, key, state, length(request_hash) AS hashBytes, length(response) AS responseBytes FROM idempotency_records",
          )
          .all() as {
          scope: string;
          key: string;
          state: string;
          hashBytes: number;
          responseBytes: number | null;
        }[];
        const scope = /^(service|shared):[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
        const bad = rows.filter(
          (r) =>
            !scope.test(r.scope) ||
            Buffer.byteLength(r.key) < 1 ||
            Buffer.byteLength(r.key) > 255 ||
            /\p{Cs}/u.test(r.key) ||
            !["in-progress", "completed"].includes(r.state) ||
            r.hashBytes !== 32 ||
            (r.responseBytes ?? 0) > 1_048_576,
        );
        expect(bad).toEqual([]);
      } finally {
        db.close();
      }
    });

    it("keeps an audit chain that verifies", async () => {
      const verdict = await rpc.audit.verify({});
      expect(verdict.problem).toBe("");
      expect(verdict.valid).toBe(true);
    });

    it("is still SERVING", async () => {
      await expectServing();
    });
  });
}

describe("well-typed hostile messages: policies", () => {
  for (const c of POLICY_CASES) fuzzRpc(c);
});

describe("well-typed hostile messages: data path and reads", () => {
  beforeAll(seedPolicies);
  for (const c of DATA_PATH_CASES) fuzzRpc(c);
});

checkStoredState("after the data path", true);

describe("deletes", () => {
  fuzzRpc(DELETE_CASE);
});

// ---------------------------------------------------------------------------------------------
// Malformed wire input: raw Connect requests over HTTP/1.1.

const METHODS: DescMethod[] = [
  PolicyService,
  BreakerService,
  AuditService,
  DeadLetterService,
  IdempotencyService,
  Health,
].flatMap((s: DescService) => s.methods);
const pathOf = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;

/** Placeholder for a JSON number literal that JSON.stringify cannot write (1e400, -0). */
const RAW = "@@raw@@";
const RAW_NUMBERS = ["1e400", "-1e400", "123456789012345678901234567890", "-0", "1.0e-400"];
const jsonReplacement: fc.Arbitrary<JsonValue> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }).map((v) => v as JsonValue),
  fc.constantFrom<JsonValue>(null, "", "NaN", "Infinity", "-Infinity", "1.5", "0x10", " 1"),
  fc.constantFrom<JsonValue>("9223372036854775808", "-9223372036854775809", "18446744073709551616"),
  fc.constantFrom<JsonValue>(1e40, -1, 2 ** 31, -(2 ** 31) - 1, 2 ** 53 + 2, 1.5, true, [], {}),
  fc.constantFrom<JsonValue>("JITTER_BOGUS", "BREAKER_SCOPE_SERVICE", "AAAA", "!!not base64"),
  fc.constantFrom(...RAW_NUMBERS).map((n) => `${RAW}${n}`),
);

/** Every path to a value inside `value`, objects' keys and arrays' indexes alike. */
function pathsIn(value: JsonValue, prefix: (string | number)[] = []): (string | number)[][] {
  if (value === null || typeof value !== "object") return [];
  const entries = Array.isArray(value) ? [...value.entries()] : Object.entries(value);
  return entries.flatMap(([k, v]) => [[...prefix, k], ...pathsIn(v as JsonValue, [...prefix, k])]);
}

/** The JSON form of a well-typed request with one value replaced, and maybe an unknown field. */
function mutatedJson(
  schema: DescMessage,
  init: object,
  at: number,
  replacement: JsonValue,
  unknownField: boolean,
): string {
  const json = toJson(schema, create(schema, init as never)) as { [k: string]: JsonValue };
  const paths = pathsIn(json);
  const path = paths.length === 0 ? ["bogusField"] : paths[at % paths.length]!;
  let parent = json as JsonValue;
  for (const key of path.slice(0, -1)) parent = (parent as Record<string, JsonValue>)[key]!;
  (parent as Record<string, JsonValue>)[path.at(-1)!] = replacement;
  if (unknownField) json.unknownField = 1;
  return JSON.stringify(json).replace(new RegExp(`"${RAW}([^"]*)"`, "g"), "$1");
}

/** Hand-made broken protobuf: deep groups, overlong varints, lengths past the end, bad UTF-8. */
const CRAFTED_PROTO: Uint8Array[] = [
  new Uint8Array(0),
  new Uint8Array(50_000).fill(0x7b), // field 15 start-group, nested 50 000 deep, never closed
  Uint8Array.from([...Array(20_000).fill(0x7b), ...Array(20_000).fill(0x7c)]),
  Uint8Array.from([0x78, ...Array(11).fill(0xff), 0x01]), // varint longer than 10 bytes
  Uint8Array.from([0x7a, 0xff, 0xff, 0xff, 0xff, 0x0f]), // length 2^32-1 with no bytes
  Uint8Array.from([0x0a, 0x05, 0x61]), // length past the end
  Uint8Array.from([0x0a, 0x02, 0xc3, 0x28]), // invalid UTF-8 in field 1
  Uint8Array.from([0x08, 0x01]), // field 1 as a varint
  Uint8Array.from([0x0d, 0, 0, 0, 0]), // field 1 as fixed32
  Uint8Array.from([0x0c]), // end-group without a start
  Uint8Array.from([0x00, 0x01]), // field number 0
  Uint8Array.from([0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00]), // the largest field number
  Uint8Array.from(Array.from({ length: 40_000 }, (_, i) => (i % 2 === 0 ? 0x78 : 0x01))),
  new Uint8Array(4 * 1024 * 1024 + 1), // just past the server's request limit
];

type RawBody = { format: "json" | "proto"; body: string | Uint8Array };

function rawBody(m: DescMethod): fc.Arbitrary<RawBody> {
  const req = REQUESTS[pathOf(m)]!;
  const json = fc.oneof(
    fc.json(),
    fc.string({ maxLength: 64 }),
    fc.uint8Array({ maxLength: 256 }),
    fc
      .tuple(req, fc.nat(), jsonReplacement, fc.boolean())
      .map(([init, at, value, unknown]) => mutatedJson(m.input, init, at, value, unknown)),
  );
  const encoded = req.map((init) => toBinary(m.input, create(m.input, init as never)));
  const proto = fc.oneof(
    fc.uint8Array({ maxLength: 512 }),
    encoded,
    fc
      .tuple(encoded, fc.nat(), fc.nat(255), fc.uint8Array({ minLength: 1, maxLength: 16 }))
      .chain(([bytes, at, byte, extra]) =>
        fc.constantFrom(
          bytes.subarray(0, at % (bytes.length + 1)),
          bytes.map((b, i) => (i === at % bytes.length ? b ^ byte : b)),
          Uint8Array.from([...bytes, ...extra]),
          Uint8Array.from([...extra, ...bytes]),
        ),
      ),
    fc.constantFrom(...CRAFTED_PROTO),
  );
  return fc.oneof(
    json.map((body): RawBody => ({ format: "json", body })),
    proto.map((body): RawBody => ({ format: "proto", body })),
  );
}

/** A Connect streaming request body: one enveloped message, its flags and length fuzzed too. */
function envelope(payload: Uint8Array, flags: number, lengthDelta: number): Uint8Array {
  const out = new Uint8Array(5 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, flags);
  view.setUint32(1, Math.max(0, payload.length + lengthDelta));
  out.set(payload, 5);
  return out;
}

type RawAnswer = { code: string; message: string };
const RAW_OK: RawAnswer = { code: "ok", message: "" };

function rawErrorOf(status: number, text: string): RawAnswer {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`HTTP ${status} without a Connect error body: ${text.slice(0, 200)}`);
  }
  const { code, message } = (parsed ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code !== "string") throw new Error(`HTTP ${status}, no code: ${text.slice(0, 200)}`);
  return { code, message: typeof message === "string" ? message : "" };
}

/**
 * Answers the protocol library gives before any handler runs, as gRPC prescribes them
 * (grpc/grpc doc/statuscodes.md: "Error parsing request proto" is INTERNAL, a request
 * cardinality violation is UNIMPLEMENTED; doc/compression.md: a Compressed-Flag without an
 * encoding MUST fail with INTERNAL). Only these exact messages are let through.
 */
const PROTOCOL_ANSWERS: readonly { code: string; prefix: string }[] = [
  { code: "internal", prefix: "parse binary: " },
  { code: "internal", prefix: "received compressed envelope, but do not know how to decompress" },
  { code: "unimplemented", prefix: "protocol error: missing input message" },
];

function acceptableRaw(answer: RawAnswer): boolean {
  if (answer.code === "ok" || SPECIFIC_CODE_NAMES.has(answer.code)) return true;
  return PROTOCOL_ANSWERS.some(
    (a) => a.code === answer.code && answer.message.startsWith(a.prefix),
  );
}

/** Reads enveloped messages until the first one is complete. */
async function firstEnvelope(
  body: ReadableStream<Uint8Array>,
): Promise<{ flags: number; data: Uint8Array }> {
  const reader = body.getReader();
  let buffered = new Uint8Array(0);
  try {
    for (;;) {
      if (buffered.length >= 5) {
        const length = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
        if (buffered.length >= 5 + length) {
          return { flags: buffered[0]!, data: buffered.subarray(5, 5 + length) };
        }
      }
      const { done, value } = await reader.read();
      if (done) throw new Error(`stream ended inside an envelope (${buffered.length} bytes)`);
      buffered = Uint8Array.from([...buffered, ...value]);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Posts one raw request; returns the Connect status it got, throws on anything else. */
async function postRaw(
  m: DescMethod,
  raw: RawBody,
  flags: number,
  delta: number,
): Promise<RawAnswer> {
  const streaming = m.methodKind === "server_streaming";
  const bytes = typeof raw.body === "string" ? new TextEncoder().encode(raw.body) : raw.body;
  const controller = new AbortController();
  const res = await fetch(`${server.url}/${pathOf(m)}`, {
    method: "POST",
    headers: {
      "content-type": `application/${streaming ? "connect+" : ""}${raw.format}`,
      "connect-protocol-version": "1",
    },
    body: streaming ? envelope(bytes, flags, delta) : bytes,
    signal: AbortSignal.any([controller.signal, AbortSignal.timeout(CALL_TIMEOUT_MS)]),
  });
  try {
    if (!streaming || res.status !== 200) {
      const answer = new Uint8Array(await res.arrayBuffer());
      const text = new TextDecoder().decode(answer);
      if (res.status !== 200) return rawErrorOf(res.status, text);
      // A success must carry a well-formed response message.
      if (raw.format === "json") fromJsonString(m.output, text);
      else fromBinary(m.output, answer);
      return RAW_OK;
    }
    const first = await firstEnvelope(res.body!);
    const text = new TextDecoder().decode(first.data);
    if ((first.flags & 0b10) === 0) {
      if (raw.format === "json") fromJsonString(m.output, text);
      else fromBinary(m.output, first.data);
      return RAW_OK;
    }
    const end = JSON.parse(text) as { error?: unknown };
    return end.error === undefined ? RAW_OK : rawErrorOf(200, JSON.stringify(end.error));
  } finally {
    controller.abort();
  }
}

describe("malformed wire input", () => {
  beforeAll(seedPolicies);
  for (const m of METHODS) {
    it(
      `${pathOf(m)}: raw Connect bodies get a status in time, and the server stays up`,
      async () => {
        await fc.assert(
          fc.asyncProperty(
            fc.limitShrink(rawBody(m), MAX_SHRINKS),
            fc.constantFrom(0, 0, 0, 1, 2, 0x80),
            fc.constantFrom(0, 0, 0, -1, 1, 1_000),
            async (raw, flags, delta) => {
              const answer = await postRaw(m, raw, flags, delta);
              if (!acceptableRaw(answer)) {
                throw new Error(`answered ${answer.code}: ${answer.message.slice(0, 300)}`);
              }
              await expectServing();
            },
          ),
          runs(40),
        );
      },
      TEST_TIMEOUT_MS,
    );
  }
});

checkStoredState("at the end", false);
