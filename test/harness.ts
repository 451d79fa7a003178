/**
 * Shared test harness: real servers on free loopback ports, SQLite files in temp dirs,
 * nats-server processes started per test file. Everything started here is stopped by `stop()`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { create } from "@bufbuild/protobuf";
import { type Client, type Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { AuditService } from "../gen/bulwark/v1/audit_pb.ts";
import { BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import { type Policy, PolicySchema, PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { type BulwarkServer, startServer } from "../server/bulwark-server.ts";

export const ROOT = new URL("..", import.meta.url).pathname;

/** A temp dir removed by the returned cleanup. */
export function tempDir(prefix = "bulwark-test-"): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** The control plane in this process, on a free port, with a fresh SQLite file. */
export async function startTestServer(
  options: { dbPath?: string; natsUrl?: string } = {},
): Promise<BulwarkServer & { dbPath: string; cleanup: () => Promise<void> }> {
  // A temp dir only when the caller gives no file, so nothing is left behind.
  const tmp = options.dbPath === undefined ? tempDir() : undefined;
  const dbPath = options.dbPath ?? join(tmp!.dir, "bulwark.db");
  const server = await startServer({
    dbPath,
    host: "127.0.0.1",
    port: 0,
    natsUrl: options.natsUrl,
    logger: pino({ level: "silent" }),
  });
  return {
    ...server,
    dbPath,
    cleanup: async () => {
      await server.close();
      tmp?.remove();
    },
  };
}

export interface ServerProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** Log lines the server printed (parsed JSON). */
  logs: Record<string, unknown>[];
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The control plane as its own process (`server/main.ts`), so a test can SIGKILL it. */
export async function spawnServerProcess(
  dbPath: string,
  port = 0,
  extraArgs: string[] = [],
  /**
   * quiet: the server logs at warn and its output is not collected (for benchmarks, where
   * parsing one log line per RPC would load the measuring process); readiness is then told by
   * its port accepting connections.
   */
  options: { quiet?: boolean } = {},
): Promise<ServerProcess> {
  if (options.quiet) {
    const quietPort = port === 0 ? await freePort() : port;
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        join(ROOT, "server/main.ts"),
        "--db",
        dbPath,
        "--port",
        String(quietPort),
        "--metrics-port",
        "off",
        "--log-level",
        "warn",
        ...extraArgs,
      ],
      { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] },
    );
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    await waitForPort(quietPort, 30_000);
    return {
      url: `http://127.0.0.1:${quietPort}`,
      port: quietPort,
      child,
      logs: [],
      async kill(signal = "SIGTERM") {
        if (child.exitCode === null && child.signalCode === null) child.kill(signal);
        await exited;
      },
    };
  }
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "server/main.ts"),
      "--db",
      dbPath,
      "--port",
      String(port),
      "--metrics-port",
      "0",
      ...extraArgs,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listening = new Promise<{ url: string; port: number }>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === "listening")
          resolve({ url: String(entry.url), port: Number(entry.port) });
      } catch {
        // not a log line
      }
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}: ${stderr}`)));
  });
  const { url, port: boundPort } = await listening;
  return {
    url,
    port: boundPort,
    child,
    logs,
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
}

export interface NatsProcess {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** SIGKILL, then a new nats-server on the same port and store. */
  restart(): Promise<void>;
}

/** A private nats-server with JetStream on a free loopback port. */
export async function startNats(): Promise<NatsProcess> {
  const port = await freePort();
  const store = tempDir("bulwark-nats-");
  let child: ChildProcess;
  const launch = async () => {
    child = spawn(
      process.env.NATS_SERVER ?? "nats-server",
      ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store.dir],
      { stdio: "ignore" },
    );
    await waitForPort(port, 10_000);
  };
  const kill = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  };
  await launch();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    async stop() {
      await kill("SIGTERM");
      store.remove();
    },
    async restart() {
      await kill("SIGKILL");
      await launch();
    },
  };
}

export interface Clients {
  policies: Client<typeof PolicyService>;
  breakers: Client<typeof BreakerService>;
  audit: Client<typeof AuditService>;
}

export function clientsFor(url: string, principal = "test-operator"): Clients {
  const transport = createGrpcTransport({
    baseUrl: url,
    interceptors: [
      (next) => (req) => {
        req.header.set("x-bulwark-principal", principal);
        return next(req);
      },
    ],
  });
  return {
    policies: createClient(PolicyService, transport),
    breakers: createClient(BreakerService, transport),
    audit: createClient(AuditService, transport),
  };
}

/** A test policy: short timeouts and waits, overridable field by field. */
export function testPolicy(
  dependency: string,
  overrides: {
    timeoutMs?: number;
    deadlineMs?: number;
    retry?: Record<string, unknown>;
    breaker?: Record<string, unknown> | undefined;
  } = {},
): Policy {
  return create(PolicySchema, {
    dependency,
    sla: { latencyObjectiveMs: 5_000, availabilityTargetPercent: 99 },
    timeoutMs: overrides.timeoutMs ?? 1_000,
    ...(overrides.deadlineMs === undefined ? {} : { deadlineMs: overrides.deadlineMs }),
    retry: { maxAttempts: 1, initialBackoffMs: 10, maxBackoffMs: 50, ...overrides.retry },
    breaker: {
      windowSize: 10,
      minimumCalls: 4,
      failureRateThresholdPercent: 50,
      openWaitMs: 1_000,
      halfOpenPermits: 1,
      ...overrides.breaker,
    },
  });
}

/**
 * Polls `check` until it returns true or `timeoutMs` passes; returns its last answer. For
 * conditions reached by timers or streams, whose timing a loaded machine stretches.
 */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 3_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The code and message a call failed with; throws when it did not fail. */
export async function rpcFailure(p: Promise<unknown>): Promise<{ code: Code; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = ConnectError.from(err);
    return { code: e.code, message: e.rawMessage };
  }
  throw new Error("expected the call to fail");
}
