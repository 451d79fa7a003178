import { describe, expect, it } from "vitest";
import { classifyError, classifyStatus } from "./classify.ts";

const NOW_MS = Date.parse("2025-03-01T12:00:00Z");

/** Shaped like the `openai` package's APIError: an HTTP status and the response headers. */
class FakeApiError extends Error {
  override readonly name = "RateLimitError";
  constructor(
    readonly status: number,
    readonly headers?: unknown,
  ) {
    super(`${status} from upstream`);
  }
}

/** An error carrying a Node network error code, as `net` and undici raise them. */
function errorWithCode(code: string, message = `connect ${code} 127.0.0.1:1`): Error {
  return Object.assign(new Error(message), { code });
}

describe("classifyStatus", () => {
  it.each([200, 204, 304])("counts %i as a success", (status) => {
    expect(classifyStatus(status, undefined, NOW_MS)).toEqual({
      result: "success",
      retryable: false,
      errorType: "",
      statusCode: status,
      retryAfterMs: undefined,
    });
  });

  it.each([400, 401, 403, 404, 409, 422])(
    "reports %i as the caller's own error: ignored, not retried",
    (status) => {
      const headers = new Headers({ "retry-after": "5" });
      expect(classifyStatus(status, headers, NOW_MS)).toEqual({
        result: "ignored",
        retryable: false,
        errorType: `http_${status}`,
        statusCode: status,
        retryAfterMs: undefined,
      });
    },
  );

  it.each([408, 429, 500, 502, 503, 504])("counts %i as a retryable failure", (status) => {
    expect(classifyStatus(status, undefined, NOW_MS)).toEqual({
      result: "failure",
      retryable: true,
      errorType: `http_${status}`,
      statusCode: status,
      retryAfterMs: undefined,
    });
  });

  it("reads Retry-After in seconds on a 429", () => {
    const headers = new Headers({ "retry-after": "2" });
    expect(classifyStatus(429, headers, NOW_MS).retryAfterMs).toBe(2_000);
  });

  it("prefers retry-after-ms over Retry-After", () => {
    const headers = new Headers({ "retry-after": "2", "retry-after-ms": "1500" });
    expect(classifyStatus(429, headers, NOW_MS).retryAfterMs).toBe(1_500);
  });

  it("reads a Retry-After date on a 503 relative to nowMs", () => {
    const headers = new Headers({ "retry-after": new Date(NOW_MS + 45_000).toUTCString() });
    expect(classifyStatus(503, headers, NOW_MS).retryAfterMs).toBe(45_000);
  });
});

describe("classifyError: errors with an HTTP status", () => {
  it("classifies like the status, reading Retry-After from a Headers object", () => {
    const err = new FakeApiError(429, new Headers({ "retry-after": "3" }));
    expect(classifyError(err, NOW_MS)).toEqual({
      result: "failure",
      retryable: true,
      errorType: "http_429",
      statusCode: 429,
      retryAfterMs: 3_000,
    });
  });

  it("reads back-off headers from a plain object", () => {
    const err = new FakeApiError(503, { "retry-after-ms": "250", "retry-after": "9" });
    expect(classifyError(err, NOW_MS).retryAfterMs).toBe(250);
    const seconds = new FakeApiError(429, { "retry-after": "2" });
    expect(classifyError(seconds, NOW_MS).retryAfterMs).toBe(2_000);
  });

  it("works without headers", () => {
    const result = classifyError(new FakeApiError(502), NOW_MS);
    expect(result).toMatchObject({ result: "failure", retryable: true, statusCode: 502 });
    expect(result.retryAfterMs).toBeUndefined();
  });

  it("ignores a caller error and does not retry it", () => {
    expect(classifyError(new FakeApiError(404, new Headers()), NOW_MS)).toMatchObject({
      result: "ignored",
      retryable: false,
      errorType: "http_404",
      statusCode: 404,
    });
  });

  it("accepts a plain object with a status", () => {
    expect(classifyError({ status: 500 }, NOW_MS)).toMatchObject({
      result: "failure",
      retryable: true,
      statusCode: 500,
    });
  });

  it("does not read a status outside 100..599 or of another type", () => {
    for (const status of [0, 99, 600, "503"]) {
      const err = Object.assign(new Error("odd"), { status });
      expect(classifyError(err, NOW_MS)).toMatchObject({
        result: "failure",
        retryable: false,
        statusCode: 0,
      });
    }
  });

  // Plain-object headers are whatever the error's producer put there; Node's own header objects
  // hold arrays for repeated fields. A header value that is not a string must not make the
  // classifier throw in place of the caller's error.
  it("does not throw when a plain-object header value is not a string", () => {
    const numeric = new FakeApiError(429, { "retry-after": 2 });
    expect(() => classifyError(numeric, NOW_MS)).not.toThrow();
    const repeated = new FakeApiError(429, { "retry-after": ["2"] });
    expect(() => classifyError(repeated, NOW_MS)).not.toThrow();
  });
});

describe("classifyError: connection errors", () => {
  it("retries an error whose code is a connection error", () => {
    expect(classifyError(errorWithCode("ECONNREFUSED"), NOW_MS)).toEqual({
      result: "failure",
      retryable: true,
      errorType: "ECONNREFUSED",
      statusCode: 0,
      retryAfterMs: undefined,
    });
  });

  it("finds the code in a nested cause, as fetch reports it", () => {
    const err = new TypeError("fetch failed", { cause: errorWithCode("ECONNRESET") });
    expect(classifyError(err, NOW_MS)).toMatchObject({
      result: "failure",
      retryable: true,
      errorType: "ECONNRESET",
    });
  });

  it("finds the code a few causes down", () => {
    const inner = errorWithCode("UND_ERR_SOCKET", "other side closed");
    const err = new Error("request failed", {
      cause: new Error("wrapped", { cause: inner }),
    });
    expect(classifyError(err, NOW_MS).errorType).toBe("UND_ERR_SOCKET");
  });

  it("retries a fetch failure without a cause", () => {
    expect(classifyError(new TypeError("fetch failed"), NOW_MS)).toMatchObject({
      result: "failure",
      retryable: true,
      statusCode: 0,
    });
  });

  it.each(["APIConnectionError", "APIConnectionTimeoutError"])(
    "retries an error named %s",
    (name) => {
      const err = new Error("Connection error.");
      err.name = name;
      expect(classifyError(err, NOW_MS)).toMatchObject({
        result: "failure",
        retryable: true,
        errorType: name,
      });
    },
  );

  it("does not treat other codes as connection errors", () => {
    expect(classifyError(errorWithCode("ENOENT"), NOW_MS)).toMatchObject({
      result: "failure",
      retryable: false,
      errorType: "Error",
    });
  });
});

describe("classifyError: other errors", () => {
  it("counts an unknown Error as a failure that is not retried", () => {
    expect(classifyError(new Error("boom"), NOW_MS)).toEqual({
      result: "failure",
      retryable: false,
      errorType: "Error",
      statusCode: 0,
      retryAfterMs: undefined,
    });
  });

  it("names the error class in errorType", () => {
    class ParseError extends Error {
      override readonly name = "ParseError";
    }
    expect(classifyError(new ParseError("bad json"), NOW_MS).errorType).toBe("ParseError");
  });

  it("takes a bug in the caller's own function for the caller's error, not the dependency's", () => {
    for (const err of [
      new TypeError("x is not a function"),
      new ReferenceError("y is not defined"),
      new RangeError("Invalid array length"),
    ]) {
      expect(classifyError(err, NOW_MS)).toMatchObject({
        result: "ignored",
        retryable: false,
        errorType: `caller_${err.name}`,
      });
    }
  });

  it.each([
    ["a string", "boom"],
    ["null", null],
    ["undefined", undefined],
    ["a number", 42],
  ])("classifies %s thrown as an unknown failure", (_what, thrown) => {
    expect(classifyError(thrown, NOW_MS)).toEqual({
      result: "failure",
      retryable: false,
      errorType: "unknown",
      statusCode: 0,
      retryAfterMs: undefined,
    });
  });
});
