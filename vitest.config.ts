import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: [
      "test/**/*.test.ts",
      "server/**/*.test.ts",
      "sdk/**/*.test.ts",
      "examples/**/*.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start real servers; two cores are shared between them.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
