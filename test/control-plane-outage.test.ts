import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startFlakyOpenAI } from "../examples/flaky-openai/flaky-openai-server.ts";
import { parsePhase } from "../examples/flaky-openai/scenario.ts";
import { type BulwarkEvent, createBulwark } from "../sdk/index.ts";
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

describe("control plane outage", () => {
  it("keeps user calls succeeding while the control plane is down, then reconnects", async () => {
    const dbPath = join(tmp.dir, "outage.db");
    const first = await spawnServerProcess(dbPath);
    processes.push(first);
    await clientsFor(first.url).policies.putPolicy({
      policy: testPolicy("outage.dep", { breaker: { windowSize: 100 } }),
    });
    const upstream = await startFlakyOpenAI({
      scenario: {
        name: "healthy",
        phases: [
          parsePhase({ name: "healthy", durationMs: 60_000, mode: "healthy", latencyMs: 1 }),
        ],
      },
    });
    const bulwark = createBulwark({ url: first.url, service: "outage-svc" });
    const events: BulwarkEvent[] = [];
    bulwark.on((e) => events.push(e));
    const call = () =>
      bulwark.call("outage.dep", async ({ signal }) => {
        const r = await fetch(`${upstream.baseUrl}/chat/completions`, {
          method: "POST",
          body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "x" }] }),
          signal,
        });
        return r.status;
      });
    try {
      expect(await call()).toBe(200);

      await first.kill("SIGKILL");
      const started = performance.now();
      const statuses: number[] = [];
      for (let i = 0; i < 30; i++) statuses.push(await call());
      const elapsedMs = performance.now() - started;
      expect(statuses.every((s) => s === 200)).toBe(true);
      // Only the first call pays for noticing the outage; the others decide locally at once.
      expect(elapsedMs).toBeLessThan(2_000);
      expect(events).toContainEqual(
        expect.objectContaining({ type: "control-plane", status: "unreachable" }),
      );
      expect(
        events.filter((e) => e.type === "attempt" && e.admission === "local").length,
      ).toBeGreaterThan(0);

      const second = await spawnServerProcess(dbPath, first.port);
      processes.push(second);
      const deadline = Date.now() + 10_000;
      while (!bulwark.controlPlaneConnected && Date.now() < deadline) {
        await call();
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(bulwark.controlPlaneConnected).toBe(true);
      expect(events).toContainEqual(
        expect.objectContaining({ type: "control-plane", status: "connected" }),
      );
      await bulwark.flush();
      const state = await clientsFor(second.url).breakers.getBreaker({ dependency: "outage.dep" });
      // Outcomes queued during the outage reached the restarted server.
      expect(state.breaker?.window?.calls).toBeGreaterThanOrEqual(30);
    } finally {
      await bulwark.close();
      await upstream.close();
    }
  });
});
