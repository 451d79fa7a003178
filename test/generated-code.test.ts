import { execFileSync } from "node:child_process";
import { cpSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ROOT, tempDir } from "./harness.ts";

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

const tmp = tempDir();
afterAll(() => tmp.remove());

describe("generated code", () => {
  it("matches what `npm run generate` makes from proto/", () => {
    for (const name of ["proto", "buf.yaml", "buf.gen.yaml"]) {
      cpSync(join(ROOT, name), join(tmp.dir, name), { recursive: true });
    }
    const bin = join(ROOT, "node_modules", ".bin");
    execFileSync(join(bin, "buf"), ["generate"], {
      cwd: tmp.dir,
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}` },
    });
    const fresh = filesUnder(join(tmp.dir, "gen"))
      .map((f) => relative(tmp.dir, f))
      .sort();
    const committed = filesUnder(join(ROOT, "gen"))
      .map((f) => relative(ROOT, f))
      .sort();
    expect(committed).toEqual(fresh);
    for (const file of fresh) {
      const stale =
        readFileSync(join(ROOT, file), "utf8") !== readFileSync(join(tmp.dir, file), "utf8");
      expect(stale, `${file} is stale: run npm run generate`).toBe(false);
    }
  });
});
