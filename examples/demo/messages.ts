/** Messages between the demo's orchestrator and its service instances (over the fork IPC channel). */

/** Settings an instance gets with its start message. */
export interface InstanceConfig {
  /** Control plane URL. */
  controlPlaneUrl: string;
  /** The flaky upstream's OpenAI base URL. */
  upstreamBaseUrl: string;
  service: string;
  dependency: string;
  /** Requests started per second (open loop: a slow upstream does not slow the arrivals). */
  requestsPerSecond: number;
  /** The SDK's acquireTimeoutMs. */
  acquireTimeoutMs: number;
  /** How long to send requests, in milliseconds. */
  durationMs: number;
}

/** One chat completion request as the instance saw it. */
export interface RequestRecord {
  startedAtMs: number;
  latencyMs: number;
  outcome: "success" | "fallback" | "error";
  /** Retries the SDK made for this request. */
  retries: number;
  /** Whether the breaker refused one of its attempts. */
  rejected: boolean;
  error?: string;
}

/** One attempt that went out to the upstream. */
export interface AttemptRecord {
  startedAtMs: number;
  spanId: string;
  admission: "allow" | "probe" | "fleet" | "local";
  result: string;
}

/** Something the SDK did, with when it did it. */
export interface SdkEventRecord {
  atMs: number;
  type: "retry" | "rejected" | "fallback" | "control-plane";
}

export type InstanceMessage =
  | {
      type: "records";
      service: string;
      requests: RequestRecord[];
      attempts: AttemptRecord[];
      events: SdkEventRecord[];
    }
  | { type: "ready" }
  | { type: "done"; service: string };

/** The orchestrator's word to begin, sent once every instance is ready. */
export interface StartMessage {
  type: "start";
  config: InstanceConfig;
}
