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

/** A string field as `<length>:<text>`: no separator inside a field can fake a boundary. */
function field(text: string): string {
  return `${text.length}:${text}`;
}

/**
 * SHA-256 (HMAC-SHA-256 with the server's audit key) over the canonical encoding: the version tag, the previous hash and the fields in
 * declaration order, strings length-prefixed and integers in decimal, separated by '|'. Each
 * record has exactly one encoding, and it is cheap to build (Verify runs it per record).
 */
export function recordHash(prevHash: string, f: ChainedFields, key?: Buffer): string {
  const canonical =
    `${ENCODING_VERSION}|${prevHash}|${f.sequence}|${field(f.eventId)}|${field(f.eventType)}|` +
    `${field(f.aggregateId)}|${f.payloadHash}|${field(f.producer)}|${field(f.principal)}|` +
    `${f.timestampMs}|${field(f.traceId)}|${field(f.causationId)}`;
  // With an audit key the chain itself is keyed: rewriting a record and recomputing every hash
  // after it then needs the key, not only write access to the file.
  return (key === undefined ? createHash("sha256") : createHmac("sha256", key))
    .update(canonical)
    .digest("hex");
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
