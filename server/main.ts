import { startServer } from "./bulwark-server.ts";
import { parseServerConfig, USAGE, UsageError } from "./config.ts";
import { createLogger } from "./logger.ts";

let config: ReturnType<typeof parseServerConfig>;
try {
  config = parseServerConfig(process.argv.slice(2), process.env);
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  if (err.message !== "") process.stderr.write(`bulwark-server: ${err.message}\n`);
  process.stderr.write(`${USAGE}\n`);
  process.exit(err.message === "" ? 0 : 2);
}

const logger = createLogger(config.logLevel);
try {
  const server = await startServer({ ...config, logger });
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
  logger.fatal({ err }, "failed to start");
  process.exit(1);
}
