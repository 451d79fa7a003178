import pino, { type Logger } from "pino";

/** One JSON line per entry on stdout (or the given destination), ready for a log pipeline. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "bulwark-server" },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}
