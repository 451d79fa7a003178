/**
 * What the failure-rate and slow-call-rate triggers read: a sliding window of counted outcomes,
 * either the last N outcomes (outcome-window.ts) or the outcomes of the last T milliseconds
 * (time-window.ts). The policy picks one; the engine sees only this interface.
 */
import { OutcomeWindow } from "./outcome-window.ts";
import type { BreakerSpec } from "./policy.ts";
import { TimeWindow } from "./time-window.ts";

/** The kind and size of a window, as a policy asks for it. */
export type WindowShape = { kind: "count"; size: number } | { kind: "time"; durationMs: number };

export interface SlidingWindow {
  readonly shape: WindowShape;
  /** Outcomes in the window (as of the last push or advance, for a time window). */
  readonly calls: number;
  readonly failures: number;
  /** Outcomes slower than the policy's slow-call limit, failures included. */
  readonly slowCalls: number;
  /** Failures in percent of calls; 0 for an empty window. */
  readonly failureRatePercent: number;
  /** Slow calls in percent of calls; 0 for an empty window. */
  readonly slowCallRatePercent: number;
  /** Adds one counted outcome observed at `nowMs` (a count window ignores the time). */
  push(failure: boolean, slow: boolean, nowMs: number): void;
  /** Lets outcomes older than the window fall out by `nowMs`; nothing for a count window. */
  advance(nowMs: number): void;
  clear(): void;
  /** The stored form, read back by {@link restoreWindow} with the same kind. */
  serialize(): string;
}

export function shapeOf(spec: BreakerSpec): WindowShape {
  return spec.windowKind === "time"
    ? { kind: "time", durationMs: spec.windowDurationMs }
    : { kind: "count", size: spec.windowSize };
}

export function createWindow(shape: WindowShape): SlidingWindow {
  return shape.kind === "time" ? new TimeWindow(shape.durationMs) : new OutcomeWindow(shape.size);
}

/** Rebuilds a window from its stored form; a stored form that cannot be read starts empty. */
export function restoreWindow(shape: WindowShape, stored: string): SlidingWindow {
  return shape.kind === "time"
    ? TimeWindow.deserialize(shape.durationMs, stored)
    : OutcomeWindow.deserialize(shape.size, stored);
}

function sameShape(a: WindowShape, b: WindowShape): boolean {
  return a.kind === "count"
    ? b.kind === "count" && a.size === b.size
    : b.kind === "time" && a.durationMs === b.durationMs;
}

/**
 * The window in another shape. The same kind keeps its newest outcomes; a change of kind starts
 * an empty window, since a count of outcomes says nothing about when they happened.
 */
export function reshapeWindow(window: SlidingWindow, shape: WindowShape): SlidingWindow {
  if (sameShape(window.shape, shape)) return window;
  if (window.shape.kind !== shape.kind) return createWindow(shape);
  return restoreWindow(shape, window.serialize());
}
