import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DeadLetterReason, DeadLetterService } from "../gen/bulwark/v1/dead_letter_pb.ts";
import { type BulwarkServer, startServer } from "../server/bulwark-server.ts";
import { hashToken, TokenRegistry } from "../server/security/token-registry.ts";
import { ROOT, tempDir } from "./harness.ts";

const run = promisify(execFile);
const tmp = tempDir();
const ADMIN = "cli-admin-token";
const READER = "cli-reader-token";
let server: BulwarkServer;

beforeAll(async () => {
  server = await startServer({
    dbPath: join(tmp.dir, "cli.db"),
    host: "127.0.0.1",
    port: 0,
    tokens: new TokenRegistry([
      { name: "ops", role: "admin", sha256: hashToken(ADMIN) },
      { name: "dash", role: "reader", sha256: hashToken(READER) },
    ]),
    logger: pino({ level: "silent" }),
  });
});
afterAll(async () => {
  await server.close();
  tmp.remove();
});

function cli(args: string[], env: Record<string, string> = {}) {
  return run(process.execPath, ["--import", "tsx", "cli/main.ts", ...args], {
    cwd: ROOT,
    env: { ...process.env, BULWARK_URL: server.url, ...env },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

describe("bulwark CLI", () => {
  it("lists, shows and resolves dead letters; a replay without NATS names why it cannot", async () => {
    const transport = createGrpcTransport({
      baseUrl: server.url,
      interceptors: [
        (next) => (req) => {
          req.header.set("authorization", `Bearer ${ADMIN}`);
          return next(req);
        },
      ],
    });
    await createClient(DeadLetterService, transport).recordDeadLetter({
      letter: {
        letterId: "dl-cli-1",
        dependency: "cli.jobs",
        jobId: "cli-job",
        reason: DeadLetterReason.PERMANENT,
        payload: new TextEncoder().encode("{}"),
        lastError: "refused",
      },
    });
    const listed = await cli(["dlq", "list", "cli.jobs", "--status", "open"], {
      BULWARK_TOKEN: READER,
    });
    expect(JSON.parse(listed.stdout).letters).toMatchObject([
      { letterId: "dl-cli-1", lastError: "refused", status: "DEAD_LETTER_STATUS_OPEN" },
    ]);
    const got = await cli(["dlq", "get", "dl-cli-1"], { BULWARK_TOKEN: READER });
    expect(JSON.parse(got.stdout).letter.payload).toBe("e30=");
    const replay = await cli(["dlq", "replay", "dl-cli-1"], { BULWARK_TOKEN: ADMIN });
    expect(replay.code).toBe(1);
    expect(replay.stderr).toContain("FailedPrecondition: replay needs NATS");
    const denied = await cli(["dlq", "resolve", "dl-cli-1", "--reason", "x"], {
      BULWARK_TOKEN: READER,
    });
    expect(denied.stderr).toContain("PermissionDenied");
    const resolved = await cli(["dlq", "resolve", "dl-cli-1", "--reason", "refunded by hand"], {
      BULWARK_TOKEN: ADMIN,
    });
    expect(JSON.parse(resolved.stdout).letter).toMatchObject({
      status: "DEAD_LETTER_STATUS_RESOLVED",
      resolution: "refunded by hand",
      resolvedBy: "ops",
    });
    const bad = await cli(["dlq", "list", "--status", "lost"], { BULWARK_TOKEN: READER });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--status must be open, replayed or resolved");
  });

  it("applies the example policy file with a token and lists it", async () => {
    const applied = await cli(["policy", "apply", "examples/policies/openai.yaml"], {
      BULWARK_TOKEN: ADMIN,
    });
    expect(applied.stdout).toContain("applied openai.chat at revision 1");
    expect(applied.stdout).toContain("applied openai.embeddings at revision 1");
    const got = await cli(["--token", READER, "policy", "get", "openai.chat"]);
    expect(JSON.parse(got.stdout)).toMatchObject({
      dependency: "openai.chat",
      timeoutMs: 20000,
      updatedBy: "ops",
    });
    const verified = await cli(["audit", "verify"], { BULWARK_TOKEN: READER });
    expect(JSON.parse(verified.stdout)).toMatchObject({ valid: true });
    const queried = await cli(["audit", "query", "--aggregate", "openai.chat"], {
      BULWARK_TOKEN: READER,
    });
    expect(JSON.parse(queried.stdout).records[0]).toMatchObject({
      eventType: "policy.changed",
      principal: "ops",
    });
  });

  it("forces a breaker open and resets it, as the token's operator", async () => {
    await cli(["--token", ADMIN, "policy", "apply", "examples/policies/openai.yaml"]);
    const forced = await cli([
      "--token",
      ADMIN,
      "breaker",
      "force",
      "openai.chat",
      "forced-open",
      "--reason",
      "provider incident",
    ]);
    expect(JSON.parse(forced.stdout).breaker).toMatchObject({
      state: "BREAKER_STATE_FORCED_OPEN",
      forcedBy: "ops",
      reason: "forced open: provider incident",
    });
    const reader = await cli([
      "--token",
      READER,
      "breaker",
      "force",
      "openai.chat",
      "reset",
      "--reason",
      "x",
    ]);
    expect(reader.stderr).toContain("PermissionDenied");
    const noReason = await cli(["--token", ADMIN, "breaker", "force", "openai.chat", "reset"]);
    expect(noReason).toMatchObject({ code: 2 });
    const reset = await cli([
      "--token",
      ADMIN,
      "breaker",
      "force",
      "openai.chat",
      "reset",
      "--reason",
      "over",
    ]);
    expect(JSON.parse(reset.stdout).breaker.state).toBe("BREAKER_STATE_CLOSED");
  });

  it("says what the server refused, and names bad flags and fields", async () => {
    const anonymous = await cli(["policy", "list"]);
    expect(anonymous).toMatchObject({ code: 1 });
    expect(anonymous.stderr).toContain("Unauthenticated: a bearer token is required");
    const reader = await cli(["--token", READER, "policy", "delete", "openai.chat"]);
    expect(reader.stderr).toContain("PermissionDenied");
    const badFlag = await cli(["--revison", "3", "policy", "list"]);
    expect(badFlag).toMatchObject({ code: 2 });
    expect(badFlag.stderr).toContain("--revison");
    // A flag the command does not take is refused, not ignored.
    const unused = await cli(["policy", "apply", "x.yaml", "--revision", "99"]);
    expect(unused).toMatchObject({ code: 2 });
    expect(unused.stderr).toContain('--revision does not apply to "policy apply"');
    const file = join(tmp.dir, "bad.yaml");
    writeFileSync(
      file,
      "dependency: x\ntimeoutMs: -5\nsla: { latencyObjectiveMs: 100, availabilityTargetPercent: 99 }\n",
    );
    const invalid = await cli(["--token", ADMIN, "policy", "apply", file]);
    expect(invalid).toMatchObject({ code: 2 });
    expect(invalid.stderr).toMatch(/bad.yaml: policies\[0\]: policy.timeout_ms/);
    // A file with one good and one bad policy applies neither.
    const mixed = join(tmp.dir, "mixed.yaml");
    writeFileSync(
      mixed,
      [
        "policies:",
        "  - dependency: mixed.good",
        "    timeoutMs: 50",
        "    sla: { latencyObjectiveMs: 100, availabilityTargetPercent: 99 }",
        "  - dependency: mixed.bad",
        "    timeoutMs: 500",
        "    sla: { latencyObjectiveMs: 100, availabilityTargetPercent: 99 }",
        "",
      ].join("\n"),
    );
    const half = await cli(["--token", ADMIN, "policy", "apply", mixed]);
    expect(half.stderr).toMatch(/mixed.yaml: policies\[1\]: policy.timeout_ms/);
    const after = await cli(["--token", ADMIN, "policy", "get", "mixed.good"]);
    expect(after.stderr).toContain("NotFound");
  });
});
