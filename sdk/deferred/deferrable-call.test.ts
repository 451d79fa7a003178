import { describe, expect, it } from "vitest";
import { CircuitOpenError, isCallDeferredError, RetriesExhaustedError } from "../errors.ts";
import type { CallResult } from "../guarded-call.ts";
import { deferrableCall } from "./deferrable-call.ts";
import type { EnqueueOptions, JobPayload } from "./job-queue.ts";

const TRACE = "0af7651916cd43dd8448eb211c80319c";

/** Records what would be queued and answers with a job id (or fails like a NATS outage). */
function queue(fail = false) {
  const queued: { dependency: string; payload: JobPayload; options: EnqueueOptions }[] = [];
  const enqueue = async (dependency: string, payload: JobPayload, options: EnqueueOptions) => {
    if (fail) throw new Error("nats is away");
    queued.push({ dependency, payload, options });
    return `job-${queued.length}`;
  };
  return { queued, enqueue };
}

const result = <T>(r: Partial<CallResult<T>> & { value: T }): CallResult<T> => ({
  degraded: false,
  attempts: 1,
  traceId: TRACE,
  ...r,
});

describe("deferrableCall", () => {
  it("queues the payload when the breaker refuses and throws CallDeferredError naming the job", async () => {
    const q = queue();
    const refused = new CircuitOpenError("dep", 0);
    const err = await deferrableCall(
      "dep",
      () => Promise.reject(refused),
      { payload: { to: "a" }, idempotencyKey: "k" },
      TRACE,
      q.enqueue,
      undefined,
    ).catch((e: unknown) => e);
    expect(isCallDeferredError(err)).toBe(true);
    expect((err as { jobId: string }).jobId).toBe("job-1");
    expect((err as Error).cause).toBe(refused);
    expect(q.queued).toEqual([
      { dependency: "dep", payload: { to: "a" }, options: { idempotencyKey: "k", traceId: TRACE } },
    ]);
  });

  it("lets the caller's own errors through without queueing", async () => {
    const q = queue();
    const own = Object.assign(new Error("bad request"), { status: 400 });
    await expect(
      deferrableCall(
        "dep",
        () => Promise.reject(own),
        { payload: "x" },
        TRACE,
        q.enqueue,
        undefined,
      ),
    ).rejects.toBe(own);
    expect(q.queued).toHaveLength(0);
  });

  it("returns the fallback's value with the job id when the call degraded", async () => {
    const q = queue();
    const error = new RetriesExhaustedError("dep", 3, new Error("503"));
    const r = await deferrableCall(
      "dep",
      async () => result({ value: "later", degraded: true, error }),
      { payload: "x" },
      TRACE,
      q.enqueue,
      undefined,
    );
    expect(r).toMatchObject({ value: "later", degraded: true, deferredJobId: "job-1" });
  });

  it("disposes of a failed value it replaces with CallDeferredError", async () => {
    const q = queue();
    const discarded: string[] = [];
    const error = new RetriesExhaustedError("dep", 3, new Error("503"));
    const err = await deferrableCall(
      "dep",
      async () => result({ value: "503 body", error }),
      { payload: "x" },
      TRACE,
      q.enqueue,
      (v) => discarded.push(v),
    ).catch((e: unknown) => e);
    expect(isCallDeferredError(err)).toBe(true);
    expect(discarded).toEqual(["503 body"]);
  });

  it("fails with the call's own error when the job cannot be queued either", async () => {
    const q = queue(true);
    const refused = new CircuitOpenError("dep", 0);
    await expect(
      deferrableCall(
        "dep",
        () => Promise.reject(refused),
        { payload: "x" },
        TRACE,
        q.enqueue,
        undefined,
      ),
    ).rejects.toBe(refused);
  });

  it("passes a successful call through untouched", async () => {
    const q = queue();
    const r = await deferrableCall(
      "dep",
      async () => result({ value: 42 }),
      { payload: "x" },
      TRACE,
      q.enqueue,
      undefined,
    );
    expect(r.value).toBe(42);
    expect(r.deferredJobId).toBeUndefined();
    expect(q.queued).toHaveLength(0);
  });
});
