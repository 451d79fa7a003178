import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type AuditService,
  TraceNodeSchema,
  type TraceNode as WireTraceNode,
} from "../../gen/bulwark/v1/audit_pb.ts";
import type { AppendInput, AuditLog, TraceNode } from "../audit/audit-log.ts";
import { InvalidArgumentError } from "../domain/errors.ts";
import { assertName } from "../domain/names.ts";
import { auditRecordToWire } from "../wire/convert.ts";
import { callInfo } from "./call-context.ts";
import { intArg, textArg } from "./request-fields.ts";

/** Largest Append batch: one transaction, kept short so other appenders are not held up. */
export const MAX_APPEND_BATCH = 1_000;
/** Largest payload of one entry: audit payloads are events, not documents. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;
/** Default and largest page of Query. */
const DEFAULT_QUERY_LIMIT = 100;
const MAX_QUERY_LIMIT = 1_000;
const TRACE_ID = /^[0-9a-f]{32}$/;

function traceIdArg(field: string, value: string, required: boolean): string {
  if (value === "" && !required) return value;
  if (!TRACE_ID.test(value)) {
    throw new InvalidArgumentError(
      field,
      `must be 32 lowercase hex digits; got ${JSON.stringify(value.slice(0, 64))}`,
    );
  }
  return value;
}

function timeArg(field: string, value: bigint): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgumentError(field, `must be a Unix time in milliseconds >= 0; got ${value}`);
  }
  return Number(value);
}

function treeToWire(node: TraceNode): WireTraceNode {
  return create(TraceNodeSchema, {
    record: auditRecordToWire(node.record),
    children: node.children.map(treeToWire),
  });
}

export function auditService(audit: AuditLog): ServiceImpl<typeof AuditService> {
  return {
    append(req, ctx) {
      if (req.entries.length === 0 || req.entries.length > MAX_APPEND_BATCH) {
        throw new InvalidArgumentError(
          "entries",
          `must hold 1 to ${MAX_APPEND_BATCH} entries; got ${req.entries.length}`,
        );
      }
      const inputs: AppendInput[] = req.entries.map((e, i) => {
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
          eventId: textArg(`${at}.event_id`, e.eventId, 128),
          eventType: e.eventType,
          aggregateId: textArg(`${at}.aggregate_id`, e.aggregateId, 256),
          payload: e.payload,
          producer: textArg(`${at}.producer`, e.producer, 128),
          traceId: traceIdArg(`${at}.trace_id`, e.traceId, false),
          causationId: textArg(`${at}.causation_id`, e.causationId, 128),
        };
      });
      return { records: audit.append(inputs, callInfo(ctx).principal).map(auditRecordToWire) };
    },

    query(req) {
      if (req.afterSequence < 0n) {
        throw new InvalidArgumentError("after_sequence", `must be >= 0; got ${req.afterSequence}`);
      }
      const records = audit.query({
        traceId: traceIdArg("trace_id", req.traceId, false),
        aggregateId: textArg("aggregate_id", req.aggregateId, 256),
        eventType: textArg("event_type", req.eventType, 128),
        fromMs: timeArg("from_unix_ms", req.fromUnixMs),
        toMs: timeArg("to_unix_ms", req.toUnixMs),
        afterSequence: Number(req.afterSequence),
        limit:
          req.limit === 0 ? DEFAULT_QUERY_LIMIT : intArg("limit", req.limit, 1, MAX_QUERY_LIMIT),
      });
      return { records: records.map(auditRecordToWire) };
    },

    async verify() {
      const v = await audit.verify();
      return {
        valid: v.valid,
        recordsChecked: BigInt(v.recordsChecked),
        firstInvalidSequence: BigInt(v.firstInvalidSequence),
        problem: v.problem,
        headHash: v.headHash,
      };
    },

    trace(req) {
      const { roots } = audit.trace(traceIdArg("trace_id", req.traceId, true));
      return { roots: roots.map(treeToWire) };
    },
  };
}
