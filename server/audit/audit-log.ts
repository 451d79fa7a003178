import { randomUUID } from "node:crypto";
import type { DomainEvent } from "../events/domain-event.ts";
import { canonicalJson, GENESIS_HASH, payloadHash, recordHash } from "./audit-chain.ts";
import {
  type AuditQuery,
  type AuditRecordRow,
  type AuditStore,
  type PendingEntry,
  VERIFY_PAGE_SIZE,
} from "./audit-store.ts";

/** The producer name of events the server itself records. */
export const SERVER_PRODUCER = "bulwark-server";
/** Deepest nesting of one tree in a Trace answer (each level is one nested message). */
export const MAX_TRACE_DEPTH = 40;
/** Largest causal tree Trace assembles; a trace beyond it is cut and says so. */
export const MAX_TRACE_RECORDS = 10_000;

/** An entry a service appends, validated by the RPC layer. */
export interface AppendInput {
  eventId: string;
  eventType: string;
  aggregateId: string;
  payload: Uint8Array;
  producer: string;
  traceId: string;
  causationId: string;
}

export interface VerifyResult {
  valid: boolean;
  recordsChecked: number;
  firstInvalidSequence: number;
  problem: string;
  headHash: string;
}

export interface TraceNode {
  record: AuditRecordRow;
  children: TraceNode[];
}

/**
 * The audit log: appends (from services and from the server's own domain events), queries,
 * verification of the chain and causal traces. `onAppended` sees every stored record, in chain
 * order (the JetStream mirror hangs there).
 */
export class AuditLog {
  private verifying: Promise<VerifyResult> | undefined;

  constructor(
    private readonly store: AuditStore,
    private readonly key: Buffer | undefined,
    private readonly clock: () => number,
    private readonly onAppended: (records: AuditRecordRow[]) => void = () => {},
  ) {}

  append(inputs: readonly AppendInput[], principal: string): AuditRecordRow[] {
    const timestampMs = this.clock();
    const entries: PendingEntry[] = inputs.map((e) => ({
      eventId: e.eventId || randomUUID(),
      eventType: e.eventType,
      aggregateId: e.aggregateId,
      payloadHash: payloadHash(e.payload, this.key),
      producer: e.producer || principal,
      principal,
      timestampMs,
      traceId: e.traceId,
      causationId: e.causationId,
    }));
    const records = this.store.append(entries);
    this.onAppended(records);
    return records;
  }

  /** Records one of the server's domain events, with the principal that caused it. */
  recordDomainEvent(event: DomainEvent): AuditRecordRow {
    const { eventType, aggregateId, body } = describe(event);
    const [record] = this.append(
      [
        {
          eventId: event.eventId,
          eventType,
          aggregateId,
          payload: Buffer.from(canonicalJson(body)),
          producer: SERVER_PRODUCER,
          traceId: event.correlationId,
          causationId: event.causationId,
        },
      ],
      event.principal,
    );
    return record!;
  }

  query(q: AuditQuery): AuditRecordRow[] {
    return this.store.query(q);
  }

  /**
   * Walks the whole chain and stops at the first record that does not match. It reads a page at
   * a time and lets other work run between pages, so a long chain does not stall the server;
   * calls that arrive while a walk is running share its result.
   */
  verify(): Promise<VerifyResult> {
    this.verifying ??= this.walk().finally(() => {
      this.verifying = undefined;
    });
    return this.verifying;
  }

  private async walk(): Promise<VerifyResult> {
    let expected = 1;
    let prevHash = GENESIS_HASH;
    const fail = (sequence: number, problem: string): VerifyResult => ({
      valid: false,
      recordsChecked: expected - 1,
      firstInvalidSequence: sequence,
      problem,
      headHash: prevHash,
    });
    for (;;) {
      const page = this.store.page(expected - 1, VERIFY_PAGE_SIZE);
      for (const r of page) {
        if (r.sequence !== expected) {
          return fail(expected, `record ${expected} is missing (next present is ${r.sequence})`);
        }
        if (r.prevHash !== prevHash) {
          return fail(r.sequence, `prev_hash does not match the hash of record ${r.sequence - 1}`);
        }
        if (recordHash(prevHash, r, this.key) !== r.hash) {
          return fail(r.sequence, "hash does not match the record's fields");
        }
        prevHash = r.hash;
        expected++;
      }
      if (page.length < VERIFY_PAGE_SIZE) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    return {
      valid: true,
      recordsChecked: expected - 1,
      firstInvalidSequence: 0,
      problem: "",
      headHash: prevHash,
    };
  }

  /**
   * The causal tree of a trace: its records, plus records in other traces that name one of them
   * as their cause, linked by causation_id.
   */
  trace(traceId: string): { roots: TraceNode[]; truncated: boolean } {
    const found = new Map<string, AuditRecordRow>();
    for (const r of this.store.query({
      traceId,
      aggregateId: "",
      eventType: "",
      fromMs: 0,
      toMs: 0,
      afterSequence: 0,
      limit: MAX_TRACE_RECORDS,
    })) {
      found.set(r.eventId, r);
    }
    let frontier = [...found.keys()];
    while (frontier.length > 0 && found.size < MAX_TRACE_RECORDS) {
      const next: string[] = [];
      for (const id of frontier) {
        for (const r of this.store.causedBy(id)) {
          if (found.has(r.eventId) || found.size >= MAX_TRACE_RECORDS) continue;
          found.set(r.eventId, r);
          next.push(r.eventId);
        }
      }
      frontier = next;
    }
    const nodes = new Map<string, TraceNode>();
    for (const r of [...found.values()].sort((a, b) => a.sequence - b.sequence)) {
      nodes.set(r.eventId, { record: r, children: [] });
    }
    const roots: TraceNode[] = [];
    const parents = new Map<TraceNode, TraceNode>();
    for (const node of nodes.values()) {
      const parent = nodes.get(node.record.causationId);
      if (parent !== undefined && parent !== node) {
        parent.children.push(node);
        parents.set(node, parent);
      } else roots.push(node);
    }
    // Protobuf decoders stop at a nesting depth of 100: a chain deeper than MAX_TRACE_DEPTH is
    // continued as a new root, which still names its cause in causation_id.
    const depthCut = (root: TraceNode) => {
      const stack: [TraceNode, number][] = [[root, 0]];
      while (stack.length > 0) {
        const [n, depth] = stack.pop()!;
        for (const child of [...n.children]) {
          if (depth + 1 >= MAX_TRACE_DEPTH) {
            n.children.splice(n.children.indexOf(child), 1);
            deep.push(child);
          } else stack.push([child, depth + 1]);
        }
      }
    };
    const deep: TraceNode[] = [];
    // Records that name each other as causes form a loop no root reaches: the earliest record of
    // each such loop becomes a root, cut from the parent that closed the loop.
    const reached = new Set<TraceNode>();
    const mark = (node: TraceNode) => {
      const stack = [node];
      while (stack.length > 0) {
        const n = stack.pop()!;
        if (reached.has(n)) continue;
        reached.add(n);
        stack.push(...n.children);
      }
    };
    for (const root of roots) mark(root);
    for (const node of nodes.values()) {
      if (reached.has(node)) continue;
      const parent = parents.get(node);
      if (parent !== undefined) parent.children.splice(parent.children.indexOf(node), 1);
      roots.push(node);
      mark(node);
    }
    for (let i = 0; i < roots.length; i++) depthCut(roots[i]!);
    while (deep.length > 0) {
      const node = deep.pop()!;
      roots.push(node);
      depthCut(node);
    }
    roots.sort((a, b) => a.record.sequence - b.record.sequence);
    return { roots, truncated: found.size >= MAX_TRACE_RECORDS };
  }
}

function describe(event: DomainEvent): {
  eventType: string;
  aggregateId: string;
  body: unknown;
} {
  switch (event.kind) {
    case "breaker-transition": {
      const t = event.transition;
      return {
        eventType: "breaker.transition",
        aggregateId: t.service === "" ? t.dependency : `${t.dependency}/${t.service}`,
        body: t,
      };
    }
    case "policy-changed":
      return {
        eventType: "policy.changed",
        aggregateId: event.policy.dependency,
        body: event.policy,
      };
    case "policy-deleted":
      return {
        eventType: "policy.deleted",
        aggregateId: event.dependency,
        body: { dependency: event.dependency, revision: event.revision },
      };
    case "alert":
      return {
        eventType: event.alert.kind === "raised" ? "alert.raised" : "alert.cleared",
        aggregateId: event.alert.dependency,
        // A zero budget makes burn rates infinite, which JSON cannot hold: name it.
        body: JSON.parse(
          JSON.stringify(event.alert, (_k, v: unknown) =>
            v === Number.POSITIVE_INFINITY ? "Infinity" : v,
          ),
        ),
      };
  }
}
