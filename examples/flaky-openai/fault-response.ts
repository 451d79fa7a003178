/**
 * How the flaky server answers one request in a given phase, with the JSON shapes of the OpenAI
 * chat completions API: request validation, a plausible `chat.completion` and the
 * `{ error: {...} }` body. Wording is our own; only the shapes follow the API, so the official
 * client parses them.
 */
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Phase } from "./scenario.ts";

/** Chat requests in tests are small; the cap stops a runaway client from filling memory. */
const MAX_BODY_BYTES = 1024 * 1024;
/** Rough rule of thumb for English text with OpenAI tokenizers; good enough for usage figures. */
const CHARS_PER_TOKEN = 4;
/** How much of the last user message the answer echoes, in characters. */
const ECHO_CHARS = 80;

/**
 * Answers `req` as `phase` dictates: not at all (down, resets, hanging), 404 off the one route,
 * 400 for a malformed body, then the phase's fault or a completion after `latencyMs`.
 * `settle` records the status sent, 0 for none; `random` draws in [0, 1) for `errors` mode.
 */
export function respondWithFault(
  req: IncomingMessage,
  res: ServerResponse,
  phase: Phase,
  settle: (status: number) => void,
  random: () => number,
): void {
  // Modes in which the server does not answer at all come before any validation.
  switch (phase.mode) {
    case "down": // accepted just before the listener closed: fail it like the outage it is
    case "resets":
      settle(0);
      req.socket.destroy();
      return;
    case "hanging":
      settle(0);
      req.resume(); // read the body so the request is complete; close() ends the socket
      return;
  }

  res.setHeader("x-flaky-phase", phase.name);
  res.setHeader("x-request-id", `req_${randomBytes(12).toString("hex")}`);
  const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
    if (res.destroyed || res.headersSent) return;
    settle(status);
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(JSON.stringify(body));
  };
  const sendLater = (status: number, body: unknown, headers?: Record<string, string>) => {
    const timer = setTimeout(() => send(status, body, headers), phase.latencyMs);
    res.once("close", () => clearTimeout(timer));
  };

  const path = new URL(req.url ?? "/", "http://flaky.invalid").pathname;
  if (req.method !== "POST" || path !== "/v1/chat/completions") {
    req.resume();
    const message = `No route for ${req.method} ${path} on this server.`;
    send(404, openAIError(message, "invalid_request_error", null));
    return;
  }
  readBody(req).then(
    (text) => {
      if (text === undefined) {
        const message = `Request body is larger than ${MAX_BODY_BYTES} bytes.`;
        send(413, openAIError(message, "invalid_request_error", null));
        return;
      }
      const checked = validateChatRequest(text);
      if ("error" in checked) {
        send(400, checked satisfies OpenAIErrorBody);
        return;
      }
      if (phase.mode === "rate-limited") {
        const seconds = phase.retryAfterSeconds;
        const message = `Rate limit reached for this phase; retry in ${seconds} s.`;
        sendLater(429, openAIError(message, "requests", null, "rate_limit_exceeded"), {
          "retry-after": String(seconds),
          "retry-after-ms": String(seconds * 1000),
        });
        return;
      }
      if (phase.mode === "errors" && random() < phase.errorRate) {
        const status = phase.statuses[Math.floor(random() * phase.statuses.length)] ?? 500;
        sendLater(status, serverErrorBody(status));
        return;
      }
      sendLater(200, chatCompletionFromRequest(checked));
    },
    () => req.socket.destroy(),
  );
}

/** The error body of the API: what the official client turns into an `APIError`. */
interface OpenAIErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** The parts of a chat request the server uses. */
interface ChatRequest {
  model: string;
  messages: { role: string; content?: unknown }[];
}

/** Builds an error body. */
function openAIError(
  message: string,
  type: string,
  param: string | null,
  code: string | null = null,
): OpenAIErrorBody {
  return { error: { message, type, param, code } };
}

/** The error body of an injected 5xx, worded by status. */
function serverErrorBody(status: number): OpenAIErrorBody {
  const messages: Record<number, string> = {
    500: "Injected fault: the server failed while handling this request.",
    502: "Injected fault: the gateway got an unusable answer from the model backend.",
    503: "Injected fault: the service is overloaded and shed this request.",
  };
  const message = messages[status] ?? `Injected fault: status ${status}.`;
  return openAIError(message, "server_error", null);
}

/** Parses and checks a request body; returns the request or the 400 error body. */
function validateChatRequest(text: string): ChatRequest | OpenAIErrorBody {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return openAIError("The request body must be a JSON object.", "invalid_request_error", null);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return openAIError("The request body must be a JSON object.", "invalid_request_error", null);
  }
  const { model, messages } = body as Record<string, unknown>;
  if (typeof model !== "string" || model === "") {
    const message = "Field 'model' is required and must be a non-empty string.";
    return openAIError(message, "invalid_request_error", "model");
  }
  if (!Array.isArray(messages) || messages.length === 0) {
    const message = "Field 'messages' is required and must be a non-empty array.";
    return openAIError(message, "invalid_request_error", "messages");
  }
  for (const [i, item] of messages.entries()) {
    if (typeof item !== "object" || item === null || typeof item.role !== "string") {
      const message = `messages[${i}] must be an object with a string 'role'.`;
      return openAIError(message, "invalid_request_error", "messages");
    }
  }
  return { model, messages };
}

/** A `chat.completion` object answering `request` with a short echo of its last user message. */
function chatCompletionFromRequest(request: ChatRequest): object {
  const lastUser = request.messages.findLast((m) => m.role === "user");
  const said = lastUser === undefined ? "" : contentText(lastUser.content).trim();
  const echo = said.length > ECHO_CHARS ? `${said.slice(0, ECHO_CHARS - 3)}...` : said;
  const content = said === "" ? "Hello from the flaky server." : `You said: "${echo}"`;

  const promptTokens = request.messages.reduce(
    (sum, m) => sum + estimateTokens(contentText(m.content)),
    0,
  );
  const completionTokens = estimateTokens(content);
  return {
    id: `chatcmpl-${randomBytes(15).toString("base64url")}`,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    model: request.model,
    choices: [
      {
        index: 0,
        message: { role: "assistant", content, refusal: null, annotations: [] },
        logprobs: null,
        finish_reason: "stop",
      },
    ],
    usage: {
      prompt_tokens: promptTokens,
      completion_tokens: completionTokens,
      total_tokens: promptTokens + completionTokens,
    },
    system_fingerprint: "fp_flaky",
  };
}

/** Text of a message's content: a string, or an array of parts of which `text` ones count. */
function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((part: unknown) =>
      typeof part === "object" && part !== null && "text" in part && typeof part.text === "string"
        ? part.text
        : "",
    )
    .join(" ");
}

function estimateTokens(text: string): number {
  return Math.max(1, Math.ceil(text.length / CHARS_PER_TOKEN));
}

/** Reads the whole body as UTF-8; undefined when it exceeds MAX_BODY_BYTES. */
function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () =>
      resolve(bytes > MAX_BODY_BYTES ? undefined : Buffer.concat(chunks).toString("utf8")),
    );
    req.on("error", reject);
  });
}
