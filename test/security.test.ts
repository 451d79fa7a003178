import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../gen/bulwark/v1/audit_pb.ts";
import { BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import { DeadLetterService } from "../gen/bulwark/v1/dead_letter_pb.ts";
import { IdempotencyService } from "../gen/bulwark/v1/idempotency_pb.ts";
import { PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { Health } from "../gen/grpc/health/v1/health_pb.ts";
import { createBulwark, isControlPlaneError } from "../sdk/index.ts";
import { type BulwarkServer, startServer } from "../server/bulwark-server.ts";
import { parseServerConfig, UsageError } from "../server/config.ts";
import { hashToken, TokenRegistry } from "../server/security/token-registry.ts";
import { tempDir, testPolicy } from "./harness.ts";

const TOKENS = { admin: "adm-secret-1", service: "svc-secret-2", reader: "rdr-secret-3" };
const tmp = tempDir();
let server: BulwarkServer;
let logText = "";

beforeAll(async () => {
  const registry = new TokenRegistry(
    Object.entries(TOKENS).map(([role, token]) => ({
      name: `${role}-user`,
      role: role as "admin" | "service" | "reader",
      sha256: hashToken(token),
    })),
  );
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logText += chunk.toString();
      cb();
    },
  });
  server = await startServer({
    dbPath: join(tmp.dir, "sec.db"),
    host: "127.0.0.1",
    port: 0,
    tokens: registry,
    logger: pino({ level: "debug" }, sink),
  });
});
afterAll(async () => {
  await server.close();
  tmp.remove();
});

function client<S extends DescService>(service: S, token?: string) {
  return createClient(
    service,
    createGrpcTransport({
      baseUrl: server.url,
      interceptors: [
        (next) => (req) => {
          if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
          return next(req);
        },
      ],
    }),
  );
}

/** Calls one RPC with an empty request; returns the code (Code.Ok as -1 for success). */
async function codeOf(service: DescService, method: string, token?: string): Promise<number> {
  const c = client(service, token) as unknown as Record<
    string,
    (req: object, opts?: object) => unknown
  >;
  const localName = method[0]!.toLowerCase() + method.slice(1);
  const streaming = service.methods.find((m) => m.name === method)?.methodKind !== "unary";
  try {
    if (streaming) {
      const controller = new AbortController();
      const stream = (c[localName] as (r: object, o: object) => AsyncIterable<unknown>)(
        {},
        { signal: controller.signal, timeoutMs: 2_000 },
      );
      for await (const _ of stream) break;
      controller.abort();
    } else {
      await c[localName]!({}, { timeoutMs: 2_000 });
    }
    return -1;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

const NEEDS: Record<string, "reader" | "service" | "admin"> = {
  GetPolicy: "reader",
  ListPolicies: "reader",
  PutPolicy: "admin",
  DeletePolicy: "admin",
  Acquire: "service",
  Report: "service",
  GetBreaker: "reader",
  ListBreakers: "reader",
  ListTransitions: "reader",
  Watch: "reader",
  ForceBreaker: "admin",
  Append: "service",
  Query: "reader",
  Verify: "reader",
  Trace: "reader",
  RecordDeadLetter: "service",
  ListDeadLetters: "reader",
  GetDeadLetter: "reader",
  ReplayDeadLetter: "admin",
  ResolveDeadLetter: "admin",
  Begin: "service",
  Complete: "service",
  Abandon: "service",
  GetRecord: "reader",
};
const RANK = { reader: 0, service: 1, admin: 2 } as const;

describe("authentication and roles", () => {
  const services = [
    PolicyService,
    BreakerService,
    AuditService,
    IdempotencyService,
    DeadLetterService,
  ];
  const cases = services.flatMap((s) => s.methods.map((m) => [s, m.name] as const));

  it("covers every RPC of the contract", () => {
    expect(cases.map(([, m]) => m).sort()).toEqual(Object.keys(NEEDS).sort());
  });

  it.each(cases)("%s/%s gives the documented code for each caller", async (service, method) => {
    expect(await codeOf(service, method)).toBe(Code.Unauthenticated);
    expect(await codeOf(service, method, "not-a-real-token")).toBe(Code.Unauthenticated);
    for (const role of ["reader", "service", "admin"] as const) {
      const code = await codeOf(service, method, TOKENS[role]);
      if (RANK[role] >= RANK[NEEDS[method]!]) {
        expect([Code.Unauthenticated, Code.PermissionDenied]).not.toContain(code);
      } else {
        expect(code).toBe(Code.PermissionDenied);
      }
    }
  });

  it("answers health checks without a token", async () => {
    const res = await client(Health).check({});
    expect(res.status).toBe(1);
  });

  it("records the token's name as the principal, ignoring a claimed one", async () => {
    const admin = client(PolicyService, TOKENS.admin);
    const res = await admin.putPolicy(
      { policy: testPolicy("sec.principal") },
      { headers: { "x-bulwark-principal": "somebody-else" } },
    );
    expect(res.policy?.updatedBy).toBe("admin-user");
  });

  it("lets the SDK work with a service token and fail clearly with a wrong one", async () => {
    await client(PolicyService, TOKENS.admin).putPolicy({ policy: testPolicy("sec.sdk") });
    const good = createBulwark({ url: server.url, service: "svc", token: TOKENS.service });
    await expect(good.call("sec.sdk", async () => "ok")).resolves.toBe("ok");
    await good.close();
    const bad = createBulwark({ url: server.url, service: "svc", token: "wrong" });
    // ready() says why the fleet's state will never come, instead of waiting for it.
    const notReady = await bad.ready().catch((e: unknown) => e);
    expect(isControlPlaneError(notReady)).toBe(true);
    expect((notReady as Error).message).toMatch(/unknown token/);
    const err = await bad.call("sec.sdk", async () => "ok").catch((e: unknown) => e);
    expect(isControlPlaneError(err)).toBe(true);
    expect((err as Error).message).toMatch(/unknown token/);
    await bad.close();
  });

  it("never writes a token to the log", () => {
    expect(logText.length).toBeGreaterThan(0);
    for (const token of [...Object.values(TOKENS), "not-a-real-token"]) {
      expect(logText).not.toContain(token);
    }
  });

  it("refuses to listen beyond loopback without tokens, naming the flag", () => {
    expect(() => parseServerConfig(["--host", "0.0.0.0"], {})).toThrow(UsageError);
    expect(() => parseServerConfig(["--host", "0.0.0.0"], {})).toThrow(/--tokens-file is required/);
    expect(parseServerConfig(["--host", "127.0.0.1"], {}).tokensFile).toBeUndefined();
  });

  it("rejects a tokens file holding a plain token instead of a hash", () => {
    const file = join(tmp.dir, "tokens.json");
    writeFileSync(
      file,
      JSON.stringify({ tokens: [{ name: "a", role: "admin", sha256: "secret" }] }),
    );
    expect(() => TokenRegistry.fromFile(file)).toThrow(/tokens\[0\]\.sha256 must be 64/);
  });
});

describe("TLS", () => {
  let tlsServer: BulwarkServer;
  let caPem: string;
  beforeAll(async () => {
    const d = tmp.dir;
    const ssl = (...args: string[]) => execFileSync("openssl", args, { cwd: d, stdio: "pipe" });
    ssl(
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.pem",
      "-days",
      "1",
      "-subj",
      "/CN=Bulwark Test CA",
    );
    ssl(
      "req",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      "server.key",
      "-out",
      "server.csr",
      "-subj",
      "/CN=127.0.0.1",
    );
    writeFileSync(join(d, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    ssl(
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "server.pem",
      "-days",
      "1",
      "-extfile",
      "san.ext",
    );
    caPem = readFileSync(join(d, "ca.pem"), "utf8");
    tlsServer = await startServer({
      dbPath: join(d, "tls.db"),
      host: "127.0.0.1",
      port: 0,
      tls: { cert: readFileSync(join(d, "server.pem")), key: readFileSync(join(d, "server.key")) },
      logger: pino({ level: "silent" }),
    });
    await createClient(
      PolicyService,
      createGrpcTransport({ baseUrl: tlsServer.url, nodeOptions: { ca: caPem } }),
    ).putPolicy({ policy: testPolicy("tls.dep") });
  });
  afterAll(async () => {
    await tlsServer?.close();
  });

  it("connects with the CA", async () => {
    expect(tlsServer.url).toMatch(/^https:/);
    const bulwark = createBulwark({ url: tlsServer.url, service: "svc", ca: caPem });
    await expect(bulwark.call("tls.dep", async () => "ok")).resolves.toBe("ok");
    expect(bulwark.controlPlaneConnected).toBe(true);
    await bulwark.close();
  });

  it("fails clearly without it", async () => {
    const bulwark = createBulwark({ url: tlsServer.url, service: "svc" });
    const err = await bulwark.call("tls.dep", async () => "ok").catch((e: unknown) => e);
    expect(isControlPlaneError(err)).toBe(true);
    expect((err as Error).message).toMatch(/TLS certificate is not trusted.*options\.ca/);
    await bulwark.close();
  });
});
