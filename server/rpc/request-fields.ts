import { InvalidArgumentError } from "../domain/errors.ts";
import { assertName } from "../domain/names.ts";

/** An optional revision argument as a number; InvalidArgument when negative or too large. */
export function revisionArg(field: string, value: bigint | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgumentError(
      field,
      `must be in [0, ${Number.MAX_SAFE_INTEGER}]; got ${value}`,
    );
  }
  return Number(value);
}

/** A service name: empty is allowed where the caller's service is optional. */
export function serviceArg(field: string, value: string, required: boolean): string {
  if (value === "" && !required) return value;
  assertName(field, value);
  return value;
}

/** A free-text field with a length cap (trace ids, request ids, error types). */
export function textArg(field: string, value: string, maxLength: number): string {
  if (value.length > maxLength) {
    throw new InvalidArgumentError(
      field,
      `must be at most ${maxLength} characters; got ${value.length}`,
    );
  }
  return value;
}

/** An integer field in [min, max]. */
export function intArg(field: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}]; got ${value}`);
  }
  return value;
}
