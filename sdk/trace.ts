import { randomBytes } from "node:crypto";

/** A new W3C trace id: 16 random bytes as 32 lowercase hex digits. */
export function newTraceId(): string {
  return randomBytes(16).toString("hex");
}

/** A new W3C span id: 8 random bytes as 16 lowercase hex digits. */
export function newSpanId(): string {
  return randomBytes(8).toString("hex");
}

/** A `traceparent` header value (W3C Trace Context, version 00, sampled). */
export function traceparent(traceId: string, spanId: string): string {
  return `00-${traceId}-${spanId}-01`;
}
