/** One benchmark result, as docs/design.md ("Benchmarks") defines it. */
export interface BenchRow {
  bench: string;
  /** 1 = both sides pinned to one core; 'all' = every core. */
  cores: 1 | 'all';
  unit: string;
  knobs: number;
  /** The peer's name and version, e.g. "torch 1.13.0"; null when there is no peer. */
  peer: string | null;
  peer_value: number | null;
  higher_is_better: boolean;
  /** knobs' advantage: > 1 means knobs is better, whichever way the unit runs; null without a peer. */
  ratio: number | null;
  /** The ratio this bench aims for (null when none is set). */
  target: number | null;
}

export interface BenchOptions {
  cores: 1 | 'all';
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function makeRow(
  bench: string,
  cores: 1 | 'all',
  unit: string,
  knobs: number,
  peer: string | null,
  peerValue: number | null,
  higherIsBetter: boolean,
  target: number | null = null,
): BenchRow {
  const ratio =
    peerValue === null || peerValue === 0 || knobs === 0
      ? null
      : higherIsBetter
        ? knobs / peerValue
        : peerValue / knobs;
  return { bench, cores, unit, knobs, peer, peer_value: peerValue, higher_is_better: higherIsBetter, ratio, target };
}
