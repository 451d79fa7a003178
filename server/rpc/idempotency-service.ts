import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  BeginOutcome,
  type IdempotencyRecord,
  IdempotencyRecordSchema,
  type IdempotencyService,
  IdempotencyState,
} from "../../gen/bulwark/v1/idempotency_pb.ts";
import type { IdempotencyLedger } from "../domain/idempotency-ledger.ts";
import type { IdempotencyRow } from "../storage/idempotency-store.ts";
import { callInfo } from "./call-context.ts";
import {
  validateAbandon,
  validateBegin,
  validateComplete,
  validateGetRecord,
} from "./request-validation.ts";

const OUTCOME = {
  new: BeginOutcome.NEW,
  completed: BeginOutcome.COMPLETED,
  "in-progress": BeginOutcome.IN_PROGRESS,
  conflict: BeginOutcome.CONFLICT,
} as const;

/** The stored record as served; the lease token stays with the holder. */
function recordToWire(r: IdempotencyRow): IdempotencyRecord {
  return create(IdempotencyRecordSchema, {
    scope: r.scope,
    key: r.key,
    state: r.state === "completed" ? IdempotencyState.COMPLETED : IdempotencyState.IN_PROGRESS,
    requestHash: r.requestHash,
    response: r.response,
    holder: r.holder,
    createdAtUnixMs: BigInt(r.createdAtMs),
    leaseExpiresAtUnixMs: BigInt(r.leaseExpiresAtMs),
    completedAtUnixMs: BigInt(r.completedAtMs),
    expiresAtUnixMs: BigInt(r.expiresAtMs),
    takeovers: r.takeovers,
  });
}

export function idempotencyService(
  ledger: IdempotencyLedger,
): ServiceImpl<typeof IdempotencyService> {
  return {
    async begin(req) {
      const input = validateBegin(req);
      const result = await ledger.begin(input);
      const r = result.record;
      return {
        outcome: OUTCOME[result.kind],
        leaseToken: result.kind === "new" ? r.leaseToken : "",
        leaseExpiresAtUnixMs:
          result.kind === "new" || result.kind === "in-progress" ? BigInt(r.leaseExpiresAtMs) : 0n,
        response: result.kind === "completed" ? r.response : new Uint8Array(0),
        takenOver: result.kind === "new" && result.takenOver,
        record: recordToWire(r),
      };
    },

    async complete(req, ctx) {
      const { leaseToken, response, traceId, causationId } = validateComplete(req);
      const info = callInfo(ctx);
      const { record, eventId } = await ledger.complete(leaseToken, response, {
        principal: info.principal,
        traceId: traceId || info.traceId,
        causationId,
      });
      return { record: recordToWire(record), eventId };
    },

    async abandon(req) {
      await ledger.abandon(validateAbandon(req));
      return {};
    },

    getRecord(req) {
      const { scope, key } = validateGetRecord(req);
      return { record: recordToWire(ledger.get(scope, key)) };
    },
  };
}
