/**
 * A service instance for the idempotency tests, run as its own process (`node --import tsx`).
 * Its task comes as JSON in argv[2]:
 *
 * - `calls`: makes `count` concurrent guarded calls with one idempotency key, each POSTing to
 *   the upstream, and prints one JSON line with every caller's result (or error name).
 * - `hold`: begins the key with `once`, POSTs to the upstream, prints `{"holding":true}` and
 *   then never finishes, so the test can SIGKILL it while it holds the lease.
 */
import { createBulwark, isBulwarkError } from "../sdk/index.ts";

interface Task {
  mode: "calls" | "hold";
  url: string;
  dependency: string;
  upstream: string;
  key: string;
  count: number;
  leaseMs?: number;
}

const task = JSON.parse(process.argv[2]!) as Task;
const bulwark = createBulwark({ url: task.url, service: "idem-test" });

async function post(signal?: AbortSignal): Promise<string> {
  const res = await fetch(task.upstream, {
    method: "POST",
    body: JSON.stringify({ key: task.key, pid: process.pid }),
    ...(signal === undefined ? {} : { signal }),
  });
  if (!res.ok) throw Object.assign(new Error(`status ${res.status}`), { status: res.status });
  return res.text();
}

if (task.mode === "calls") {
  const results = await Promise.all(
    Array.from({ length: task.count }, () =>
      bulwark
        .execute(task.dependency, ({ signal }) => post(signal), {
          idempotencyKey: task.key,
          idempotency: { request: { order: 42 } },
        })
        .then(
          (r) => ({ ok: true as const, value: r.value, replayed: r.replayed === true }),
          (err: unknown) => ({
            ok: false as const,
            error: isBulwarkError(err) ? err.name : String(err),
          }),
        ),
    ),
  );
  process.stdout.write(`${JSON.stringify({ results })}\n`);
  await bulwark.close();
  process.exit(0);
} else {
  await bulwark.once(
    task.key,
    async () => {
      await post();
      process.stdout.write(`${JSON.stringify({ holding: true })}\n`);
      // Never finishes: the test kills this process while it holds the lease.
      await new Promise(() => setInterval(() => {}, 1_000));
    },
    { ...(task.leaseMs === undefined ? {} : { leaseMs: task.leaseMs }) },
  );
}
