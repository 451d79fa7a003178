/**
 * A fault-injecting HTTP server that speaks enough of the OpenAI chat completions API for the
 * official client: it plays a `Scenario` of timed phases (healthy, slow, errors, rate-limited,
 * hanging, resets, down) and records every request that reaches it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { respondWithFault } from "./fault-response.ts";
import { type Phase, phaseAt, phaseEndsAtMs, type Scenario } from "./scenario.ts";

/** Loopback only: a fault injector has no business on a public interface. */
export const DEFAULT_HOST = "127.0.0.1";
/** Let the OS pick a free port, so parallel tests never collide. */
export const DEFAULT_PORT = 0;
/** Pause before binding the port again when reopening after a down phase failed. */
const REOPEN_RETRY_MS = 50;
/** Bounds the arrival log of a long run; stats are counted apart and stay exact. */
const MAX_ARRIVALS = 100_000;

/** Options of `startFlakyOpenAI`. */
export interface FlakyOpenAIOptions {
  /** The phases to play; the clock starts when `startFlakyOpenAI` resolves. */
  scenario: Scenario;
  /** Port to listen on; default 0 (any free port). Reopening after `down` reuses it. */
  port?: number;
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** Called synchronously whenever the phase in force changes (time or override); must not throw. */
  onPhaseChange?: (change: PhaseChange) => void;
  /** Source of randomness in [0, 1) for `errors` mode; default Math.random. Tests pin it. */
  random?: () => number;
}

/** The phase in force. `index` is the scenario index, or past the end for an override. */
export interface PhaseInForce {
  /** Index into `stats()`: scenario phases first, then each distinct override phase. */
  index: number;
  phase: Phase;
  /** True when `override()` forced the phase rather than the clock. */
  overridden: boolean;
}

/** A phase change, as given to `onPhaseChange`. */
export interface PhaseChange extends PhaseInForce {
  /** When the change was noticed, in epoch ms. */
  atMs: number;
}

/** One request that reached the server. */
export interface Arrival {
  /** When the request arrived, in epoch ms (like `startedAtMs`). */
  atMs: number;
  /** Index of the phase in force, as in `PhaseInForce.index`. */
  phaseIndex: number;
  phaseName: string;
  /** Status answered; 0 when hanging, reset, dropped before the answer, or not answered yet. */
  status: number;
  /** The request's `traceparent` header, or "". */
  traceparent: string;
  /** The request's `idempotency-key` header, or "". */
  idempotencyKey: string;
}

/** Request counts of one phase. */
export interface PhaseStats {
  name: string;
  mode: Phase["mode"];
  /** Requests that arrived during the phase. */
  requests: number;
  /** Outcomes by status, "0" for no response; a request still waiting is not counted yet. */
  byStatus: Record<string, number>;
}

/**
 * A running flaky server. Known limitation: after a `down` phase the port is bound again; if
 * another process took it meanwhile, the server retries every 50 ms and stays unreachable.
 */
export interface FlakyOpenAI {
  /** What to pass as `baseURL` to the OpenAI client, e.g. `http://127.0.0.1:PORT/v1`. */
  readonly baseUrl: string;
  /** The port listened on; it stays the same across `down` phases. */
  readonly port: number;
  /** When the scenario clock started, in epoch ms. */
  readonly startedAtMs: number;
  /** The phase in force now. */
  currentPhase(): PhaseInForce;
  /**
   * Forces a phase regardless of time (build one with `parsePhase`; its duration is ignored);
   * `undefined` hands control back to the scenario clock.
   */
  override(phase: Phase | undefined): void;
  /** A copy of the arrival log, oldest first (the newest 100 000 are kept). */
  arrivals(): Arrival[];
  /** Counts per phase: the scenario's phases in order, then each override phase used. */
  stats(): PhaseStats[];
  /** Stops listening and destroys every socket, hanging ones included. */
  close(): Promise<void>;
}

/** Starts a flaky server and resolves once it listens; the scenario clock starts then. */
export async function startFlakyOpenAI(options: FlakyOpenAIOptions): Promise<FlakyOpenAI> {
  const host = options.host ?? DEFAULT_HOST;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? DEFAULT_PORT, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return new FlakyOpenAIImpl(options, host, server);
}

/**
 * The listening socket comes and goes with `down` phases; a fresh `http.Server` is bound to the
 * same port each time the server comes back, so no state of the closed one leaks over.
 */
type Listener =
  | { kind: "up"; server: Server }
  | { kind: "opening"; server: Server }
  | { kind: "down" }
  | { kind: "closed" };

class FlakyOpenAIImpl implements FlakyOpenAI {
  readonly baseUrl: string;
  readonly port: number;
  readonly startedAtMs: number;
  /** Monotonic twin of `startedAtMs`: phase timing must not follow wall-clock jumps. */
  readonly #startedAtMono: number;
  readonly #scenario: Scenario;
  readonly #host: string;
  readonly #onPhaseChange: ((change: PhaseChange) => void) | undefined;
  readonly #random: () => number;
  readonly #log: Arrival[] = [];
  readonly #stats: PhaseStats[];
  readonly #overrides: Phase[] = [];
  #listener: Listener;
  #forced: Phase | undefined;
  #inForce: PhaseInForce;
  #phaseTimer: NodeJS.Timeout | undefined;
  #reopenTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: FlakyOpenAIOptions, host: string, server: Server) {
    this.#scenario = options.scenario;
    this.#host = host;
    this.#onPhaseChange = options.onPhaseChange;
    this.#random = options.random ?? Math.random;
    this.#stats = options.scenario.phases.map(statsOf);
    this.port = (server.address() as AddressInfo).port;
    this.baseUrl = `http://${host.includes(":") ? `[${host}]` : host}:${this.port}/v1`;
    server.on("request", (req, res) => this.#handle(req, res));
    this.#listener = { kind: "up", server };
    this.startedAtMs = Date.now();
    this.#startedAtMono = performance.now();
    this.#inForce = this.#compute();
    this.#setAvailable(this.#inForce.phase.mode !== "down");
    this.#schedule();
  }

  currentPhase(): PhaseInForce {
    this.#refresh();
    return { ...this.#inForce };
  }

  override(phase: Phase | undefined): void {
    this.#forced = phase;
    if (!this.#refresh()) this.#schedule();
  }

  arrivals(): Arrival[] {
    return this.#log.map((arrival) => ({ ...arrival }));
  }

  stats(): PhaseStats[] {
    return this.#stats.map((s) => ({ ...s, byStatus: { ...s.byStatus } }));
  }

  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    clearTimeout(this.#phaseTimer);
    clearTimeout(this.#reopenTimer);
    const listener = this.#listener;
    this.#listener = { kind: "closed" };
    if (listener.kind === "up" || listener.kind === "opening") {
      const { server } = listener;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    }
  }

  #elapsedMs(): number {
    return performance.now() - this.#startedAtMono;
  }

  /** The phase the clock or an override puts in force now. */
  #compute(): PhaseInForce {
    const forced = this.#forced;
    if (forced !== undefined) {
      let k = this.#overrides.indexOf(forced);
      if (k < 0) {
        k = this.#overrides.push(forced) - 1;
        this.#stats.push(statsOf(forced));
      }
      return { index: this.#scenario.phases.length + k, phase: forced, overridden: true };
    }
    const { index, phase } = phaseAt(this.#scenario, this.#elapsedMs());
    return { index, phase, overridden: false };
  }

  /** Brings the phase in force up to date; returns whether it changed. */
  #refresh(): boolean {
    if (this.#listener.kind === "closed") return false;
    const next = this.#compute();
    if (next.index === this.#inForce.index && next.phase === this.#inForce.phase) return false;
    this.#inForce = next;
    this.#setAvailable(next.phase.mode !== "down");
    this.#schedule();
    this.#onPhaseChange?.({ ...next, atMs: Date.now() });
    return true;
  }

  /**
   * Arms a timer for the next phase boundary. It is not unref'ed: during a `down` phase it is
   * the only thing that keeps a standalone server's process alive; `close()` clears it.
   */
  #schedule(): void {
    clearTimeout(this.#phaseTimer);
    this.#phaseTimer = undefined;
    const { index, overridden } = this.#inForce;
    if (overridden || index >= this.#scenario.phases.length - 1) return;
    const delayMs = Math.max(1, phaseEndsAtMs(this.#scenario, index) - this.#elapsedMs());
    this.#phaseTimer = setTimeout(() => {
      // Timers round to whole ms and may fire a hair before the boundary: re-arm then.
      if (!this.#refresh()) this.#schedule();
    }, delayMs);
  }

  /** Opens or closes the listening socket to match the phase. */
  #setAvailable(up: boolean): void {
    const listener = this.#listener;
    if (up && listener.kind === "down") {
      this.#open();
    } else if (!up && (listener.kind === "up" || listener.kind === "opening")) {
      this.#listener = { kind: "down" };
      // Idle keep-alive sockets would otherwise carry requests past the closed listener;
      // destroying every connection makes clients see resets now and refusals next.
      listener.server.close(() => {});
      listener.server.closeAllConnections();
    }
  }

  #open(): void {
    const server = createServer((req, res) => this.#handle(req, res));
    this.#listener = { kind: "opening", server };
    const stale = () => this.#listener.kind !== "opening" || this.#listener.server !== server;
    server.once("error", () => {
      if (stale()) return;
      // Usually EADDRINUSE: another socket holds the port for a moment. Try again shortly.
      this.#listener = { kind: "down" };
      this.#reopenTimer = setTimeout(() => {
        if (this.#listener.kind === "down" && this.#inForce.phase.mode !== "down") this.#open();
      }, REOPEN_RETRY_MS);
    });
    server.listen(this.port, this.#host, () => {
      if (stale()) {
        server.close();
        return;
      }
      this.#listener = { kind: "up", server };
    });
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    this.#refresh();
    const { index, phase } = this.#inForce;
    const arrival: Arrival = {
      atMs: Date.now(),
      phaseIndex: index,
      phaseName: phase.name,
      status: 0,
      traceparent: headerText(req.headers.traceparent),
      idempotencyKey: headerText(req.headers["idempotency-key"]),
    };
    this.#log.push(arrival);
    if (this.#log.length > MAX_ARRIVALS) this.#log.shift();
    const stats = this.#stats[index]!;
    stats.requests += 1;
    let settled = false;
    const settle = (status: number) => {
      if (settled) return;
      settled = true;
      arrival.status = status;
      stats.byStatus[status] = (stats.byStatus[status] ?? 0) + 1;
    };
    // A connection that ends before its answer (client timeout, going down) counts as status 0.
    res.once("close", () => settle(0));

    respondWithFault(req, res, phase, settle, this.#random);
  }
}

function statsOf(phase: Phase): PhaseStats {
  return { name: phase.name, mode: phase.mode, requests: 0, byStatus: {} };
}

function headerText(value: string | string[] | undefined): string {
  return Array.isArray(value) ? value.join(",") : (value ?? "");
}
