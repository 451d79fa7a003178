/**
 * Command line for the flaky OpenAI-compatible server:
 *
 *   npm run flaky-openai -- --scenario FILE [--port N] [--host H]
 *
 * Prints one JSON line when listening and one per phase change on stdout; SIGINT or SIGTERM
 * closes the server. A bad flag or scenario prints an error naming it and exits with status 2.
 */
import { parseArgs } from "node:util";
import {
  DEFAULT_HOST,
  DEFAULT_PORT,
  type FlakyOpenAI,
  startFlakyOpenAI,
} from "./flaky-openai-server.ts";
import { loadScenarioFile, type Scenario, ScenarioError } from "./scenario.ts";

/** Exit status for a usage error, as most Unix tools use. */
const EXIT_USAGE = 2;

const USAGE = "usage: flaky-openai --scenario FILE [--port N] [--host H]";

interface CliOptions {
  scenario: Scenario;
  port: number;
  host: string;
}

class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Turns argv into complete options; throws UsageError naming the flag. */
function parseCli(argv: string[]): CliOptions | "help" {
  const { values, positionals, tokens } = parseArgs({
    args: argv,
    options: {
      scenario: { type: "string" },
      port: { type: "string" },
      host: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    // Not strict: node's own messages for unknown flags are replaced by ours below.
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  for (const token of tokens) {
    if (token.kind !== "option") continue;
    if (!["scenario", "port", "host", "help"].includes(token.name)) {
      throw new UsageError(`unknown flag ${token.rawName}; ${USAGE}`);
    }
    if (token.name !== "help" && token.value === undefined) {
      throw new UsageError(`${token.rawName} needs a value; ${USAGE}`);
    }
  }
  if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}"; ${USAGE}`);
  }
  if (values.help === true) return "help";

  let port = DEFAULT_PORT;
  if (typeof values.port === "string") {
    port = Number(values.port);
    if (!/^\d+$/.test(values.port) || port > 65535) {
      throw new UsageError(`--port must be an integer 0..65535; got "${values.port}"`);
    }
  }
  const host = typeof values.host === "string" ? values.host : DEFAULT_HOST;
  if (host === "") throw new UsageError('--host must not be empty; got ""');

  if (typeof values.scenario !== "string") throw new UsageError(`--scenario is required; ${USAGE}`);
  let scenario: Scenario;
  try {
    scenario = loadScenarioFile(values.scenario);
  } catch (err) {
    if (err instanceof ScenarioError) throw new UsageError(`--scenario ${err.message}`);
    throw err;
  }
  return { scenario, port, host };
}

function printLine(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function main(): Promise<void> {
  let options: CliOptions | "help";
  try {
    options = parseCli(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`flaky-openai: ${err.message}\n`);
    process.exitCode = EXIT_USAGE;
    return;
  }
  if (options === "help") {
    process.stdout.write(`${USAGE}\n`);
    return;
  }

  let server: FlakyOpenAI;
  try {
    server = await startFlakyOpenAI({
      ...options,
      onPhaseChange: (change) =>
        printLine({
          event: "phase",
          index: change.index,
          name: change.phase.name,
          mode: change.phase.mode,
          elapsedMs: change.atMs - server.startedAtMs,
        }),
    });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    process.stderr.write(
      `flaky-openai: cannot listen on ${options.host}:${options.port} (${reason})\n`,
    );
    process.exitCode = 1;
    return;
  }
  const first = server.currentPhase();
  printLine({
    event: "listening",
    baseUrl: server.baseUrl,
    scenario: options.scenario.name,
    phase: first.phase.name,
    mode: first.phase.mode,
  });

  const stop = (signal: NodeJS.Signals) => {
    void server.close().then(() => printLine({ event: "closed", signal, stats: server.stats() }));
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

await main();
