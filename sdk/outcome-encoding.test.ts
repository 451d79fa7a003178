import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ReportRequestSchema } from "../gen/bulwark/v1/breaker_pb.ts";
import { encodeReportRequest } from "./outcome-encoding.ts";
import type { OutcomeFields } from "./reporter.ts";

const text = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme" }),
);
const int32 = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 200 }),
  fc.integer({ min: -2_147_483_648, max: 2_147_483_647 }),
);
const outcome: fc.Arbitrary<OutcomeFields> = fc.record({
  dependency: text,
  service: text,
  attempt: int32,
  permitId: text,
  result: fc.integer({ min: 0, max: 6 }),
  errorType: text,
  statusCode: int32,
  latencyMs: int32,
  retryAfterMs: int32,
  traceId: text,
  requestId: text,
  causationId: text,
});

describe("encodeReportRequest", () => {
  it("produces the generated code's bytes for any batch", () => {
    fc.assert(
      fc.property(fc.array(outcome, { maxLength: 20 }), (outcomes) => {
        const expected = toBinary(ReportRequestSchema, create(ReportRequestSchema, { outcomes }));
        expect(Buffer.from(encodeReportRequest(outcomes))).toEqual(Buffer.from(expected));
      }),
      { numRuns: 500 },
    );
  });

  it("decodes back to the same outcomes", () => {
    const outcomes: OutcomeFields[] = [
      {
        dependency: "openai.chat",
        service: "checkout",
        attempt: 2,
        permitId: "p-1",
        result: 2,
        errorType: "http_503",
        statusCode: 503,
        latencyMs: 1234,
        retryAfterMs: 5000,
        traceId: "0af7651916cd43dd8448eb211c80319c",
        requestId: "b7ad6b7169203331",
        causationId: "",
      },
    ];
    const decoded = fromBinary(ReportRequestSchema, encodeReportRequest(outcomes));
    expect(decoded.outcomes).toEqual([expect.objectContaining(outcomes[0])]);
  });
});
