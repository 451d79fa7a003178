import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { EventHub } from "../events/event-hub.ts";
import { type AlertChange, BurnRateAlerts, type BurnRateOptions } from "./burn-rate-alerts.ts";
import type { PolicyRegistry } from "./policy-registry.ts";

/** One counted outcome as the alert monitor needs it. */
export interface AlertSample {
  dependency: string;
  failure: boolean;
  traceId: string;
}

/** The principal of alert events: the server raises and clears them itself. */
const ALERT_PRINCIPAL = "bulwark-server";

/**
 * Feeds counted outcomes into the burn-rate evaluator and turns its changes into published,
 * audited and logged events. A timer re-evaluates while no outcome arrives, so an alert clears
 * when a dependency's traffic stops.
 */
export class AlertMonitor {
  private readonly alerts: BurnRateAlerts;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly policies: PolicyRegistry,
    private readonly hub: EventHub,
    private readonly clock: () => number,
    private readonly logger: Logger,
    private readonly onChange: (change: AlertChange) => void,
    options: Partial<BurnRateOptions> = {},
  ) {
    this.alerts = new BurnRateAlerts(options);
    this.timer = setInterval(
      () => this.publish(this.alerts.evaluate(this.clock()), ""),
      this.alerts.options.bucketMs,
    );
    this.timer.unref();
  }

  observe(samples: readonly AlertSample[]): void {
    const nowMs = this.clock();
    for (const s of samples) {
      const policy = this.policies.get(s.dependency);
      if (policy === undefined) continue;
      const changes = this.alerts.record(
        s.dependency,
        policy.availabilityTargetPercent,
        s.failure,
        nowMs,
      );
      if (changes.length > 0) this.publish(changes, s.traceId);
    }
  }

  /** Dependencies whose alert is raised. */
  active(): string[] {
    return this.alerts.active();
  }

  close(): void {
    clearInterval(this.timer);
  }

  private publish(changes: readonly AlertChange[], traceId: string): void {
    for (const change of changes) {
      const fields = {
        dependency: change.dependency,
        reason: change.reason,
        shortBurnRate: change.short.burnRate,
        longBurnRate: change.long.burnRate,
        threshold: change.threshold,
      };
      if (change.kind === "raised") this.logger.warn(fields, "alert raised");
      else this.logger.info(fields, "alert cleared");
      this.onChange(change);
      this.hub.publish({
        kind: "alert",
        alert: change,
        eventId: randomUUID(),
        correlationId: traceId,
        causationId: "",
        atMs: change.atMs,
        principal: ALERT_PRINCIPAL,
      });
    }
  }
}
