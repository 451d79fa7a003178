import { statSync } from "node:fs";
import { parseArgs } from "node:util";

/** The gRPC port conventionally used for a local control plane. */
export const DEFAULT_PORT = 50051;
/** Loopback by default: nothing is exposed until an operator chooses an address. */
export const DEFAULT_HOST = "127.0.0.1";
/** The port Prometheus exporters conventionally use. */
export const DEFAULT_METRICS_PORT = 9464;
/** In the working directory, so a first run needs no set-up. */
export const DEFAULT_DB_PATH = "bulwark.db";

export interface ServerConfig {
  dbPath: string;
  auditDbPath: string | undefined;
  auditKeyFile: string | undefined;
  host: string;
  port: number;
  natsUrl: string | undefined;
  logLevel: string;
  tokensFile: string | undefined;
  /** Where /metrics, /healthz and /readyz are served; undefined when turned off. */
  metrics: { host: string; port: number } | undefined;
  tlsCertFile: string | undefined;
  tlsKeyFile: string | undefined;
}

/** A command-line problem; the message names the flag. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

export const USAGE = `Usage: bulwark-server [options]
  --db PATH         SQLite file (env BULWARK_DB; default ${DEFAULT_DB_PATH})
  --audit-db PATH   audit log SQLite file (env BULWARK_AUDIT_DB; default: --db with .audit)
  --audit-key-file F  key for HMAC-SHA-256 payload hashes (env BULWARK_AUDIT_KEY_FILE)
  --host HOST       listen address (env BULWARK_HOST; default ${DEFAULT_HOST})
  --port N          listen port, 0 for any free one (env BULWARK_PORT; default ${DEFAULT_PORT})
  --nats URL[,URL]  publish events on NATS (env BULWARK_NATS_URL; default: Watch stream only)
  --log-level L     trace, debug, info, warn, error (env BULWARK_LOG_LEVEL; default info)
  --tokens-file F   bearer tokens with roles, stored as SHA-256 hashes (env BULWARK_TOKENS_FILE);
                    required unless --host is a loopback address
  --tls-cert F      PEM certificate chain; serve TLS (env BULWARK_TLS_CERT; needs --tls-key)
  --tls-key F       PEM private key (env BULWARK_TLS_KEY; needs --tls-cert)
  --metrics-port N  HTTP port of /metrics, /healthz and /readyz, 0 for any free one, off to
                    turn them off (env BULWARK_METRICS_PORT; default ${DEFAULT_METRICS_PORT})
  --metrics-host H  their address; they need no token (env BULWARK_METRICS_HOST; default ${DEFAULT_HOST})`;

const LEVELS = new Set(["trace", "debug", "info", "warn", "error", "fatal", "silent"]);

/** Reads flags, then environment variables, then defaults. */
export function parseServerConfig(argv: string[], env: NodeJS.ProcessEnv): ServerConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      options: {
        db: { type: "string" },
        "audit-db": { type: "string" },
        "audit-key-file": { type: "string" },
        host: { type: "string" },
        port: { type: "string" },
        nats: { type: "string" },
        "log-level": { type: "string" },
        "tokens-file": { type: "string" },
        "tls-cert": { type: "string" },
        "tls-key": { type: "string" },
        "metrics-port": { type: "string" },
        "metrics-host": { type: "string" },
        help: { type: "boolean" },
      },
    }).values;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) throw new UsageError("");
  const str = (flag: string, envName: string) =>
    (values[flag] as string | undefined) ?? env[envName] ?? undefined;

  const portText = str("port", "BULWARK_PORT") ?? String(DEFAULT_PORT);
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65_535) {
    const source = values.port === undefined ? "BULWARK_PORT" : "--port";
    throw new UsageError(
      `${source} must be an integer in [0, 65535]; got ${JSON.stringify(portText)}`,
    );
  }
  const dbPath = str("db", "BULWARK_DB") ?? DEFAULT_DB_PATH;
  if (dbPath === "") throw new UsageError("--db must not be empty");
  const logLevel = str("log-level", "BULWARK_LOG_LEVEL") ?? "info";
  if (!LEVELS.has(logLevel)) {
    throw new UsageError(
      `--log-level must be one of ${[...LEVELS].join(", ")}; got ${JSON.stringify(logLevel)}`,
    );
  }
  const natsUrl = str("nats", "BULWARK_NATS_URL") || undefined;
  if (natsUrl !== undefined && !/^(nats|tls|wss?):\/\/|^[\w.-]+:\d+/.test(natsUrl)) {
    throw new UsageError(
      `--nats must be a NATS URL such as nats://127.0.0.1:4222; got ${JSON.stringify(natsUrl)}`,
    );
  }
  const auditDbPath = str("audit-db", "BULWARK_AUDIT_DB") || undefined;
  if (auditDbPath !== undefined && auditDbPath === dbPath && dbPath !== ":memory:") {
    throw new UsageError("--audit-db must be another file than --db: the audit log is kept apart");
  }
  const auditKeyFile = str("audit-key-file", "BULWARK_AUDIT_KEY_FILE") || undefined;
  if (auditKeyFile !== undefined) {
    let size: number;
    try {
      size = statSync(auditKeyFile).size;
    } catch {
      throw new UsageError(`--audit-key-file cannot be read: ${JSON.stringify(auditKeyFile)}`);
    }
    if (size < 16) {
      throw new UsageError(
        `--audit-key-file must hold at least 16 bytes; ${auditKeyFile} has ${size}`,
      );
    }
  }
  const tokensFile = str("tokens-file", "BULWARK_TOKENS_FILE") || undefined;
  const tlsCertFile = str("tls-cert", "BULWARK_TLS_CERT") || undefined;
  const tlsKeyFile = str("tls-key", "BULWARK_TLS_KEY") || undefined;
  if ((tlsCertFile === undefined) !== (tlsKeyFile === undefined)) {
    throw new UsageError("--tls-cert and --tls-key must be given together");
  }
  const host = str("host", "BULWARK_HOST") ?? DEFAULT_HOST;
  if (tokensFile === undefined && !isLoopback(host)) {
    throw new UsageError(
      `--tokens-file is required when --host is not a loopback address (got ${JSON.stringify(host)}): without tokens anyone who reaches the port could change policies`,
    );
  }
  const metricsPortText =
    str("metrics-port", "BULWARK_METRICS_PORT") ?? String(DEFAULT_METRICS_PORT);
  let metrics: ServerConfig["metrics"];
  if (metricsPortText !== "off") {
    const metricsPort = Number(metricsPortText);
    if (!/^\d+$/.test(metricsPortText) || metricsPort > 65_535) {
      throw new UsageError(
        `--metrics-port must be an integer in [0, 65535] or off; got ${JSON.stringify(metricsPortText)}`,
      );
    }
    // Loopback unless chosen: metrics need no token, so they are not exposed by default.
    metrics = {
      host: str("metrics-host", "BULWARK_METRICS_HOST") ?? DEFAULT_HOST,
      port: metricsPort,
    };
  }
  return {
    metrics,
    tokensFile,
    tlsCertFile,
    tlsKeyFile,
    dbPath,
    auditDbPath,
    auditKeyFile,
    host,
    port,
    natsUrl,
    logLevel,
  };
}

/** Whether a listen address only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
