/** Small helpers for benchmark figures. */

/** Nearest-rank percentile of unsorted samples. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[
    Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  ]!;
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString("en-US", {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

/** One line of the report: a figure, and optionally its ratio against a named baseline. */
export function line(label: string, value: string, baseline?: { name: string; ratio: number }) {
  const ratio = baseline === undefined ? "" : `  (${fmt(baseline.ratio, 2)}× ${baseline.name})`;
  process.stdout.write(`  ${label.padEnd(44)} ${value.padStart(16)}${ratio}\n`);
}
