import { InvalidArgumentError } from "./errors.ts";

/**
 * The one pattern for dependency and service names: 1 to 128 characters of letters, digits, '.',
 * '_' and '-', starting with a letter or digit, with no empty part between dots. Dots make NATS
 * subject tokens (`bulwark.breaker.openai.chat`, `bulwark.jobs.openai.chat`): an empty token
 * ("a.", "a..b") is not a valid subject, and the pattern keeps NATS wildcards and whitespace out.
 */
export const NAME_PATTERN = /^(?=.{1,128}$)[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*$/;

/** Human-readable form of NAME_PATTERN, used in error messages. */
export const NAME_RULE =
  "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit, with no empty part between dots";

/**
 * Names accepted before empty parts between dots were refused. Reads and deletes of a policy
 * still take them, so a policy stored under such a name can be looked at and removed.
 */
const STORED_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Longest part of a refused value echoed in an error message: enough to recognize it. */
const MAX_ECHO_CHARS = 64;

/** A value quoted for an error message, cut short so a huge input cannot make a huge error. */
export function quoted(value: string): string {
  return value.length <= MAX_ECHO_CHARS
    ? JSON.stringify(value)
    : `${JSON.stringify(value.slice(0, MAX_ECHO_CHARS))}… (${value.length} characters)`;
}

/** Throws InvalidArgumentError naming `field` unless `value` may name something stored. */
export function assertStoredName(field: string, value: string): void {
  if (!STORED_NAME_PATTERN.test(value)) {
    throw new InvalidArgumentError(field, `${NAME_RULE}; got ${quoted(value)}`);
  }
}

/** Throws InvalidArgumentError naming `field` unless `value` follows NAME_PATTERN. */
export function assertName(field: string, value: string): void {
  if (!NAME_PATTERN.test(value)) {
    throw new InvalidArgumentError(field, `${NAME_RULE}; got ${quoted(value)}`);
  }
}
