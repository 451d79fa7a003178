import type { OutcomeFields } from "./reporter.ts";

/**
 * A bulwark.v1.ReportRequest encoded by hand: the wire bytes the generated code would produce
 * (fields in number order, proto3 defaults left out), written straight into one buffer. Every
 * guarded call ends in an outcome, and the generic, reflective encoder costs about a microsecond
 * per outcome, as much as the rest of a call on the fast path; this costs a tenth of that.
 * outcome-encoding.test.ts checks it byte for byte against the generated code. Field numbers
 * are those of proto/bulwark/v1/breaker_types.proto (Outcome) and breaker.proto (ReportRequest);
 * a change there must be made here too, and the test fails until it is.
 */

const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const tag = (field: number, wire: number) => (field << 3) | wire;

/** ReportRequest.outcomes */
const TAG_OUTCOMES = tag(1, WIRE_LEN);
const TAG_DEPENDENCY = tag(1, WIRE_LEN);
const TAG_SERVICE = tag(2, WIRE_LEN);
const TAG_ATTEMPT = tag(3, WIRE_VARINT);
const TAG_PERMIT_ID = tag(4, WIRE_LEN);
const TAG_RESULT = tag(5, WIRE_VARINT);
const TAG_ERROR_TYPE = tag(6, WIRE_LEN);
const TAG_STATUS_CODE = tag(7, WIRE_VARINT);
const TAG_LATENCY_MS = tag(8, WIRE_VARINT);
const TAG_RETRY_AFTER_MS = tag(9, WIRE_VARINT);
const TAG_TRACE_ID = tag(10, WIRE_LEN);
const TAG_REQUEST_ID = tag(11, WIRE_LEN);
const TAG_CAUSATION_ID = tag(12, WIRE_LEN);

/** An int32 on the wire: negative values take ten bytes (sign-extended to 64 bits). */
function int32Size(value: number): number {
  if (value < 0) return 10;
  if (value < 0x80) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x200000) return 3;
  if (value < 0x10000000) return 4;
  return 5;
}

/**
 * The UTF-8 length of a string. Names, ids and error types are ASCII, whose length is the
 * string's own: counting it in JavaScript is several times cheaper than asking Buffer.
 */
function utf8Length(value: string): number {
  for (let i = 0; i < value.length; i++) {
    if (value.charCodeAt(i) > 0x7f) return Buffer.byteLength(value, "utf8");
  }
  return value.length;
}

function stringField(value: string): number {
  if (value === "") return 0;
  const bytes = utf8Length(value);
  return 1 + int32Size(bytes) + bytes;
}

function int32Field(value: number): number {
  return value === 0 ? 0 : 1 + int32Size(value);
}

function outcomeSize(o: OutcomeFields): number {
  return (
    stringField(o.dependency) +
    stringField(o.service) +
    int32Field(o.attempt) +
    stringField(o.permitId) +
    int32Field(o.result) +
    stringField(o.errorType) +
    int32Field(o.statusCode) +
    int32Field(o.latencyMs) +
    int32Field(o.retryAfterMs) +
    stringField(o.traceId) +
    stringField(o.requestId) +
    stringField(o.causationId)
  );
}

class Writer {
  at = 0;
  constructor(readonly buf: Buffer) {}

  varint(value: number): void {
    if (value < 0) {
      // Sign-extended to 64 bits, as protobuf encodes a negative int32 (rare: ten bytes).
      let wide = BigInt.asUintN(64, BigInt(value));
      while (wide >= 0x80n) {
        this.buf[this.at++] = Number(wide & 0x7fn) | 0x80;
        wide >>= 7n;
      }
      this.buf[this.at++] = Number(wide);
      return;
    }
    while (value >= 0x80) {
      this.buf[this.at++] = (value & 0x7f) | 0x80;
      value >>>= 7;
    }
    this.buf[this.at++] = value;
  }

  string(fieldTag: number, value: string): void {
    if (value === "") return;
    this.buf[this.at++] = fieldTag;
    const bytes = utf8Length(value);
    this.varint(bytes);
    if (bytes === value.length) {
      // ASCII: one byte per character.
      const buf = this.buf;
      let at = this.at;
      for (let i = 0; i < value.length; i++) buf[at++] = value.charCodeAt(i);
      this.at = at;
    } else {
      this.at += this.buf.write(value, this.at, "utf8");
    }
  }

  int32(fieldTag: number, value: number): void {
    if (value === 0) return;
    this.buf[this.at++] = fieldTag;
    this.varint(value);
  }
}

/** The encoded ReportRequest holding `outcomes`, in order. */
export function encodeReportRequest(outcomes: readonly OutcomeFields[]): Buffer {
  const sizes = new Array<number>(outcomes.length);
  let total = 0;
  for (let i = 0; i < outcomes.length; i++) {
    const size = outcomeSize(outcomes[i]!);
    sizes[i] = size;
    total += 1 + int32Size(size) + size;
  }
  const w = new Writer(Buffer.allocUnsafe(total));
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i]!;
    w.buf[w.at++] = TAG_OUTCOMES;
    w.varint(sizes[i]!);
    w.string(TAG_DEPENDENCY, o.dependency);
    w.string(TAG_SERVICE, o.service);
    w.int32(TAG_ATTEMPT, o.attempt);
    w.string(TAG_PERMIT_ID, o.permitId);
    w.int32(TAG_RESULT, o.result);
    w.string(TAG_ERROR_TYPE, o.errorType);
    w.int32(TAG_STATUS_CODE, o.statusCode);
    w.int32(TAG_LATENCY_MS, o.latencyMs);
    w.int32(TAG_RETRY_AFTER_MS, o.retryAfterMs);
    w.string(TAG_TRACE_ID, o.traceId);
    w.string(TAG_REQUEST_ID, o.requestId);
    w.string(TAG_CAUSATION_ID, o.causationId);
  }
  return w.buf;
}
