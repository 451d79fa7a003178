import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { canonicalRequestJson, requestHash } from "./request-hash.ts";

describe("canonical request encoding", () => {
  it("sorts keys at every level, drops undefined members and writes bytes as base64", () => {
    expect(
      canonicalRequestJson({
        b: 1,
        a: { d: [3, { z: true, y: null }], c: undefined },
        bytes: new Uint8Array([1, 2, 255]),
      }),
    ).toBe('{"a":{"d":[3,{"y":null,"z":true}]},"b":1,"bytes":{"$bytes":"AQL/"}}');
    expect(canonicalRequestJson(undefined)).toBe("null");
  });

  it("hashes equal requests written in another key order to the same 32 bytes", () => {
    const one = requestHash({ dependency: "pay", request: { amount: 1, currency: "EUR" } });
    const two = requestHash({ request: { currency: "EUR", amount: 1 }, dependency: "pay" });
    expect(Buffer.from(one)).toEqual(Buffer.from(two));
    expect(one).toHaveLength(32);
    expect(Buffer.from(one).toString("hex")).toBe(
      createHash("sha256")
        .update('{"dependency":"pay","request":{"amount":1,"currency":"EUR"}}')
        .digest("hex"),
    );
    expect(Buffer.from(requestHash({ amount: 2 }))).not.toEqual(
      Buffer.from(requestHash({ amount: 1 })),
    );
  });

  it("refuses values JSON cannot hold", () => {
    expect(() => canonicalRequestJson({ n: 1n })).toThrow(TypeError);
  });
});
