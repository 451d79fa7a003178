import type { ServiceImpl } from "@connectrpc/connect";
import type { PolicyService } from "../../gen/bulwark/v1/policy_pb.ts";
import { NotFoundError } from "../domain/errors.ts";
import type { PolicyRegistry } from "../domain/policy-registry.ts";
import { policyToWire } from "../wire/convert.ts";
import { callInfo } from "./call-context.ts";
import {
  validateDeletePolicy,
  validateGetPolicy,
  validatePutPolicy,
} from "./request-validation.ts";

export function policyService(policies: PolicyRegistry): ServiceImpl<typeof PolicyService> {
  return {
    putPolicy(req, ctx) {
      const { spec, expectedRevision } = validatePutPolicy(req);
      const { principal, traceId } = callInfo(ctx);
      return { policy: policyToWire(policies.put(spec, expectedRevision, principal, traceId)) };
    },
    getPolicy(req) {
      const dependency = validateGetPolicy(req);
      const policy = policies.get(dependency);
      if (policy === undefined) throw new NotFoundError(`no policy for dependency ${dependency}`);
      return { policy: policyToWire(policy) };
    },
    listPolicies() {
      return { policies: policies.list().map(policyToWire) };
    },
    deletePolicy(req, ctx) {
      const { dependency, expectedRevision } = validateDeletePolicy(req);
      const { principal, traceId } = callInfo(ctx);
      return {
        revision: BigInt(policies.delete(dependency, expectedRevision, principal, traceId)),
      };
    },
  };
}
