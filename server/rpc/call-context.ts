import { randomUUID } from "node:crypto";
import { createContextKey, type HandlerContext } from "@connectrpc/connect";

/** What every handler knows about the call it serves. */
export interface CallInfo {
  requestId: string;
  /**
   * Who asked: the name of the caller's bearer token when the server has tokens configured;
   * otherwise (loopback only) what the caller claims in the `x-bulwark-principal` header.
   */
  principal: string;
  /** The W3C trace id from the `traceparent` header; empty when there is none. */
  traceId: string;
}

/** Header a caller names itself with. */
export const PRINCIPAL_HEADER = "x-bulwark-principal";

export const callInfoKey = createContextKey<CallInfo>({
  requestId: "",
  principal: "anonymous",
  traceId: "",
});

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

/** The one thing the boundary needs of request headers, whichever library carried the call. */
export interface HeaderReader {
  get(name: string): string | null;
}

/** Reads the call's identity and correlation headers. */
export function callInfoFromHeaders(headers: HeaderReader): CallInfo {
  const traceId = TRACEPARENT.exec(headers.get("traceparent") ?? "")?.[1] ?? "";
  const principal = headers.get(PRINCIPAL_HEADER)?.slice(0, 128) || "anonymous";
  const requestId = headers.get("x-request-id")?.slice(0, 128) || randomUUID();
  return { requestId, principal, traceId };
}

export function callInfo(ctx: HandlerContext): CallInfo {
  return ctx.values.get(callInfoKey);
}
