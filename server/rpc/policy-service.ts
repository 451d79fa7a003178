import type { ServiceImpl } from "@connectrpc/connect";
import type { PolicyService } from "../../gen/bulwark/v1/policy_pb.ts";
import { NotFoundError } from "../domain/errors.ts";
import { assertName } from "../domain/names.ts";
import type { PolicyRegistry } from "../domain/policy-registry.ts";
import { normalizePolicy } from "../domain/policy-validation.ts";
import { policyToWire } from "../wire/convert.ts";
import { callInfo } from "./call-context.ts";
import { revisionArg } from "./request-fields.ts";

export function policyService(policies: PolicyRegistry): ServiceImpl<typeof PolicyService> {
  return {
    putPolicy(req, ctx) {
      const spec = normalizePolicy(req.policy);
      const expected = revisionArg("expected_revision", req.expectedRevision);
      const { principal, traceId } = callInfo(ctx);
      return { policy: policyToWire(policies.put(spec, expected, principal, traceId)) };
    },
    getPolicy(req) {
      assertName("dependency", req.dependency);
      const policy = policies.get(req.dependency);
      if (policy === undefined)
        throw new NotFoundError(`no policy for dependency ${req.dependency}`);
      return { policy: policyToWire(policy) };
    },
    listPolicies() {
      return { policies: policies.list().map(policyToWire) };
    },
    deletePolicy(req, ctx) {
      assertName("dependency", req.dependency);
      const expected = revisionArg("expected_revision", req.expectedRevision);
      const { principal, traceId } = callInfo(ctx);
      return { revision: BigInt(policies.delete(req.dependency, expected, principal, traceId)) };
    },
  };
}
