import { classifyStatus } from "./classify.ts";
import type { BulwarkError } from "./errors.ts";
import type { AttemptContext, CallOptions, CallResult } from "./guarded-call.ts";
import { responseCodec } from "./result-codec.ts";

/** Response header set on a fallback response, so clients and logs can tell it apart. */
export const DEGRADED_HEADER = "x-bulwark-degraded";
/** Request header that carries an idempotency key, both from the caller and to the dependency. */
export const IDEMPOTENCY_KEY_HEADER = "idempotency-key";

export interface GuardedFetchOptions {
  /**
   * Builds the response to return when the call fails (breaker open, retries exhausted,
   * deadline). It is marked with the `x-bulwark-degraded: true` header.
   */
  fallback?: (error: BulwarkError, request: Request) => Response | Promise<Response>;
  /** The fetch to guard; the global fetch by default. */
  fetch?: typeof globalThis.fetch;
  /** Overall deadline per request in milliseconds (at most the policy's). */
  deadlineMs?: number;
  /**
   * The idempotency key of a request. Default: the request's own `Idempotency-Key` header. A
   * request with a key runs once per key across the fleet: its response (status, headers and
   * whole body) is stored, and a later request with the same key, method, URL and body gets it
   * back without reaching the dependency. The key is sent as `Idempotency-Key` on every attempt.
   */
  idempotencyKey?: (request: Request) => string | undefined;
  /** A shared idempotency scope (see IdempotencyOptions.scope); the service's own by default. */
  idempotencyScope?: string;
  /** Run keyed requests without the ledger when the control plane cannot be reached. */
  runWithoutLedger?: boolean;
}

type Execute = <T>(
  dependency: string,
  fn: (ctx: AttemptContext) => Promise<T>,
  options: CallOptions<T>,
) => Promise<CallResult<T>>;

function markDegraded(response: Response): Response {
  const headers = new Headers(response.headers);
  headers.set(DEGRADED_HEADER, "true");
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}

/**
 * A fetch that runs every request as a guarded call: `new OpenAI({ fetch, maxRetries: 0 })` is
 * protected without other changes. Each attempt sends `traceparent`. A 408, 429 or 5xx answer is
 * retried as the policy says and, when attempts run out, returned as it came (or replaced by the
 * fallback); other 4xx answers are returned at once. The request body must be replayable (a
 * string, bytes, or form data): a stream body cannot be sent twice, so such requests get one
 * attempt.
 */
export function createGuardedFetch(
  execute: Execute,
  dependency: string,
  options: GuardedFetchOptions = {},
): typeof globalThis.fetch {
  const inner = options.fetch ?? globalThis.fetch;
  return async (input, init) => {
    const request = new Request(input, init);
    const callerSignal = init?.signal ?? undefined;
    const body = request.body === null ? undefined : await request.arrayBuffer();
    const fallback = options.fallback;
    const key =
      options.idempotencyKey?.(request) ?? request.headers.get(IDEMPOTENCY_KEY_HEADER) ?? undefined;
    const result = await execute(
      dependency,
      (ctx) => {
        const headers = new Headers(request.headers);
        headers.set("traceparent", ctx.traceparent);
        if (key !== undefined) headers.set(IDEMPOTENCY_KEY_HEADER, key);
        return inner(request.url, {
          method: request.method,
          headers,
          body,
          signal: ctx.signal,
          redirect: request.redirect,
        });
      },
      {
        ...(callerSignal === undefined ? {} : { signal: callerSignal }),
        ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
        ...(key === undefined
          ? {}
          : {
              idempotencyKey: key,
              idempotency: {
                // Headers are left out: tokens and tracing headers change between retries.
                request: {
                  method: request.method,
                  url: request.url,
                  body: body === undefined ? null : new Uint8Array(body),
                },
                ...(options.idempotencyScope === undefined
                  ? {}
                  : { scope: options.idempotencyScope }),
                codec: responseCodec,
                runWithoutLedger: options.runWithoutLedger ?? false,
              },
            }),
        ...(fallback === undefined
          ? {}
          : {
              fallback: async (error: BulwarkError) => markDegraded(await fallback(error, request)),
            }),
        classifyValue: (response: Response) => {
          const c = classifyStatus(response.status, response.headers);
          return c.result === "success" ? undefined : c;
        },
        discardValue: (response: Response) => {
          response.body?.cancel().catch(() => {});
        },
      },
    );
    return result.value;
  };
}
