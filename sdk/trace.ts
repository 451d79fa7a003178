import { randomBytes } from "node:crypto";
import { isSpanContextValid, trace } from "@opentelemetry/api";

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

/**
 * The trace id of the active OpenTelemetry span, when the application runs one (and has an
 * OpenTelemetry SDK with a context manager registered); undefined otherwise. Calls made inside a
 * traced request so join its trace instead of starting their own.
 */
export function activeTraceId(): string | undefined {
  const context = trace.getActiveSpan()?.spanContext();
  return context !== undefined && isSpanContextValid(context) ? context.traceId : undefined;
}

/** The trace id a call runs under: the caller's, else the active span's, else a new one. */
export function callTraceId(given: string | undefined): string {
  return given ?? activeTraceId() ?? newTraceId();
}
