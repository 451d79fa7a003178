import { NAME_PATTERN } from "../server/domain/names.ts";

/** Options of createBulwark. */
export interface BulwarkOptions {
  /** The control plane's URL, e.g. `http://127.0.0.1:50051`. */
  url: string;
  /** This service's name: letters, digits, '.', '_' and '-', 1 to 128 characters. */
  service: string;
  /**
   * How long an Acquire may take before the SDK decides locally, in milliseconds. Default 300.
   */
  acquireTimeoutMs?: number;
  /** Bearer token for a control plane that has tokens configured (role `service`). */
  token?: string;
  /**
   * PEM certificate(s) of the authority that signed the control plane's TLS certificate, for an
   * `https://` URL signed by a private CA. The system's CAs are used when unset.
   */
  ca?: string | Buffer;
  /**
   * NATS server URL(s), e.g. `nats://127.0.0.1:4222`, for breaker and policy events and the
   * deferred-work queue. Without it, events come over the control plane's Watch stream and
   * deferred work is unavailable.
   */
  nats?: string | readonly string[];
  /** Token for a NATS server that requires one. */
  natsToken?: string;
  /**
   * Ask the control plane (Acquire) before every attempt, as the SDK did before it followed the
   * fleet's state. Default false: attempts are admitted locally while the followed breaker is
   * CLOSED, and only HALF_OPEN asks the server for a permit. Strict mode costs a round trip per
   * attempt and lets no call slip through after the fleet's breaker opened.
   */
  strict?: boolean;
}

export interface NormalizedOptions {
  url: string;
  service: string;
  acquireTimeoutMs: number;
  token: string | undefined;
  ca: string | Buffer | undefined;
  /** Empty when NATS is not configured. */
  nats: readonly string[];
  natsToken: string | undefined;
  strict: boolean;
}

/**
 * A healthy Acquire takes about a millisecond on a LAN; 300 ms only lapses when the control
 * plane is in trouble, and bounds what each call pays while the SDK notices it.
 */
export const DEFAULT_ACQUIRE_TIMEOUT_MS = 300;

/** Checks options and fills in defaults; a RangeError names the bad option and value. */
export function normalizeOptions(options: BulwarkOptions): NormalizedOptions {
  if (typeof options !== "object" || options === null) {
    throw new RangeError("options must be an object with at least url and service");
  }
  let url: URL;
  try {
    url = new URL(options.url);
  } catch {
    throw new RangeError(`options.url must be an http(s) URL; got ${JSON.stringify(options.url)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new RangeError(`options.url must be an http(s) URL; got ${JSON.stringify(options.url)}`);
  }
  if (typeof options.service !== "string" || !NAME_PATTERN.test(options.service)) {
    throw new RangeError(
      `options.service must be 1-128 letters, digits, '.', '_' or '-', with no empty part between dots; got ${JSON.stringify(options.service)}`,
    );
  }
  const acquireTimeoutMs = options.acquireTimeoutMs ?? DEFAULT_ACQUIRE_TIMEOUT_MS;
  if (!Number.isInteger(acquireTimeoutMs) || acquireTimeoutMs < 1 || acquireTimeoutMs > 60_000) {
    throw new RangeError(
      `options.acquireTimeoutMs must be an integer in [1, 60000]; got ${acquireTimeoutMs}`,
    );
  }
  if (
    options.token !== undefined &&
    (typeof options.token !== "string" || !/^\S{1,4096}$/.test(options.token))
  ) {
    throw new RangeError("options.token must be 1-4096 characters without whitespace");
  }
  if (options.ca !== undefined && url.protocol !== "https:") {
    throw new RangeError("options.ca needs an https:// options.url");
  }
  const nats = options.nats === undefined ? [] : [options.nats].flat();
  for (const server of nats) {
    if (typeof server !== "string" || !/^(nats|tls|wss?):\/\/\S+$|^[^\s/]+:\d+$/.test(server)) {
      throw new RangeError(
        `options.nats must be NATS URL(s) like nats://127.0.0.1:4222; got ${JSON.stringify(server)}`,
      );
    }
  }
  if (options.strict !== undefined && typeof options.strict !== "boolean") {
    throw new RangeError(`options.strict must be a boolean; got ${JSON.stringify(options.strict)}`);
  }
  if (
    options.natsToken !== undefined &&
    (typeof options.natsToken !== "string" || !/^\S{1,4096}$/.test(options.natsToken))
  ) {
    throw new RangeError("options.natsToken must be 1-4096 characters without whitespace");
  }
  return {
    url: options.url.replace(/\/+$/, ""),
    service: options.service,
    acquireTimeoutMs,
    token: options.token,
    ca: options.ca,
    nats,
    natsToken: options.natsToken,
    strict: options.strict ?? false,
  };
}
