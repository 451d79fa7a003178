import { createHash } from "node:crypto";

/**
 * The canonical encoding of a request: JSON with the keys of every object sorted by UTF-16 code
 * unit order, no whitespace, `undefined` members left out, byte arrays written as
 * `{"$bytes":"<base64>"}`. Two requests that are equal as JSON values encode to the same bytes,
 * whatever order their keys were written in. BigInt and cyclic values are refused (TypeError).
 */
export function canonicalRequestJson(value: unknown): string {
  return JSON.stringify(value ?? null, (_key, v: unknown) => {
    if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString("base64") };
    if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
    if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) {
      return { $bytes: Buffer.from(v as ArrayBuffer).toString("base64") };
    }
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    );
  });
}

/** SHA-256 of the canonical encoding: the request hash the ledger compares (32 bytes). */
export function requestHash(value: unknown): Uint8Array {
  return createHash("sha256").update(canonicalRequestJson(value)).digest();
}
