import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  type AuditService,
  TraceNodeSchema,
  type TraceNode as WireTraceNode,
} from "../../gen/bulwark/v1/audit_pb.ts";
import type { AuditLog, TraceNode } from "../audit/audit-log.ts";
import { auditRecordToWire } from "../wire/convert.ts";
import { callInfo } from "./call-context.ts";
import { validateAppend, validateQuery, validateTrace } from "./request-validation.ts";

function treeToWire(node: TraceNode): WireTraceNode {
  return create(TraceNodeSchema, {
    record: auditRecordToWire(node.record),
    children: node.children.map(treeToWire),
  });
}

export function auditService(audit: AuditLog): ServiceImpl<typeof AuditService> {
  return {
    append(req, ctx) {
      const inputs = validateAppend(req);
      return { records: audit.append(inputs, callInfo(ctx).principal).map(auditRecordToWire) };
    },

    query(req) {
      return { records: audit.query(validateQuery(req)).map(auditRecordToWire) };
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
      const { roots } = audit.trace(validateTrace(req));
      return { roots: roots.map(treeToWire) };
    },
  };
}
