/**
 * One port, two libraries (server/transport.ts): cleartext HTTP/2 gRPC goes to @grpc/grpc-js,
 * HTTP/1.1 (Connect, gRPC-Web, JSON) to Connect-node. Both must serve the same handlers behind
 * the same boundary.
 */
import { create, toJson } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditService } from "../gen/bulwark/v1/audit_pb.ts";
import { BreakerService } from "../gen/bulwark/v1/breaker_pb.ts";
import { PolicySchema, PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { clientsFor, startTestServer, testPolicy } from "./harness.ts";

let server: Awaited<ReturnType<typeof startTestServer>>;
let raw: grpc.Client;

beforeAll(async () => {
  server = await startTestServer();
  raw = new grpc.Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
  await clientsFor(server.url).policies.putPolicy({ policy: testPolicy("transport.dep") });
});
afterAll(async () => {
  raw.close();
  await server.cleanup();
});

/** Sends `bytes` as the request body of `path` over gRPC and returns the status it ends with. */
function sendRaw(path: string, bytes: Buffer): Promise<grpc.StatusObject | grpc.ServiceError> {
  return new Promise((resolve) => {
    const metadata = new grpc.Metadata();
    metadata.set("x-bulwark-principal", "transport-test");
    raw.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      metadata,
      { deadline: Date.now() + 5_000 },
      (err) => resolve(err ?? { code: grpc.status.OK, details: "", metadata }),
    );
  });
}

describe("transport", () => {
  it("serves the same answer over gRPC and over Connect JSON on HTTP/1.1", async () => {
    const overGrpc = await clientsFor(server.url).policies.getPolicy({
      dependency: "transport.dep",
    });
    const res = await fetch(`${server.url}/bulwark.v1.PolicyService/GetPolicy`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-bulwark-principal": "t" },
      body: JSON.stringify({ dependency: "transport.dep" }),
    });
    expect(res.status).toBe(200);
    const overConnect = (await res.json()) as { policy: unknown };
    expect(overConnect.policy).toEqual(
      toJson(PolicySchema, create(PolicySchema, overGrpc.policy!)),
    );
  });

  it("answers an undecodable gRPC request to every unary method with InvalidArgument", async () => {
    const garbage = Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    for (const service of [PolicyService, BreakerService, AuditService]) {
      for (const method of service.methods) {
        if (method.methodKind !== "unary") continue;
        const status = await sendRaw(`/${service.typeName}/${method.name}`, garbage);
        expect(status.code, `${service.typeName}/${method.name}`).toBe(
          grpc.status.INVALID_ARGUMENT,
        );
        expect(status.details).toContain(method.input.typeName);
      }
    }
    // Still serving.
    const ok = await clientsFor(server.url).breakers.acquire({
      dependency: "transport.dep",
      service: "svc",
      attempt: 1,
    });
    expect(ok.policyRevision).toBeGreaterThan(0n);
  });

  it("answers an unknown method with Unimplemented", async () => {
    const status = await sendRaw("/bulwark.v1.BreakerService/NoSuchMethod", Buffer.alloc(0));
    expect(status.code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it("ends a Watch stream when its client cancels, and keeps serving", async () => {
    const controller = new AbortController();
    const stream = clientsFor(server.url).breakers.watch({}, { signal: controller.signal });
    const first = await stream[Symbol.asyncIterator]().next();
    expect(first.value?.kind.case).toBe("snapshot");
    controller.abort();
    const list = await clientsFor(server.url).policies.listPolicies({});
    expect(list.policies.map((p) => p.dependency)).toContain("transport.dep");
  });
});
