/**
 * How a call's result is stored in the idempotency ledger and handed back to later callers of the
 * same key. `encode` may consume the value (a Response's body) and returns the value to give the
 * caller in its place.
 */
export interface ResultCodec<T> {
  encode(value: T): Promise<{ bytes: Uint8Array; value: T }>;
  decode(bytes: Uint8Array): T;
}

/**
 * The default for `call`, `execute` and `once`: the value as JSON, inside `{"v": …}` so that
 * `undefined` survives. A later caller gets what `JSON.parse` makes of it: plain data, no class
 * instances, Dates as strings. A value JSON cannot hold (BigInt, cycles) is not stored.
 */
export function jsonCodec<T>(): ResultCodec<T> {
  return {
    async encode(value) {
      return { bytes: Buffer.from(JSON.stringify({ v: value })), value };
    },
    decode(bytes) {
      return (JSON.parse(Buffer.from(bytes).toString("utf8")) as { v: T }).v;
    },
  };
}

interface StoredResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** The body, base64. */
  body: string;
}

/**
 * The guarded fetch's codec: a Response as its status, status text, headers and whole body
 * (read into memory, so it can be stored), JSON-encoded with the body in base64. A later caller
 * gets a new Response with the same status, headers and body.
 */
export const responseCodec: ResultCodec<Response> = {
  async encode(response) {
    const body = new Uint8Array(await response.arrayBuffer());
    const stored: StoredResponse = {
      status: response.status,
      statusText: response.statusText,
      headers: [...response.headers.entries()],
      body: Buffer.from(body).toString("base64"),
    };
    return {
      bytes: Buffer.from(JSON.stringify(stored)),
      value: new Response(nullBodyStatus(response.status) ? null : body, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      }),
    };
  },
  decode(bytes) {
    const stored = JSON.parse(Buffer.from(bytes).toString("utf8")) as StoredResponse;
    return new Response(nullBodyStatus(stored.status) ? null : Buffer.from(stored.body, "base64"), {
      status: stored.status,
      statusText: stored.statusText,
      headers: stored.headers,
    });
  },
};

/** Statuses whose Response may not have a body (Fetch standard, "null body status"). */
function nullBodyStatus(status: number): boolean {
  return status === 101 || status === 204 || status === 205 || status === 304;
}
