import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import OpenAI from "openai";
import { PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { createBulwark } from "../sdk/index.ts";

const url = process.env.BULWARK_URL ?? "http://127.0.0.1:50051";

// 1. An operator sets the policy for the dependency once, for the whole fleet.
const policies = createClient(PolicyService, createGrpcTransport({ baseUrl: url }));
await policies.putPolicy({
  policy: {
    dependency: "openai.chat",
    sla: { latencyObjectiveMs: 10_000, availabilityTargetPercent: 99.5 },
    timeoutMs: 8_000,
    retry: { maxAttempts: 3 },
    breaker: { failureRateThresholdPercent: 50, minimumCalls: 10, openWaitMs: 30_000 },
  },
});

// 2. Each service instance guards its calls; the openai client needs no other change.
const bulwark = createBulwark({ url, service: "quickstart" });
bulwark.on((event) => {
  if (event.type === "retry") console.log(`retrying in ${event.delayMs} ms (${event.errorType})`);
});
const openai = new OpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: process.env.OPENAI_API_KEY ?? "not-needed-for-the-flaky-server",
  maxRetries: 0, // Bulwark retries within the policy's budget
  fetch: bulwark.fetch("openai.chat", {
    fallback: () =>
      Response.json({ choices: [{ index: 0, message: { role: "assistant", content: "(busy)" } }] }),
  }),
});

const completion = await openai.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hello" }],
});
console.log(completion.choices[0]?.message.content);
await bulwark.close();
