/**
 * The hash chain of the audit log. A record's hash covers the previous record's hash and every
 * field of the record in a fixed order, so a changed, removed or reordered record breaks the
 * chain from that point on.
 */
import { createHash, createHmac } from "node:crypto";

/** prev_hash of the first record. */
export const GENESIS_HASH = "0".repeat(64);

/** The fields a record's hash covers, besides the previous hash. */
export interface ChainedFields {
  sequence: number;
  eventId: string;
  eventType: string;
  aggregateId: string;
  payloadHash: string;
  producer: string;
  principal: string;
  timestampMs: number;
  traceId: string;
  causationId: string;
}

/** Version tag in every hashed document, so the encoding can change without ambiguity. */
const ENCODING_VERSION = "bulwark.audit.v1";

/**
 * SHA-256 over the canonical encoding: a JSON array of the version tag, the previous hash and the
 * fields in declaration order. A JSON array of strings and integers has exactly one encoding.
 */
export function recordHash(prevHash: string, f: ChainedFields): string {
  const canonical = JSON.stringify([
    ENCODING_VERSION,
    prevHash,
    f.sequence,
    f.eventId,
    f.eventType,
    f.aggregateId,
    f.payloadHash,
    f.producer,
    f.principal,
    f.timestampMs,
    f.traceId,
    f.causationId,
  ]);
  return createHash("sha256").update(canonical).digest("hex");
}

/**
 * The payload's hash: HMAC-SHA-256 with the server's audit key when one is configured (so a
 * low-entropy payload cannot be confirmed by guessing), plain SHA-256 otherwise.
 */
export function payloadHash(payload: Uint8Array, key: Buffer | undefined): string {
  return key === undefined
    ? createHash("sha256").update(payload).digest("hex")
    : createHmac("sha256", key).update(payload).digest("hex");
}

/** JSON with object keys sorted at every level: one byte sequence per value. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
  });
}
