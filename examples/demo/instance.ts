/**
 * One service instance of the demo, run as its own process: it sends chat completions through
 * the official `openai` client, guarded by the Bulwark SDK, and streams what happened to the
 * orchestrator.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import OpenAI from "openai";
import { createBulwark, DEGRADED_HEADER } from "../../sdk/index.ts";
import type {
  AttemptRecord,
  InstanceMessage,
  RequestRecord,
  SdkEventRecord,
  StartMessage,
} from "./messages.ts";

/** How often records are sent to the orchestrator. */
const FLUSH_INTERVAL_MS = 250;

const send = (message: InstanceMessage) => process.send?.(message);
// Modules are loaded: wait for the word to start, so that every instance begins together.
const { config } = await new Promise<StartMessage>((resolve) => {
  process.once("message", (m) => resolve(m as StartMessage));
  send({ type: "ready" });
});

const bulwark = createBulwark({
  url: config.controlPlaneUrl,
  service: config.service,
  acquireTimeoutMs: config.acquireTimeoutMs,
});
const requests: RequestRecord[] = [];
const attempts: AttemptRecord[] = [];
const events: SdkEventRecord[] = [];
// The SDK emits its events inside the call's async context, so each can be tied to its request.
const currentRequest = new AsyncLocalStorage<RequestRecord>();
bulwark.on((event) => {
  const request = currentRequest.getStore();
  if (request !== undefined && event.type === "retry") request.retries++;
  if (request !== undefined && event.type === "rejected") request.rejected = true;
  if (event.type === "attempt") {
    attempts.push({
      startedAtMs: event.startedAtMs,
      spanId: event.spanId,
      admission: event.admission,
      result: event.result,
    });
  } else if (
    event.type === "retry" ||
    event.type === "rejected" ||
    event.type === "fallback" ||
    event.type === "control-plane"
  ) {
    events.push({ atMs: Date.now(), type: event.type });
  }
});

const openai = new OpenAI({
  baseURL: config.upstreamBaseUrl,
  apiKey: "demo-key",
  // Bulwark owns retries; the client's own would multiply them.
  maxRetries: 0,
  fetch: bulwark.fetch(config.dependency, {
    // Degrade to a canned answer instead of failing the user's request.
    fallback: () =>
      Response.json({
        id: "chatcmpl-fallback",
        object: "chat.completion",
        created: Math.floor(Date.now() / 1000),
        model: "fallback",
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: "The assistant is busy; please try again." },
            finish_reason: "stop",
            logprobs: null,
          },
        ],
      }),
  }),
});

async function oneRequest(n: number): Promise<void> {
  const record: RequestRecord = {
    startedAtMs: Date.now(),
    latencyMs: 0,
    outcome: "error",
    retries: 0,
    rejected: false,
  };
  const started = performance.now();
  await currentRequest.run(record, async () => {
    try {
      const { response } = await openai.chat.completions
        .create({
          model: "gpt-4o-mini",
          messages: [{ role: "user", content: `Summarize ticket #${n} in one line.` }],
        })
        .withResponse();
      record.outcome = response.headers.get(DEGRADED_HEADER) === "true" ? "fallback" : "success";
    } catch (err) {
      record.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
  });
  record.latencyMs = performance.now() - started;
  requests.push(record);
}

function flush(): void {
  if (requests.length + attempts.length + events.length === 0) return;
  send({
    type: "records",
    service: config.service,
    requests: requests.splice(0),
    attempts: attempts.splice(0),
    events: events.splice(0),
  });
}

const flusher = setInterval(flush, FLUSH_INTERVAL_MS);
const intervalMs = 1000 / config.requestsPerSecond;
const startedAt = performance.now();
const inFlight = new Set<Promise<void>>();
let n = 0;
while (performance.now() - startedAt < config.durationMs) {
  const p = oneRequest(n++).finally(() => inFlight.delete(p));
  inFlight.add(p);
  const nextAt = startedAt + n * intervalMs;
  await new Promise((r) => setTimeout(r, Math.max(0, nextAt - performance.now())));
}
await Promise.all(inFlight);
await bulwark.close();
clearInterval(flusher);
flush();
send({ type: "done", service: config.service });
process.disconnect?.();
