import type { ServiceImpl } from "@connectrpc/connect";
import type { DeadLetterService } from "../../gen/bulwark/v1/dead_letter_pb.ts";
import type { DeadLetterRegistry } from "../domain/dead-letter-registry.ts";
import { deadLetterToWire } from "../wire/dead-letter-convert.ts";
import { callInfo } from "./call-context.ts";
import {
  validateGetDeadLetter,
  validateListDeadLetters,
  validateRecordDeadLetter,
  validateReplayDeadLetter,
  validateResolveDeadLetter,
} from "./request-validation.ts";

export function deadLetterService(
  letters: DeadLetterRegistry,
): ServiceImpl<typeof DeadLetterService> {
  return {
    recordDeadLetter(req, ctx) {
      const input = validateRecordDeadLetter(req);
      const { letter, created } = letters.record(input, callInfo(ctx).principal);
      return { letter: deadLetterToWire(letter, false), created };
    },

    listDeadLetters(req) {
      const query = validateListDeadLetters(req);
      const page = letters.list(query);
      const last = page.at(-1);
      return {
        letters: page.map((l) => deadLetterToWire(l, false)),
        nextCursor: BigInt(page.length === query.limit && last !== undefined ? last.cursor : 0),
      };
    },

    getDeadLetter(req) {
      return { letter: deadLetterToWire(letters.get(validateGetDeadLetter(req)), true) };
    },

    async replayDeadLetter(req, ctx) {
      const { letterId, force } = validateReplayDeadLetter(req);
      const { principal, traceId } = callInfo(ctx);
      const letter = await letters.replay(letterId, force, principal, traceId);
      return { letter: deadLetterToWire(letter, false), jobId: letter.replayJobId };
    },

    resolveDeadLetter(req, ctx) {
      const { letterId, reason } = validateResolveDeadLetter(req);
      const { principal, traceId } = callInfo(ctx);
      return {
        letter: deadLetterToWire(letters.resolve(letterId, reason, principal, traceId), false),
      };
    },
  };
}
