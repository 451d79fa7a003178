import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BreakerState, OutcomeResult } from "../gen/bulwark/v1/breaker_types_pb.ts";
import {
  clientsFor,
  type ServerProcess,
  spawnServerProcess,
  tempDir,
  testPolicy,
} from "./harness.ts";

const tmp = tempDir();
const processes: ServerProcess[] = [];
afterAll(async () => {
  await Promise.all(processes.map((p) => p.kill("SIGKILL")));
  tmp.remove();
});

describe("durability", () => {
  it("resumes an OPEN breaker with its remaining wait after SIGKILL", async () => {
    const dbPath = join(tmp.dir, "restart.db");
    const first = await spawnServerProcess(dbPath);
    processes.push(first);
    const { policies, breakers } = clientsFor(first.url);
    await policies.putPolicy({
      policy: testPolicy("restart.dep", { breaker: { minimumCalls: 2, openWaitMs: 6_000 } }),
    });
    const failure = {
      dependency: "restart.dep",
      service: "svc",
      attempt: 1,
      result: OutcomeResult.FAILURE,
    };
    await breakers.report({ outcomes: [failure, failure] });
    const open = (await breakers.getBreaker({ dependency: "restart.dep" })).breaker!;
    expect(open.state).toBe(BreakerState.OPEN);

    // No grace: the process dies at once, so only what was committed before the answer survives.
    await first.kill("SIGKILL");
    const second = await spawnServerProcess(dbPath);
    processes.push(second);
    const after = clientsFor(second.url);
    const resumed = (await after.breakers.getBreaker({ dependency: "restart.dep" })).breaker!;
    expect(resumed.state).toBe(BreakerState.OPEN);
    expect(resumed.openUntilUnixMs).toBe(open.openUntilUnixMs);
    expect(Number(resumed.openUntilUnixMs) - Date.now()).toBeGreaterThan(1_000);
    const decision = await after.breakers.acquire({
      dependency: "restart.dep",
      service: "svc",
      attempt: 1,
    });
    expect(Number(decision.retryAtUnixMs)).toBe(Number(open.openUntilUnixMs));
    const history = await after.breakers.listTransitions({ dependency: "restart.dep" });
    expect(history.transitions.map((t) => t.to)).toEqual([BreakerState.OPEN]);
  });

  it("refuses a second server on the same database file", async () => {
    const dbPath = join(tmp.dir, "locked.db");
    const owner = await spawnServerProcess(dbPath);
    processes.push(owner);
    await expect(spawnServerProcess(dbPath)).rejects.toThrow(/in use by process/);
    // Once the owner is gone (even killed), the file can be taken over.
    await owner.kill("SIGKILL");
    const next = await spawnServerProcess(dbPath);
    processes.push(next);
    expect(next.port).toBeGreaterThan(0);
  });
});
