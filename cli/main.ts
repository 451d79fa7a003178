/**
 * `npm run cli -- <command>`: operate a Bulwark control plane from a terminal or a deploy job.
 * Policies are kept as YAML or JSON files (the bulwark.v1.Policy message in its JSON form, one
 * policy or a `policies:` list) and applied with `policy apply`.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type DescMessage, fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { parse as parseYaml } from "yaml";
import {
  AuditService,
  QueryResponseSchema,
  TraceResponseSchema,
  VerifyResponseSchema,
} from "../gen/bulwark/v1/audit_pb.ts";
import {
  BreakerService,
  ForceAction,
  ForceBreakerResponseSchema,
  GetBreakerResponseSchema,
  ListBreakersResponseSchema,
  ListTransitionsResponseSchema,
} from "../gen/bulwark/v1/breaker_pb.ts";
import {
  DeadLetterService,
  DeadLetterStatus,
  GetDeadLetterResponseSchema,
  ListDeadLettersResponseSchema,
  ReplayDeadLetterResponseSchema,
  ResolveDeadLetterResponseSchema,
} from "../gen/bulwark/v1/dead_letter_pb.ts";
import { PolicySchema, PolicyService } from "../gen/bulwark/v1/policy_pb.ts";
import { normalizePolicy } from "../server/domain/policy-validation.ts";

const DEFAULT_URL = "http://127.0.0.1:50051";
/** Long enough for a Verify over millions of audit records. */
const CALL_TIMEOUT_MS = 60_000;

const USAGE = `Usage: npm run cli -- [--url URL] [--token T] [--ca FILE] <command>
Commands:
  policy apply FILE...          create or replace the policies in YAML or JSON files
  policy list | get DEP | delete DEP [--revision N]
  breaker list | get DEP [--service S] | transitions [DEP]
  breaker force DEP forced-open|disabled|metrics-only|reset --reason TEXT [--service S]
  audit verify | trace TRACE_ID | query [--trace T] [--aggregate A] [--type E] [--limit N]
  dlq list [DEP] [--status open|replayed|resolved] [--trace T] [--limit N] | get LETTER_ID
  dlq replay LETTER_ID [--force] | resolve LETTER_ID --reason TEXT
Options:
  --url URL     control plane (env BULWARK_URL; default ${DEFAULT_URL})
  --token T     bearer token (env BULWARK_TOKEN)
  --ca FILE     PEM CA for an https:// URL signed by a private CA (env BULWARK_CA_FILE)`;

class UsageError extends Error {}

/** The actions of `breaker force`, by the name an operator types. */
const FORCE_ACTIONS: Record<string, ForceAction> = {
  "forced-open": ForceAction.FORCED_OPEN,
  disabled: ForceAction.DISABLED,
  "metrics-only": ForceAction.METRICS_ONLY,
  reset: ForceAction.RESET,
};

function print(schema: DescMessage, message: unknown): void {
  // biome-ignore lint/suspicious/noExplicitAny: toJson takes the message of the given schema
  const json = toJson(schema, message as any, { alwaysEmitImplicit: true });
  process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
}

/** Policies from a YAML or JSON file: one policy, or `{ policies: [...] }`. */
function policiesFromFile(path: string) {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, "utf8"));
  } catch (err) {
    throw new UsageError(`policy apply: ${path}: ${(err as Error).message}`);
  }
  const list = (doc as { policies?: unknown })?.policies ?? [doc];
  if (!Array.isArray(list))
    throw new UsageError(`policy apply: ${path}: "policies" must be a list`);
  return list.map((entry, i) => {
    try {
      const policy = fromJson(PolicySchema, entry as JsonValue);
      // The server's own validation, run here first: a file with one bad policy applies none.
      normalizePolicy(policy);
      return policy;
    } catch (err) {
      throw new UsageError(`policy apply: ${path}: policies[${i}]: ${(err as Error).message}`);
    }
  });
}

/** Flags every command takes. */
const GLOBAL_FLAGS = new Set(["url", "token", "ca", "help"]);
/** The other flags each command takes. */
const COMMAND_FLAGS: Record<string, readonly string[]> = {
  "policy apply": [],
  "policy list": [],
  "policy get": [],
  "policy delete": ["revision"],
  "breaker list": [],
  "breaker get": ["service"],
  "breaker force": ["service", "reason"],
  "breaker transitions": ["limit"],
  "audit verify": [],
  "audit query": ["trace", "aggregate", "type", "limit"],
  "audit trace": [],
  "dlq list": ["status", "trace", "limit"],
  "dlq get": [],
  "dlq replay": ["force"],
  "dlq resolve": ["reason"],
};

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      ca: { type: "string" },
      revision: { type: "string" },
      service: { type: "string" },
      reason: { type: "string" },
      trace: { type: "string" },
      aggregate: { type: "string" },
      type: { type: "string" },
      limit: { type: "string" },
      status: { type: "string" },
      force: { type: "boolean" },
      help: { type: "boolean" },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(`${USAGE}\n`);
    if (positionals.length === 0 && !values.help) throw new UsageError("a command is required");
    return;
  }
  const token = values.token ?? process.env.BULWARK_TOKEN;
  const url = values.url ?? process.env.BULWARK_URL ?? DEFAULT_URL;
  if (!/^https?:\/\//.test(url) || !URL.canParse(url)) {
    throw new UsageError(`--url must be an http(s) URL; got "${url}"`);
  }
  if (token !== undefined && !/^[\x21-\x7e]{1,4096}$/.test(token)) {
    throw new UsageError("--token must be 1-4096 visible ASCII characters");
  }
  const caFile = values.ca ?? process.env.BULWARK_CA_FILE;
  let ca: Buffer | undefined;
  if (caFile !== undefined) {
    try {
      ca = readFileSync(caFile);
    } catch {
      throw new UsageError(`--ca cannot be read: "${caFile}"`);
    }
  }
  const transport = createGrpcTransport({
    baseUrl: url,
    ...(ca === undefined ? {} : { nodeOptions: { ca } }),
    defaultTimeoutMs: CALL_TIMEOUT_MS,
    interceptors: [
      (next) => (req) => {
        if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      },
    ],
  });
  const policies = createClient(PolicyService, transport);
  const breakers = createClient(BreakerService, transport);
  const audit = createClient(AuditService, transport);
  const letters = createClient(DeadLetterService, transport);
  const [group, command, ...args] = positionals;
  // A flag the command does not use is refused rather than ignored: an operator who adds
  // --revision to an apply believes it is conditional.
  const allowed = COMMAND_FLAGS[`${group} ${command ?? ""}`.trim()];
  if (allowed !== undefined) {
    for (const flag of Object.keys(values)) {
      if (!GLOBAL_FLAGS.has(flag) && !allowed.includes(flag)) {
        throw new UsageError(`--${flag} does not apply to "${group} ${command}"`);
      }
    }
  }
  const arg = (name: string) => {
    const value = args[0];
    if (value === undefined) throw new UsageError(`${group} ${command} needs ${name}`);
    return value;
  };

  const limit = () => {
    if (values.limit === undefined) return 100;
    const n = Number(values.limit);
    if (!/^\d+$/.test(values.limit) || n < 1 || n > 1_000) {
      throw new UsageError(`--limit must be an integer in [1, 1000]; got "${values.limit}"`);
    }
    return n;
  };

  switch (`${group} ${command ?? ""}`.trim()) {
    case "policy apply": {
      if (args.length === 0) throw new UsageError("policy apply needs at least one FILE");
      // Every file is read and validated before anything is applied, so a mistake in the last
      // file stops all.
      const all = args.flatMap((file) =>
        policiesFromFile(file).map((policy, i) => ({ file, i, policy })),
      );
      for (const { file, i, policy } of all) {
        try {
          const res = await policies.putPolicy({ policy });
          process.stdout.write(
            `applied ${res.policy?.dependency} at revision ${res.policy?.revision}\n`,
          );
        } catch (err) {
          const e = ConnectError.from(err);
          throw new ConnectError(
            `${file}: policies[${i}] (${policy.dependency}): ${e.rawMessage}`,
            e.code,
          );
        }
      }
      return;
    }
    case "policy list":
      for (const p of (await policies.listPolicies({})).policies) print(PolicySchema, p);
      return;
    case "policy get":
      print(PolicySchema, (await policies.getPolicy({ dependency: arg("DEP") })).policy);
      return;
    case "policy delete": {
      let expectedRevision: bigint | undefined;
      if (values.revision !== undefined) {
        if (!/^\d+$/.test(values.revision)) {
          throw new UsageError(`--revision must be a whole number; got "${values.revision}"`);
        }
        expectedRevision = BigInt(values.revision);
      }
      const res = await policies.deletePolicy({ dependency: arg("DEP"), expectedRevision });
      process.stdout.write(`deleted ${args[0]} at revision ${res.revision}\n`);
      return;
    }
    case "breaker list":
      print(ListBreakersResponseSchema, await breakers.listBreakers({}));
      return;
    case "breaker get": {
      const res = await breakers.getBreaker({
        dependency: arg("DEP"),
        service: values.service ?? "",
      });
      print(GetBreakerResponseSchema, res);
      return;
    }
    case "breaker force": {
      const [dependency, actionName] = args;
      const action = FORCE_ACTIONS[actionName ?? ""];
      if (dependency === undefined || action === undefined) {
        throw new UsageError(
          `breaker force needs DEP and one of ${Object.keys(FORCE_ACTIONS).join(", ")}`,
        );
      }
      if (values.reason === undefined) throw new UsageError("breaker force needs --reason");
      const res = await breakers.forceBreaker({
        dependency,
        service: values.service ?? "",
        action,
        reason: values.reason,
      });
      print(ForceBreakerResponseSchema, res);
      return;
    }
    case "breaker transitions": {
      const res = await breakers.listTransitions({
        dependency: args[0] ?? "",
        limit: values.limit === undefined ? 1_000 : limit(),
      });
      print(ListTransitionsResponseSchema, res);
      return;
    }
    case "audit verify": {
      const res = await audit.verify({});
      print(VerifyResponseSchema, res);
      if (!res.valid) process.exitCode = 3;
      return;
    }
    case "audit query": {
      const res = await audit.query({
        traceId: values.trace ?? "",
        aggregateId: values.aggregate ?? "",
        eventType: values.type ?? "",
        limit: limit(),
      });
      print(QueryResponseSchema, res);
      return;
    }
    case "audit trace":
      print(TraceResponseSchema, await audit.trace({ traceId: arg("TRACE_ID") }));
      return;
    case "dlq list": {
      const statuses: Record<string, DeadLetterStatus> = {
        open: DeadLetterStatus.OPEN,
        replayed: DeadLetterStatus.REPLAYED,
        resolved: DeadLetterStatus.RESOLVED,
      };
      const status = values.status === undefined ? undefined : statuses[values.status];
      if (values.status !== undefined && status === undefined) {
        throw new UsageError(`--status must be open, replayed or resolved; got "${values.status}"`);
      }
      const res = await letters.listDeadLetters({
        dependency: args[0] ?? "",
        status: status ?? DeadLetterStatus.UNSPECIFIED,
        traceId: values.trace ?? "",
        limit: limit(),
      });
      print(ListDeadLettersResponseSchema, res);
      return;
    }
    case "dlq get":
      print(
        GetDeadLetterResponseSchema,
        await letters.getDeadLetter({ letterId: arg("LETTER_ID") }),
      );
      return;
    case "dlq replay":
      print(
        ReplayDeadLetterResponseSchema,
        await letters.replayDeadLetter({
          letterId: arg("LETTER_ID"),
          force: values.force ?? false,
        }),
      );
      return;
    case "dlq resolve": {
      const letterId = arg("LETTER_ID");
      if (values.reason === undefined) throw new UsageError("dlq resolve needs --reason TEXT");
      print(
        ResolveDeadLetterResponseSchema,
        await letters.resolveDeadLetter({ letterId, reason: values.reason }),
      );
      return;
    }
    default:
      throw new UsageError(`unknown command "${positionals.join(" ")}"; see --help`);
  }
}

try {
  await main(process.argv.slice(2));
} catch (err) {
  const code = (err as { code?: unknown }).code;
  if (err instanceof ConnectError) {
    process.stderr.write(`bulwark: ${Code[err.code]}: ${err.rawMessage}\n`);
    process.exitCode = 1;
  } else if (
    err instanceof UsageError ||
    (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS"))
  ) {
    process.stderr.write(`bulwark: ${(err as Error).message}\n`);
    process.exitCode = 2;
  } else {
    throw err;
  }
}
