import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import type { DemoReport } from "../examples/demo/report.ts";
import { startFlakyOpenAI } from "../examples/flaky-openai/flaky-openai-server.ts";
import { parsePhase } from "../examples/flaky-openai/scenario.ts";
import { ROOT, startTestServer, tempDir } from "./harness.ts";

const run = promisify(execFile);
const tmp = tempDir();
afterAll(() => tmp.remove());

describe("npm run demo", () => {
  it("sends only half-open probes to the upstream once the breaker opened in the outage", async () => {
    const out = join(tmp.dir, "report.json");
    const { stdout } = await run(
      process.execPath,
      [
        "--import",
        "tsx",
        "examples/demo/main.ts",
        "--scenario",
        "examples/scenarios/short.json",
        "--out",
        out,
        // The test machine runs other test files at once; a generous admission budget keeps
        // slow answers from being decided locally, which is not what this test is about.
        "--acquire-timeout-ms",
        "3000",
      ],
      { cwd: ROOT, timeout: 60_000 },
    );
    expect(stdout).toContain(`Report written to ${out}`);
    const report = JSON.parse(readFileSync(out, "utf8")) as DemoReport;
    const outage = report.phases.find((p) => p.name === "outage")!;
    expect(outage.afterOpen).toBeDefined();
    const after = outage.afterOpen!;
    expect(after.unexpected).toBe(0);
    expect(after.local).toBe(0);
    expect(after.probes).toBeGreaterThanOrEqual(1);
    expect(after.upstreamCalls).toBe(after.probes + after.admittedBeforeOpen);
    for (const p of report.phases) {
      expect(p.requests).toBe(p.successes + p.fallbacks + p.errors);
      expect(p.breakerRejections).toBeLessThanOrEqual(p.fallbacks + p.errors);
    }
    expect(outage.breakerRejections).toBeGreaterThan(0);
    expect(outage.fallbacks).toBeGreaterThan(0);
    expect(report.totals.errors).toBe(0);
    expect(report.transitions.map((t) => t.to)).toContain("open");
    expect(report.transitions.at(-1)?.to).toBe("closed");
    const recovery = report.phases.find((p) => p.name === "recovery")!;
    expect(recovery.successes).toBeGreaterThan(0);
  }, 90_000);

  it("names the bad flag", async () => {
    const err = await run(
      process.execPath,
      ["--import", "tsx", "examples/demo/main.ts", "--instances", "0"],
      { cwd: ROOT },
    ).catch((e: { code: number; stderr: string }) => e);
    expect(err).toMatchObject({ code: 2 });
    expect((err as { stderr: string }).stderr).toContain(
      "--instances must be an integer in [1, 16]",
    );
  });
});

describe("README", () => {
  it("shows the quickstart exactly as examples/quickstart.ts, and it runs", async () => {
    const source = readFileSync(join(ROOT, "examples/quickstart.ts"), "utf8");
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(readme).toContain(source);
    const server = await startTestServer();
    const upstream = await startFlakyOpenAI({
      scenario: {
        name: "quickstart",
        phases: [parsePhase({ name: "healthy", durationMs: 60_000, mode: "healthy" })],
      },
    });
    try {
      const { stdout } = await run(
        process.execPath,
        ["--import", "tsx", "examples/quickstart.ts"],
        {
          cwd: ROOT,
          env: { ...process.env, BULWARK_URL: server.url, OPENAI_BASE_URL: upstream.baseUrl },
        },
      );
      expect(stdout).toMatch(/\S/);
      expect(upstream.arrivals()).toHaveLength(1);
      expect(upstream.arrivals()[0]?.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    } finally {
      await upstream.close();
      await server.cleanup();
    }
  });
});
