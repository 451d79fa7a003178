/**
 * A worker for the deferred-work crash tests, run as its own process (`node --import tsx`). Its
 * task comes as JSON in argv[2]. The handler POSTs each job's payload to the upstream with the
 * job's idempotency key. It prints `{"started":<jobId>}` when a job starts and, with
 * `stallAfterSuccess`, prints `{"handled":<jobId>}` once the handler succeeded and then blocks
 * its event loop before the job is acknowledged, so the test can SIGKILL it mid-job.
 */
import { writeSync } from "node:fs";
import { createBulwark } from "../sdk/index.ts";
import { postJob } from "./job-upstream.ts";

interface Task {
  url: string;
  nats: string;
  dependency: string;
  upstream: string;
  stallAfterSuccess: boolean;
}

const task = JSON.parse(process.argv[2]!) as Task;
const bulwark = createBulwark({ url: task.url, service: "crash-worker", nats: task.nats });
const say = (line: unknown) => writeSync(1, `${JSON.stringify(line)}\n`);

bulwark.on((event) => {
  if (event.type !== "job") return;
  if (event.status === "started") say({ started: event.jobId });
  if (event.status === "succeeded" && task.stallAfterSuccess) {
    say({ handled: event.jobId });
    // Blocks the whole process: the acknowledgement never leaves it.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
  }
});

bulwark.worker(task.dependency, (job, ctx) =>
  postJob(task.upstream, job.payload, ctx.signal, job.idempotencyKey),
);
say({ ready: true });
