import { isPermanentJobError } from "./deferred/permanent-job-error.ts";
import { retryAfterMsFromHeaders } from "./retry-after.ts";

/** The result kinds of DESIGN §4, as reported to the control plane. */
export type AttemptResult =
  | "success"
  | "failure"
  | "timeout"
  | "rejected"
  | "cancelled"
  | "ignored";

export interface Classification {
  result: AttemptResult;
  /** Whether another attempt may help. */
  retryable: boolean;
  /** Short machine-readable class, e.g. "http_503", "ECONNRESET". */
  errorType: string;
  statusCode: number;
  /** Server-sent back-off, when there was one. */
  retryAfterMs: number | undefined;
}

/** Network error codes that mean "the dependency did not answer": retried and counted. */
const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
]);

/** Longest error type reported; the control plane refuses longer ones. */
const MAX_ERROR_TYPE_LENGTH = 64;

/** Error names of HTTP clients that mean the request did not get an answer. */
const CONNECTION_ERROR_NAMES = new Set(["APIConnectionError", "APIConnectionTimeoutError"]);

/**
 * Classifies an HTTP status: 2xx/3xx success; 408, 429 and 5xx failures worth retrying; any
 * other 4xx is the caller's own error, neither retried nor counted.
 */
export function classifyStatus(
  status: number,
  headers?: { get(name: string): string | null },
  nowMs = Date.now(),
): Classification {
  if (status < 400) {
    return {
      result: "success",
      retryable: false,
      errorType: "",
      statusCode: status,
      retryAfterMs: undefined,
    };
  }
  const transient = status === 408 || status === 429 || status >= 500;
  return {
    result: transient ? "failure" : "ignored",
    retryable: transient,
    errorType: `http_${status}`,
    statusCode: status,
    retryAfterMs: transient ? retryAfterMsFromHeaders(headers, nowMs) : undefined,
  };
}

/**
 * Reads a plain header object as Node and some HTTP clients give it: any case of name, numbers,
 * and arrays for repeated headers (the first value counts).
 */
function plainHeaders(headers: Record<string, unknown>): { get(name: string): string | null } {
  return {
    get(name) {
      const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
      const value = key === undefined ? undefined : headers[key];
      const first = Array.isArray(value) ? value[0] : value;
      return typeof first === "string" || typeof first === "number" ? String(first) : null;
    },
  };
}

function codeOf(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && CONNECTION_CODES.has(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Classifies an error thrown by the guarded function: an HTTP status on the error (as the
 * `openai` package's APIError carries) decides like classifyStatus; connection errors are
 * transient failures; anything else is a non-retryable failure of unknown kind.
 */
/** Errors the JavaScript engine throws for mistakes in code, not for failed I/O. */
const PROGRAMMING_ERRORS = new Set(["TypeError", "ReferenceError", "SyntaxError", "RangeError"]);

export function classifyError(err: unknown, nowMs = Date.now()): Classification {
  // A job the handler declared unprocessable is its own error, not the dependency's.
  if (isPermanentJobError(err)) {
    return {
      result: "ignored",
      retryable: false,
      errorType: "permanent",
      statusCode: 0,
      retryAfterMs: undefined,
    };
  }
  const status = (err as { status?: unknown } | null)?.status;
  if (typeof status === "number" && status >= 100 && status <= 599) {
    const headers = (err as { headers?: unknown }).headers;
    const readable =
      headers instanceof Headers
        ? headers
        : typeof headers === "object" && headers !== null
          ? plainHeaders(headers as Record<string, unknown>)
          : undefined;
    return classifyStatus(status, readable, nowMs);
  }
  const code = codeOf(err);
  const name = err instanceof Error ? err.name : "";
  if (
    code !== undefined ||
    CONNECTION_ERROR_NAMES.has(name) ||
    (err instanceof TypeError && err.message === "fetch failed")
  ) {
    return {
      result: "failure",
      retryable: true,
      errorType: code ?? (CONNECTION_ERROR_NAMES.has(name) ? name : "fetch_failed"),
      statusCode: 0,
      retryAfterMs: undefined,
    };
  }
  // A bug in the caller's own function (undefined.x, a bad argument) says nothing about the
  // dependency: it is the caller's error, thrown back as it is and never counted against the
  // fleet's breaker. Network failures that fetch reports as TypeError are caught above.
  if (PROGRAMMING_ERRORS.has(name) && code === undefined) {
    return {
      result: "ignored",
      retryable: false,
      errorType: `caller_${name}`,
      statusCode: 0,
      retryAfterMs: undefined,
    };
  }
  return {
    result: "failure",
    retryable: false,
    // Error names come from any code; the server takes error types of up to 128 characters.
    errorType:
      err instanceof Error ? err.name.slice(0, MAX_ERROR_TYPE_LENGTH) || "Error" : "unknown",
    statusCode: 0,
    retryAfterMs: undefined,
  };
}
