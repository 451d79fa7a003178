import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import OpenAI, {
  APIConnectionError,
  APIConnectionTimeoutError,
  BadRequestError,
  InternalServerError,
  RateLimitError,
} from "openai";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  type FlakyOpenAI,
  startFlakyOpenAI,
} from "../examples/flaky-openai/flaky-openai-server.ts";
import {
  type FaultMode,
  loadScenarioFile,
  type Phase,
  parsePhase,
  parseScenario,
  phaseAt,
  type Scenario,
  ScenarioError,
} from "../examples/flaky-openai/scenario.ts";

const servers: FlakyOpenAI[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

function phase(mode: FaultMode, extra: Record<string, unknown> = {}): Phase {
  return parsePhase({ name: mode, durationMs: 60_000, mode, ...extra });
}

async function start(phases: Phase[], random?: () => number): Promise<FlakyOpenAI> {
  const scenario: Scenario = { name: "test", phases };
  const server = await startFlakyOpenAI(random ? { scenario, random } : { scenario });
  servers.push(server);
  return server;
}

function clientOf(server: FlakyOpenAI, timeoutMs = 2000): OpenAI {
  return new OpenAI({ baseURL: server.baseUrl, apiKey: "test", maxRetries: 0, timeout: timeoutMs });
}

function ask(client: OpenAI, headers: Record<string, string> = {}) {
  const messages = [{ role: "user" as const, content: "Is the API up?" }];
  return client.chat.completions.create({ model: "gpt-test", messages }, { headers });
}

function succeeds(client: OpenAI): Promise<boolean> {
  return ask(client).then(
    () => true,
    () => false,
  );
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail("expected the request to fail"),
    (err: unknown) => err,
  );
}

/** Polls `check` every 20 ms for at most `limitMs`. */
async function waitFor(check: () => boolean | Promise<boolean>, limitMs = 2000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > deadline) expect.fail(`condition not met within ${limitMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe("parseScenario", () => {
  it("fills in defaults by mode", () => {
    const scenario = parseScenario({
      name: "s",
      phases: [
        { name: "a", durationMs: 100, mode: "healthy" },
        { name: "b", durationMs: 100, mode: "slow" },
      ],
    });
    expect(scenario.phases[0]).toEqual({
      name: "a",
      durationMs: 100,
      mode: "healthy",
      latencyMs: 20,
      errorRate: 1,
      statuses: [500, 502, 503],
      retryAfterSeconds: 1,
    });
    expect(scenario.phases[1]?.latencyMs).toBe(1500);
  });

  /** A one-phase scenario whose phase has `fields` on top of valid ones. */
  const withPhase = (fields: Record<string, unknown>) => ({
    name: "s",
    phases: [{ name: "a", durationMs: 1, mode: "healthy", ...fields }],
  });
  it.each([
    [{ name: "s", phases: [] }, "phases", "must be an array of 1..100 phases; got an array of 0"],
    [{ name: "", phases: [{}] }, "name", 'must be a string of 1..64 characters; got ""'],
    [withPhase({ mode: "broken" }), "phases[0].mode", "must be one of healthy, slow, errors,"],
    [
      withPhase({ durationMs: 1.5 }),
      "phases[0].durationMs",
      "must be an integer 1..3600000; got 1.5",
    ],
    [withPhase({ errorRate: 2 }), "phases[0].errorRate", "must be a number 0..1; got 2"],
    [
      withPhase({ statuses: [500, 404] }),
      "phases[0].statuses[1]",
      "must be an integer 500..599; got 404",
    ],
    [withPhase({ latency: 5 }), "phases[0].latency", "is not a known field"],
    [[], "", "scenario must be an object; got an array of 0"],
  ])("rejects %j naming %s", (json, field, rule) => {
    let err: unknown;
    try {
      parseScenario(json);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ScenarioError);
    expect((err as ScenarioError).field).toBe(field);
    expect((err as ScenarioError).message).toContain(`${field} ${rule}`.trim());
  });

  it("finds the phase in force and keeps the last one after the end", () => {
    const scenario: Scenario = { name: "s", phases: [phase("healthy"), phase("down")] };
    expect(phaseAt(scenario, 0).index).toBe(0);
    expect(phaseAt(scenario, 59_999).index).toBe(0);
    expect(phaseAt(scenario, 60_000).index).toBe(1);
    expect(phaseAt(scenario, 10_000_000).index).toBe(1);
  });

  it("loads the shipped scenarios and names a bad file", () => {
    for (const file of ["demo", "short", "tour"]) {
      expect(loadScenarioFile(`examples/scenarios/${file}.json`).phases.length).toBeGreaterThan(2);
    }
    const path = join(mkdtempSync(join(tmpdir(), "flaky-")), "bad.json");
    writeFileSync(path, '{"name":"x","phases":[{"name":"a","durationMs":0,"mode":"healthy"}]}');
    expect(() => loadScenarioFile(path)).toThrow(`${path}: phases[0].durationMs must be`);
  });
});

describe("flaky OpenAI server", () => {
  it("answers a healthy completion and records trace headers", async () => {
    const server = await start([phase("healthy")]);
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const { data, response } = await ask(clientOf(server), {
      traceparent,
      "idempotency-key": "key-1",
    }).withResponse();
    expect(data.id).toMatch(/^chatcmpl-/);
    expect(data.object).toBe("chat.completion");
    expect(data.model).toBe("gpt-test");
    expect(data.choices[0]?.message).toMatchObject({ role: "assistant" });
    expect(data.choices[0]?.message.content).toContain("Is the API up?");
    expect(data.choices[0]?.finish_reason).toBe("stop");
    expect(data.usage?.total_tokens).toBeGreaterThan(0);
    expect(response.headers.get("x-flaky-phase")).toBe("healthy");
    expect(response.headers.get("x-request-id")).toBeTruthy();
    expect(server.arrivals()).toMatchObject([
      { phaseIndex: 0, phaseName: "healthy", status: 200, traceparent, idempotencyKey: "key-1" },
    ]);
  });

  it("rejects a request without a model with 400, and unknown paths with 404", async () => {
    const server = await start([phase("errors")]);
    const messages = [{ role: "user", content: "hi" }];
    const err = await failure(clientOf(server).chat.completions.create({ messages } as never));
    expect(err).toBeInstanceOf(BadRequestError);
    expect((err as BadRequestError).status).toBe(400);
    const notFound = await fetch(`${server.baseUrl}/models`);
    expect(notFound.status).toBe(404);
    expect(await notFound.json()).toMatchObject({ error: { type: "invalid_request_error" } });
  });

  it("fails the configured fraction of requests with 5xx in errors mode", async () => {
    const draws = [0.1, 0.99, 0.9, 0.5]; // fail (pick statuses[2]), then succeed
    const server = await start([phase("errors", { errorRate: 0.5 })], () => draws.shift() ?? 0);
    const err = await failure(ask(clientOf(server)));
    expect(err).toBeInstanceOf(InternalServerError);
    expect((err as InternalServerError).status).toBe(503);
    await expect(ask(clientOf(server))).resolves.toMatchObject({ object: "chat.completion" });
    expect(server.stats()[0]).toMatchObject({ requests: 2, byStatus: { "200": 1, "503": 1 } });
  });

  it("answers 429 with retry-after headers when rate-limited", async () => {
    const server = await start([phase("rate-limited", { retryAfterSeconds: 2 })]);
    const err = await failure(ask(clientOf(server)));
    expect(err).toBeInstanceOf(RateLimitError);
    const { headers, code } = err as RateLimitError;
    expect(code).toBe("rate_limit_exceeded");
    expect(headers.get("retry-after")).toBe("2");
    expect(headers.get("retry-after-ms")).toBe("2000");
  });

  it("hangs until the client times out, and still closes promptly", async () => {
    const server = await start([phase("hanging")]);
    const err = await failure(ask(clientOf(server, 300)));
    expect(err).toBeInstanceOf(APIConnectionTimeoutError);
    expect(server.arrivals()).toMatchObject([{ status: 0 }]);
    const before = Date.now();
    await server.close();
    expect(Date.now() - before).toBeLessThan(1000);
  });

  it("resets connections without a response", async () => {
    const server = await start([phase("resets")]);
    const err = await failure(ask(clientOf(server)));
    expect(err).toBeInstanceOf(APIConnectionError);
    expect(err).not.toBeInstanceOf(APIConnectionTimeoutError);
    expect(server.stats()[0]).toMatchObject({ requests: 1, byStatus: { "0": 1 } });
  });

  it("refuses connections while down, even on a kept-alive socket, then comes back", async () => {
    const server = await start([phase("healthy")]);
    const client = clientOf(server);
    await ask(client); // leaves an idle keep-alive socket in the client's pool
    server.override(phase("down"));
    expect(await failure(ask(client))).toBeInstanceOf(APIConnectionError);
    const refused = await failure(fetch(`${server.baseUrl}/chat/completions`, { method: "POST" }));
    expect((refused as Error).cause).toMatchObject({ code: "ECONNREFUSED" });

    server.override(undefined);
    await waitFor(() => succeeds(client));
    expect(server.currentPhase()).toMatchObject({ index: 0, overridden: false });
  });

  it("starts down and opens on the same port when the next phase begins", async () => {
    const server = await start([phase("down", { durationMs: 300 }), phase("healthy")]);
    const refused = await failure(fetch(`${server.baseUrl}/chat/completions`, { method: "POST" }));
    expect((refused as Error).cause).toMatchObject({ code: "ECONNREFUSED" });
    await waitFor(() => succeeds(clientOf(server)));
    expect(server.currentPhase().index).toBe(1);
    expect(server.arrivals().every((a) => a.phaseName === "healthy")).toBe(true);
  });

  it("advances phases with time", async () => {
    const changes: number[] = [];
    const scenario: Scenario = {
      name: "quick",
      phases: [
        phase("healthy", { name: "before", durationMs: 400 }),
        phase("errors", { name: "outage", durationMs: 400 }),
        phase("healthy", { name: "after", durationMs: 400 }),
      ],
    };
    const server = await startFlakyOpenAI({
      scenario,
      onPhaseChange: (change) => changes.push(change.index),
    });
    servers.push(server);
    const client = clientOf(server);
    for (const index of [0, 1, 2]) {
      await waitFor(() => server.currentPhase().index === index);
      await ask(client).catch(() => undefined);
    }
    expect(changes).toEqual([1, 2]);
    expect(server.arrivals().map((a) => [a.phaseName, a.status >= 500 ? "5xx" : a.status])).toEqual(
      [
        ["before", 200],
        ["outage", "5xx"],
        ["after", 200],
      ],
    );
  });
});

describe("flaky-openai command line", () => {
  const REPO = fileURLToPath(new URL("..", import.meta.url));
  const CLI = "examples/flaky-openai/main.ts";
  const children: ChildProcess[] = [];
  afterAll(() => {
    // A failed assertion must not leave a server process behind.
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  });

  function run(args: string[]): ChildProcess {
    const child = spawn(process.execPath, ["--import", "tsx", CLI, ...args], {
      cwd: REPO,
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    return child;
  }

  async function output(
    child: ChildProcess,
  ): Promise<{ code: number | null; out: string; err: string }> {
    let out = "";
    let err = "";
    child.stdout?.on("data", (chunk) => (out += chunk));
    child.stderr?.on("data", (chunk) => (err += chunk));
    const [code] = await once(child, "exit");
    return { code, out, err };
  }

  it.concurrent("exits 2 naming a bad flag", async () => {
    const [badPort, unknown] = await Promise.all([
      output(run(["--scenario", "examples/scenarios/short.json", "--port", "x"])),
      output(run(["--scenario", "examples/scenarios/short.json", "--colour"])),
    ]);
    expect(badPort).toMatchObject({ code: 2 });
    expect(badPort.err).toContain('--port must be an integer 0..65535; got "x"');
    expect(unknown).toMatchObject({ code: 2 });
    expect(unknown.err).toContain("--colour");
  });

  it.concurrent("serves the scenario and closes on SIGTERM", async () => {
    const child = run(["--scenario", "examples/scenarios/short.json"]);
    const done = output(child);
    const [first] = await once(child.stdout!, "data");
    const listening = JSON.parse(String(first).split("\n")[0]!);
    expect(listening).toMatchObject({ event: "listening", phase: "healthy" });
    const answer = await fetch(`${listening.baseUrl}/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(answer.status).toBe(200);
    child.kill("SIGTERM");
    const { code, out } = await done;
    expect(code).toBe(0);
    expect(out).toContain('"event":"closed"');
  });
});
