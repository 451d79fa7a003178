/**
 * `npm run bench`: performance figures measured on this machine, each printed beside a baseline
 * measured in the same run. Not a test: nothing here passes or fails.
 */
import { cpus } from "node:os";
import { auditBench } from "./audit-bench.ts";
import { breakerBench } from "./breaker-bench.ts";
import { deferredBench } from "./deferred-bench.ts";
import { guardedCallBench } from "./guarded-call-bench.ts";
import { idempotencyBench } from "./idempotency-bench.ts";

process.stdout.write(
  `Bulwark benchmarks — Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}\n`,
);
await guardedCallBench();
await breakerBench();
await auditBench();
await deferredBench();
await idempotencyBench();
