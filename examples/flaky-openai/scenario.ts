/**
 * The scenario model of the flaky OpenAI-compatible server: a named list of timed phases, each
 * with one fault mode. `parseScenario` turns untrusted JSON into a complete `Scenario` (every
 * default filled in) or throws a `ScenarioError` naming the field, the rule and the value.
 */
import { readFileSync } from "node:fs";

/** Every fault mode, in the order error messages list them. */
export const FAULT_MODES = [
  "healthy",
  "slow",
  "errors",
  "rate-limited",
  "hanging",
  "resets",
  "down",
] as const;

/**
 * How the server treats requests during a phase.
 * - `healthy`: a completion after `latencyMs`.
 * - `slow`: the same, with a long default latency.
 * - `errors`: a fraction `errorRate` of requests get a 5xx from `statuses`, the rest a completion.
 * - `rate-limited`: 429 with `retry-after` headers.
 * - `hanging`: the request is read and never answered.
 * - `resets`: the connection is destroyed without a response.
 * - `down`: the listening socket is closed, so connections are refused.
 */
export type FaultMode = (typeof FAULT_MODES)[number];

/** One timed stretch of a scenario. Every field is filled in after parsing. */
export interface Phase {
  /** Shown in logs, stats and the `x-flaky-phase` header; 1..64 characters. */
  name: string;
  /** How long the phase lasts, in ms; integer 1..3_600_000. The last phase outlives its duration. */
  durationMs: number;
  /** The fault injected during the phase. */
  mode: FaultMode;
  /** Delay before any answer, in ms. Default 20, or 1500 in `slow` mode. */
  latencyMs: number;
  /** Fraction 0..1 of requests failed in `errors` mode. Default 1. */
  errorRate: number;
  /** Statuses picked uniformly in `errors` mode, each 500..599. Default [500, 502, 503]. */
  statuses: number[];
  /** Value of `retry-after` in `rate-limited` mode, in seconds; 0..3600. Default 1. */
  retryAfterSeconds: number;
}

/** A named sequence of phases, played from the moment the server starts. */
export interface Scenario {
  /** 1..64 characters. */
  name: string;
  /** 1..100 phases, played in order. */
  phases: Phase[];
}

/** Latency of every mode but `slow`, in ms: looks like a network hop without slowing tests. */
export const DEFAULT_LATENCY_MS = 20;
/** Latency of `slow` mode, in ms: past a typical 1 s client timeout, short enough for a demo. */
export const DEFAULT_SLOW_LATENCY_MS = 1500;
/** An `errors` phase fails every request unless told otherwise, so outages are unambiguous. */
export const DEFAULT_ERROR_RATE = 1;
/** The 5xx statuses an API behind a gateway returns most during incidents. */
export const DEFAULT_STATUSES: readonly number[] = [500, 502, 503];
/** Short enough that a client honouring `retry-after` retries within a demo phase. */
export const DEFAULT_RETRY_AFTER_SECONDS = 1;

/** Names are labels in logs and headers; longer ones are a mistake, not a need. */
const MAX_NAME_CHARS = 64;
/** A scenario is a script for a test or demo; a hundred phases is already far beyond that. */
const MAX_PHASES = 100;
/** One hour: anything longer is a real outage, not a scenario. */
const MAX_DURATION_MS = 3_600_000;
/** Ten minutes: past every sane client timeout; to never answer, use `hanging`. */
const MAX_LATENCY_MS = 600_000;
/** One hour, the longest back-off a real API plausibly asks for. */
const MAX_RETRY_AFTER_SECONDS = 3600;

const SCENARIO_FIELDS = ["name", "phases"];
const PHASE_FIELDS = [
  "name",
  "durationMs",
  "mode",
  "latencyMs",
  "errorRate",
  "statuses",
  "retryAfterSeconds",
];

/** Thrown when a scenario cannot be read or is invalid. */
export class ScenarioError extends Error {
  override readonly name = "ScenarioError";
  /** Path of the offending field, e.g. `phases[2].mode`; "" when the whole document is wrong. */
  readonly field: string;

  constructor(message: string, field: string, options?: ErrorOptions) {
    super(message, options);
    this.field = field;
  }
}

/** Validates JSON (already parsed) into a complete `Scenario`; throws `ScenarioError`. */
export function parseScenario(json: unknown): Scenario {
  const root = expectObject(json, "", "scenario", SCENARIO_FIELDS);
  const name = expectName(root.name, "name");
  const list = root.phases;
  if (!Array.isArray(list) || list.length < 1 || list.length > MAX_PHASES) {
    throw invalid("phases", `must be an array of 1..${MAX_PHASES} phases`, list);
  }
  return { name, phases: list.map((item, i) => parsePhase(item, `phases[${i}]`)) };
}

/**
 * Validates one phase and fills in its defaults; throws `ScenarioError`. Exported so tests can
 * build a phase to pass to `override()`. `field` prefixes the paths in error messages.
 */
export function parsePhase(json: unknown, field = "phase"): Phase {
  const raw = expectObject(json, field, field, PHASE_FIELDS);
  const name = expectName(raw.name, `${field}.name`);
  const durationMs = expectInteger(raw.durationMs, `${field}.durationMs`, 1, MAX_DURATION_MS);

  const mode = raw.mode;
  if (typeof mode !== "string" || !isFaultMode(mode)) {
    throw invalid(`${field}.mode`, `must be one of ${FAULT_MODES.join(", ")}`, mode);
  }

  // Optional fields: absent means the default of the mode.
  const defaultLatencyMs = mode === "slow" ? DEFAULT_SLOW_LATENCY_MS : DEFAULT_LATENCY_MS;
  const latencyMs =
    raw.latencyMs === undefined
      ? defaultLatencyMs
      : expectInteger(raw.latencyMs, `${field}.latencyMs`, 0, MAX_LATENCY_MS);

  let errorRate = DEFAULT_ERROR_RATE;
  if (raw.errorRate !== undefined) {
    const value = raw.errorRate;
    if (typeof value !== "number" || !(value >= 0 && value <= 1)) {
      throw invalid(`${field}.errorRate`, "must be a number 0..1", value);
    }
    errorRate = value;
  }

  let statuses = [...DEFAULT_STATUSES];
  if (raw.statuses !== undefined) {
    if (!Array.isArray(raw.statuses) || raw.statuses.length === 0) {
      throw invalid(`${field}.statuses`, "must be a non-empty array of statuses", raw.statuses);
    }
    statuses = raw.statuses.map((s, i) => expectInteger(s, `${field}.statuses[${i}]`, 500, 599));
  }

  const retryAfterSeconds =
    raw.retryAfterSeconds === undefined
      ? DEFAULT_RETRY_AFTER_SECONDS
      : expectInteger(
          raw.retryAfterSeconds,
          `${field}.retryAfterSeconds`,
          0,
          MAX_RETRY_AFTER_SECONDS,
        );

  return { name, durationMs, mode, latencyMs, errorRate, statuses, retryAfterSeconds };
}

/** Reads and validates a scenario JSON file; every error message starts with the path. */
export function loadScenarioFile(path: string): Scenario {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ScenarioError(`${path}: cannot read the file (${errorText(err)})`, "", {
      cause: err,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ScenarioError(`${path}: not valid JSON (${errorText(err)})`, "", { cause: err });
  }
  try {
    return parseScenario(json);
  } catch (err) {
    if (!(err instanceof ScenarioError)) throw err;
    throw new ScenarioError(`${path}: ${err.message}`, err.field, { cause: err });
  }
}

/**
 * The phase in force `elapsedMs` after the scenario started. A phase covers [start, end); after
 * the last phase ends, the last phase stays in force. Negative times give the first phase.
 */
export function phaseAt(scenario: Scenario, elapsedMs: number): { index: number; phase: Phase } {
  let endMs = 0;
  for (const [index, phase] of scenario.phases.entries()) {
    endMs += phase.durationMs;
    if (elapsedMs < endMs) return { index, phase };
  }
  const index = scenario.phases.length - 1;
  const phase = scenario.phases[index];
  if (phase === undefined) throw new RangeError(`scenario "${scenario.name}" has no phases`);
  return { index, phase };
}

/** Time after the scenario start at which phase `index` ends, in ms. */
export function phaseEndsAtMs(scenario: Scenario, index: number): number {
  return scenario.phases.slice(0, index + 1).reduce((sum, phase) => sum + phase.durationMs, 0);
}

function isFaultMode(value: string): value is FaultMode {
  return (FAULT_MODES as readonly string[]).includes(value);
}

function expectObject(
  value: unknown,
  field: string,
  label: string,
  known: string[],
): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw invalid(field, "must be an object", value, label);
  }
  const record = value as Record<string, unknown>;
  // Unknown keys are almost always typos ("latency" for "latencyMs"); silently ignoring them
  // would run a different scenario than the one the author meant.
  for (const key of Object.keys(record)) {
    if (!known.includes(key)) {
      const path = field === "" ? key : `${field}.${key}`;
      throw new ScenarioError(`${path} is not a known field (known: ${known.join(", ")})`, path);
    }
  }
  return record;
}

function expectName(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length < 1 || value.length > MAX_NAME_CHARS) {
    throw invalid(field, `must be a string of 1..${MAX_NAME_CHARS} characters`, value);
  }
  return value;
}

function expectInteger(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(field, `must be an integer ${min}..${max}`, value);
  }
  return value;
}

function invalid(field: string, rule: string, value: unknown, label = field): ScenarioError {
  return new ScenarioError(`${label} ${rule}; got ${describe(value)}`, field);
}

/** A short rendering of a JSON value for error messages. */
function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === "object") return "an object";
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
