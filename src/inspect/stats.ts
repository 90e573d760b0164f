/**
 * Statistics of one tensor, streamed block by block and accumulated in f64: mean and population
 * standard deviation (numpy's default, ddof = 0) over the finite values, merged block by block with
 * Chan et al.'s pairwise update (no cancellation from a sum of squares), min, max, the fraction of
 * elements that are exactly zero, the count of NaN/±Inf (left out of everything else), and a
 * histogram of the finite values over [min, max].
 */
import type { TensorValues } from './reader.js';

/** Null fields: the tensor has no finite value (empty, or all NaN/Inf). */
export interface TensorStats {
  mean: number | null;
  std: number | null;
  min: number | null;
  max: number | null;
  /** Elements equal to zero over all elements (null for an empty tensor). */
  zero_fraction: number | null;
  /** NaN, +Inf and −Inf elements. */
  nonfinite: number;
}

/** Bins of the histogram, equal widths over [min, max], the last one closed (as numpy's np.histogram). */
export const HISTOGRAM_BINS = 16;

export interface StatsResult {
  stats: TensorStats;
  /** HISTOGRAM_BINS counts of the finite values; all zeros when there are none. */
  histogram: number[];
}

/**
 * Two passes over the tensor's blocks (two reads of it from the file): the moments and range,
 * then the histogram over that range. Nothing here depends on the order of the values.
 */
export async function tensorStats(values: TensorValues): Promise<StatsResult> {
  let count = 0;
  let mean = 0;
  let m2 = 0;
  let min = Infinity;
  let max = -Infinity;
  let zeros = 0;
  let nonfinite = 0;
  for await (const block of values.blocks()) {
    let n = 0;
    let sum = 0;
    for (let i = 0; i < block.length; i++) {
      const x = block[i]!;
      if (x - x !== 0) {
        nonfinite++; // NaN or ±Inf: x − x is NaN for both
        continue;
      }
      n++;
      sum += x;
      if (x < min) min = x;
      if (x > max) max = x;
      if (x === 0) zeros++;
    }
    if (n === 0) continue;
    const blockMean = sum / n;
    let blockM2 = 0;
    for (let i = 0; i < block.length; i++) {
      const d = block[i]! - blockMean;
      if (d - d === 0) blockM2 += d * d;
    }
    if (count === 0) {
      // The first block: no merge (its 0 × ∞ would be NaN for values near the f64 limit).
      mean = blockMean;
      m2 = blockM2;
      count = n;
      continue;
    }
    const total = count + n;
    const delta = blockMean - mean;
    mean += (delta * n) / total;
    m2 += blockM2 + (delta * delta * count * n) / total;
    count = total;
  }
  const histogram = new Array<number>(HISTOGRAM_BINS).fill(0);
  if (count > 0) await fillHistogram(values, min, max, histogram);
  const stats: TensorStats =
    count > 0
      ? { mean, std: Math.sqrt(m2 / count), min, max, zero_fraction: zeros / values.numel, nonfinite }
      : {
          mean: null,
          std: null,
          min: null,
          max: null,
          zero_fraction: values.numel > 0 ? zeros / values.numel : null,
          nonfinite,
        };
  return { stats, histogram };
}

/**
 * Counts as np.histogram(x, bins=16, range=(min, max)) does, edge cases included: the bin from
 * (x − min) / (max − min) · 16, then moved by one where x falls on the other side of the edge
 * np.linspace would give (k · step + min, the last edge exactly max).
 */
async function fillHistogram(values: TensorValues, min: number, max: number, counts: number[]): Promise<void> {
  const n = HISTOGRAM_BINS;
  if (!(max > min)) {
    // One value throughout: numpy widens the range to [v − 0.5, v + 0.5], so it lands mid-way.
    for await (const block of values.blocks())
      for (let i = 0; i < block.length; i++) if (block[i]! - block[i]! === 0) counts[n / 2]!++;
    return;
  }
  const span = max - min;
  const step = span / n;
  const edge = (k: number): number => (k === n ? max : k * step + min);
  for await (const block of values.blocks()) {
    for (let i = 0; i < block.length; i++) {
      const x = block[i]!;
      if (x - x !== 0) continue;
      let bin = Math.min(n - 1, Math.floor(((x - min) / span) * n));
      if (x < edge(bin)) bin--;
      else if (bin !== n - 1 && x >= edge(bin + 1)) bin++;
      counts[bin]!++;
    }
  }
}
