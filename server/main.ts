import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { startServer } from "./bulwark-server.ts";
import { parseServerConfig, USAGE, UsageError } from "./config.ts";
import { createLogger } from "./logger.ts";
import { TokenFileError, TokenRegistry } from "./security/token-registry.ts";
import { DatabaseOpenError } from "./storage/database.ts";
import { DatabaseInUseError } from "./storage/server-lock.ts";

let config: ReturnType<typeof parseServerConfig>;
try {
  config = parseServerConfig(process.argv.slice(2), process.env);
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  if (err.message === "") {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  process.stderr.write(`bulwark-server: ${err.message}\n${USAGE}\n`);
  process.exit(2);
}

const logger = createLogger(config.logLevel);
let tokens: TokenRegistry | undefined;
let tls: { cert: Buffer; key: Buffer } | undefined;
try {
  tokens = config.tokensFile === undefined ? undefined : TokenRegistry.fromFile(config.tokensFile);
  if (config.tlsCertFile !== undefined && config.tlsKeyFile !== undefined) {
    tls = { cert: readFileSync(config.tlsCertFile), key: readFileSync(config.tlsKeyFile) };
    // Fails here, naming the flags, on a file that is not PEM or a key that does not match.
    createSecureContext(tls);
  }
} catch (err) {
  const flag = err instanceof TokenFileError ? "--tokens-file" : "--tls-cert/--tls-key";
  process.stderr.write(`bulwark-server: ${flag}: ${(err as Error).message}\n`);
  process.exit(2);
}
try {
  const server = await startServer({ ...config, tokens, tls, logger });
  const stop = (signal: string) => {
    logger.info({ signal }, "shutting down");
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
} catch (err) {
  if (err instanceof DatabaseInUseError) {
    process.stderr.write(`bulwark-server: --db: ${err.message}\n`);
    process.exit(2);
  }
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "EADDRINUSE" || code === "EACCES" || code === "EADDRNOTAVAIL") {
    // Which listener failed: the address in the error says.
    const port = (err as { port?: number }).port;
    const flag = port === config.metrics?.port ? "--metrics-port" : "--port";
    process.stderr.write(`bulwark-server: ${flag}: cannot listen: ${(err as Error).message}\n`);
    process.exit(2);
  }
  if (err instanceof DatabaseOpenError) {
    const flag = err.path === config.dbPath ? "--db" : "--audit-db";
    process.stderr.write(`bulwark-server: ${flag}: ${err.message}\n`);
    process.exit(2);
  }
  logger.fatal({ err }, "failed to start");
  process.exit(1);
}
