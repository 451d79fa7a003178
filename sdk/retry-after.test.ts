import { describe, expect, it } from "vitest";
import { retryAfterMsFromHeaders } from "./retry-after.ts";

const NOW_MS = Date.parse("2015-10-21T07:28:00Z");

const read = (init: Record<string, string>, nowMs = NOW_MS) =>
  retryAfterMsFromHeaders(new Headers(init), nowMs);

describe("retryAfterMsFromHeaders", () => {
  it("is undefined without headers or without a back-off header", () => {
    expect(retryAfterMsFromHeaders(undefined, NOW_MS)).toBeUndefined();
    expect(read({})).toBeUndefined();
    expect(read({ "content-type": "application/json" })).toBeUndefined();
  });

  it("reads Retry-After as delay-seconds", () => {
    expect(read({ "retry-after": "2" })).toBe(2_000);
    expect(read({ "Retry-After": "120" })).toBe(120_000);
    expect(read({ "retry-after": "0" })).toBe(0);
    expect(read({ "retry-after": " 3 " })).toBe(3_000);
  });

  it("reads Retry-After as an HTTP-date relative to nowMs", () => {
    expect(read({ "retry-after": "Wed, 21 Oct 2015 07:28:30 GMT" })).toBe(30_000);
    expect(read({ "retry-after": "Wed, 21 Oct 2015 07:28:30 GMT" }, NOW_MS + 10_000)).toBe(20_000);
  });

  it("reads the obsolete RFC 850 date form", () => {
    expect(read({ "retry-after": "Wednesday, 21-Oct-15 07:29:00 GMT" })).toBe(60_000);
  });

  it("gives 0 for a date in the past", () => {
    expect(read({ "retry-after": "Wed, 21 Oct 2015 07:27:00 GMT" })).toBe(0);
    expect(read({ "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT" })).toBe(0);
  });

  it.each(["", "soon", "3 seconds", "2s", "1e3", "0x10"])("is undefined for %j", (value) => {
    expect(read({ "retry-after": value })).toBeUndefined();
  });

  // RFC 9110 §10.2.3: Retry-After is an HTTP-date or delay-seconds (1*DIGIT). Date.parse accepts
  // far more than HTTP-dates: it reads "-5" and "1.5" as dates in 2001, which would make the
  // caller retry at once.
  it.each(["-5", "1.5"])("is undefined for %j, which is neither form", (value) => {
    expect(read({ "retry-after": value })).toBeUndefined();
  });

  describe("retry-after-ms", () => {
    it("is read in milliseconds, rounded up", () => {
      expect(read({ "retry-after-ms": "1500" })).toBe(1_500);
      expect(read({ "retry-after-ms": "1.2" })).toBe(2);
      expect(read({ "retry-after-ms": "0" })).toBe(0);
    });

    it("is preferred over Retry-After", () => {
      expect(read({ "retry-after-ms": "250", "retry-after": "2" })).toBe(250);
    });

    it("falls back to Retry-After when it is unreadable", () => {
      expect(read({ "retry-after-ms": "soon", "retry-after": "2" })).toBe(2_000);
      expect(read({ "retry-after-ms": "-1", "retry-after": "2" })).toBe(2_000);
      expect(read({ "retry-after-ms": "soon" })).toBeUndefined();
    });
  });

  it("works with any object that has get()", () => {
    const headers = { get: (name: string) => (name === "retry-after" ? "4" : null) };
    expect(retryAfterMsFromHeaders(headers, NOW_MS)).toBe(4_000);
  });
});
