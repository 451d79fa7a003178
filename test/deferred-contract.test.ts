/**
 * The deferred path is written by two sides that may not import each other: the SDK (enqueue,
 * workers) and the control plane (Replay, queue metrics). Their subjects, headers and stream
 * names must agree.
 */
import { describe, expect, it } from "vitest";
import * as sdk from "../sdk/deferred/job-message.ts";
import * as server from "../server/events/job-requeue.ts";

describe("the deferred path's names", () => {
  it("are the same on both sides", () => {
    expect(server.JOB_SUBJECT_PREFIX).toBe(sdk.JOB_SUBJECT_PREFIX);
    expect(server.JOB_HEADERS).toEqual(sdk.JOB_HEADERS);
    for (const dependency of ["openai.chat", "a_b", "a.b", "a__b", "A-1.x_y"]) {
      expect(server.jobStreamName(dependency)).toBe(sdk.jobStreamName(dependency));
      expect(server.dlqStreamName(dependency)).toBe(sdk.dlqStreamName(dependency));
    }
  });

  it("give distinct dependencies distinct streams", () => {
    const names = ["a.b", "a_b", "a__b", "a_db", "a.db", "a_d.b", "ab"];
    const streams = new Set(names.map(sdk.jobStreamName));
    expect(streams.size).toBe(names.length);
    for (const s of streams) expect(s).toMatch(/^[A-Za-z0-9_-]+$/);
  });

  it("derive one job id from one idempotency key, and random ones without", () => {
    expect(sdk.newJobId("x", "k")).toBe(sdk.newJobId("x", "k"));
    expect(sdk.newJobId("x", "k")).not.toBe(sdk.newJobId("y", "k"));
    expect(sdk.newJobId("x", undefined)).not.toBe(sdk.newJobId("x", undefined));
    expect(sdk.newJobId("x", "k")).toMatch(/^[0-9a-f]{32}$/);
    expect(sdk.letterIdOf("abc", 7)).toBe("dl-abc-7");
  });
});
