/**
 * What a worker needs to know of a dependency's breaker: whether it is open (stop pulling jobs),
 * until when, and when that changes. Implemented over the fleet state the SDK follows
 * (fleet-breaker-gate.ts); tests can stand in another.
 */
export interface BreakerGate {
  /** True while the breaker that governs this service's calls to `dependency` rejects them. */
  isOpen(dependency: string): boolean;
  /**
   * While open: when the breaker lets probes through again (Unix ms); Infinity while an operator
   * holds it open; 0 when it is not open.
   */
  openUntilMs(dependency: string): number;
  /** Calls `listener` after any breaker state changes; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
  close(): void;
}
