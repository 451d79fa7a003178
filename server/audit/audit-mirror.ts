import { toBinary } from "@bufbuild/protobuf";
import { type NatsConnection, StorageType } from "nats";
import type { Logger } from "pino";
import { AuditRecordSchema } from "../../gen/bulwark/v1/audit_pb.ts";
import type { NatsPublisher } from "../events/nats-publisher.ts";
import { auditRecordToWire } from "../wire/convert.ts";
import type { AuditRecordRow } from "./audit-store.ts";

/** The JetStream stream holding the mirror, and the subject prefix of its records. */
export const AUDIT_STREAM = "BULWARK_AUDIT";
export const AUDIT_SUBJECT_PREFIX = "bulwark.audit.";
/** Records waiting for NATS; beyond it the oldest are dropped and counted (SQLite keeps all). */
const MAX_PENDING = 100_000;

/**
 * Mirrors every audit record to a JetStream stream that denies delete and purge, so a copy of
 * the chain lives outside the server's disk. The SQLite chain stays the authority: the mirror is
 * filled in order, as far as NATS can be reached. Known shortcoming: records that were dropped
 * while NATS was away too long, or appended by another process sharing the audit file, are not
 * back-filled; a back-fill from the stream's last sequence would close that gap.
 */
export class AuditMirror {
  private readonly pending: AuditRecordRow[] = [];
  private running = false;
  private streamReadyOn: NatsConnection | undefined;
  dropped = 0;
  /** Records published since the server started. */
  private mirrored = 0;

  constructor(
    private readonly nats: NatsPublisher,
    private readonly logger: Logger,
  ) {}

  enqueue(records: AuditRecordRow[]): void {
    this.pending.push(...records);
    const excess = this.pending.length - MAX_PENDING;
    if (excess > 0) {
      this.pending.splice(0, excess);
      this.dropped += excess;
    }
    void this.drain();
  }

  private async ensureStream(nc: NatsConnection): Promise<void> {
    if (this.streamReadyOn === nc) return;
    const jsm = await nc.jetstreamManager();
    const config = {
      name: AUDIT_STREAM,
      subjects: [`${AUDIT_SUBJECT_PREFIX}>`],
      storage: StorageType.File,
      deny_delete: true,
      deny_purge: true,
    };
    let info: Awaited<ReturnType<typeof jsm.streams.info>> | undefined;
    try {
      info = await jsm.streams.info(AUDIT_STREAM);
    } catch {
      info = undefined;
    }
    if (info === undefined) {
      if (this.mirrored > 0) {
        this.logger.error(
          { stream: AUDIT_STREAM, mirrored: this.mirrored },
          "the audit mirror stream disappeared and is created again; earlier records are not in it",
        );
      }
      await jsm.streams.add(config);
    } else if (!info.config.deny_delete || !info.config.deny_purge) {
      this.logger.error(
        { stream: AUDIT_STREAM },
        "the audit mirror stream allows delete or purge; records are mirrored but not protected",
      );
    }
    this.streamReadyOn = nc;
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.pending.length > 0) {
        const nc = this.nats.current;
        if (nc === undefined) {
          // Not connected yet: try again shortly; the records wait in order.
          setTimeout(() => void this.drain(), 250).unref();
          return;
        }
        const record = this.pending[0]!;
        try {
          await this.ensureStream(nc);
          await nc
            .jetstream()
            .publish(
              `${AUDIT_SUBJECT_PREFIX}${record.eventType}`,
              toBinary(AuditRecordSchema, auditRecordToWire(record)),
              { msgID: record.eventId },
            );
          this.pending.shift();
          this.mirrored++;
        } catch (err) {
          this.logger.warn({ err, sequence: record.sequence }, "audit mirror publish failed");
          this.streamReadyOn = undefined;
          setTimeout(() => void this.drain(), 500).unref();
          return;
        }
      }
    } finally {
      this.running = false;
    }
  }
}
