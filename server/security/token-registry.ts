import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { NAME_PATTERN, NAME_RULE } from "../domain/names.ts";
import { ROLES, type Role } from "./roles.ts";

const ENTRY_FIELDS = new Set(["name", "role", "sha256"]);

/** One configured token: who it names, the role it grants, and only the hash of its secret. */
export interface TokenEntry {
  name: string;
  role: Role;
  /** SHA-256 of the token, lowercase hex. */
  sha256: string;
}

export interface Identity {
  name: string;
  role: Role;
}

/** A tokens file problem; the message names the entry and field. */
export class TokenFileError extends Error {
  override readonly name = "TokenFileError";
}

/** SHA-256 of a token as lowercase hex: what a tokens file stores. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/**
 * Bearer tokens from the server's configuration, kept as SHA-256 hashes so the file and the
 * process never hold a usable secret. Lookups compare digests in constant time.
 */
export class TokenRegistry {
  private readonly entries: { digest: Buffer; identity: Identity }[];

  constructor(entries: readonly TokenEntry[]) {
    this.entries = entries.map((e) => ({
      digest: Buffer.from(e.sha256, "hex"),
      identity: { name: e.name, role: e.role },
    }));
  }

  /** The identity a presented token belongs to, or undefined. */
  identify(token: string): Identity | undefined {
    const digest = createHash("sha256").update(token, "utf8").digest();
    let found: Identity | undefined;
    // Every entry is compared, so the time taken does not tell which one matched.
    for (const e of this.entries) {
      if (timingSafeEqual(e.digest, digest)) found ??= e.identity;
    }
    return found;
  }

  /**
   * Reads a tokens file: `{"tokens": [{"name": "checkout", "role": "service", "sha256": "…"}]}`.
   * Make a hash with `printf %s "$TOKEN" | sha256sum`.
   */
  static fromFile(path: string): TokenRegistry {
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch (err) {
      throw new TokenFileError(`${path}: ${(err as NodeJS.ErrnoException).code ?? "unreadable"}`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // The parser's message quotes the file, which may be a token pasted by mistake.
      throw new TokenFileError(`${path}: not valid JSON (expected {"tokens": [...]})`);
    }
    const list = (parsed as { tokens?: unknown } | null)?.tokens;
    if (!Array.isArray(list) || list.length === 0) {
      throw new TokenFileError(`${path}: "tokens" must be a non-empty array`);
    }
    const names = new Set<string>();
    const hashes = new Set<string>();
    const entries = list.map((raw: unknown, i): TokenEntry => {
      const at = `${path}: tokens[${i}]`;
      const e = (raw ?? {}) as Record<string, unknown>;
      for (const key of Object.keys(e)) {
        if (!ENTRY_FIELDS.has(key)) {
          throw new TokenFileError(
            `${at} has an unknown field "${key.slice(0, 32)}"; only name, role and sha256 belong here`,
          );
        }
      }
      if (typeof e.name !== "string" || !NAME_PATTERN.test(e.name)) {
        throw new TokenFileError(`${at}.name ${NAME_RULE}`);
      }
      if (names.has(e.name)) throw new TokenFileError(`${at}.name "${e.name}" is used twice`);
      names.add(e.name);
      if (typeof e.role !== "string" || !ROLES.includes(e.role as Role)) {
        throw new TokenFileError(`${at}.role must be one of ${ROLES.join(", ")}`);
      }
      if (typeof e.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(e.sha256)) {
        throw new TokenFileError(`${at}.sha256 must be 64 lowercase hex digits (never the token)`);
      }
      if (hashes.has(e.sha256)) {
        throw new TokenFileError(`${at}.sha256 is the same token as an earlier entry`);
      }
      hashes.add(e.sha256);
      return { name: e.name, role: e.role as Role, sha256: e.sha256 };
    });
    return new TokenRegistry(entries);
  }
}
