/**
 * Statistics of one tensor, streamed block by block and accumulated in f64: mean and population
 * standard deviation (numpy's default, ddof = 0) over the finite values, merged block by block with
 * Chan et al.'s pairwise update (no cancellation from a sum of squares), min, max, the fraction of
 * elements that are exactly zero, the count of NaN/±Inf (left out of everything else), and a
 * histogram of the finite values over [min, max].
 */
import type { Block } from './blocks.js';
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

/** The running moments and range of the finite values seen so far. */
interface Moments {
  count: number;
  mean: number;
  m2: number;
  min: number;
  max: number;
  zeros: number;
  nonfinite: number;
}

/**
 * Two passes over the tensor's blocks (two reads of it from the file): the moments and range,
 * then the histogram over that range. Nothing here depends on the order of the values.
 */
export async function tensorStats(values: TensorValues): Promise<StatsResult> {
  const m: Moments = { count: 0, mean: 0, m2: 0, min: Infinity, max: -Infinity, zeros: 0, nonfinite: 0 };
  for await (const block of values.blocks()) addBlock(m, block);
  const { count, mean, m2, min, max, zeros, nonfinite } = m;
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

/** Merges one block into `m`: its own mean and squared deviations first, then Chan's update. */
function addBlock(m: Moments, block: Block): void {
  let n = 0;
  let sum = 0;
  let min = m.min;
  let max = m.max;
  let zeros = 0;
  for (let i = 0; i < block.length; i++) {
    const x = block[i]!;
    if (x - x !== 0) continue; // NaN or ±Inf: x − x is NaN for both
    n++;
    sum += x;
    if (x < min) min = x;
    if (x > max) max = x;
    if (x === 0) zeros++;
  }
  m.nonfinite += block.length - n;
  m.min = min;
  m.max = max;
  m.zeros += zeros;
  if (n === 0) return;
  const blockMean = sum / n;
  let blockM2 = 0;
  for (let i = 0; i < block.length; i++) {
    const d = block[i]! - blockMean;
    if (d - d === 0) blockM2 += d * d;
  }
  if (m.count === 0) {
    // The first block: no merge (its 0 × ∞ would be NaN for values near the f64 limit).
    m.mean = blockMean;
    m.m2 = blockM2;
    m.count = n;
    return;
  }
  const total = m.count + n;
  const delta = blockMean - m.mean;
  m.mean += (delta * n) / total;
  m.m2 += blockM2 + (delta * delta * m.count * n) / total;
  m.count = total;
}

/**
 * Counts as np.histogram(x, bins=16, range=(min, max)) does, edge cases included: the bin from
 * (x − min) / (max − min) · 16, then moved by one where x falls on the other side of the edge
 * np.linspace would give (k · step + min, the last edge exactly max).
 */
async function fillHistogram(values: TensorValues, min: number, max: number, counts: number[]): Promise<void> {
  const n = HISTOGRAM_BINS;
  const bins = new Float64Array(n);
  if (!(max > min)) {
    // One value throughout: numpy widens the range to [v − 0.5, v + 0.5], so it lands mid-way.
    for await (const block of values.blocks())
      for (let i = 0; i < block.length; i++) if (block[i]! - block[i]! === 0) bins[n / 2]!++;
  } else {
    const span = max - min;
    const step = span / n;
    const edges = Float64Array.from({ length: n + 1 }, (_, k) => (k === n ? max : k * step + min));
    for await (const block of values.blocks()) countBins(block, min, n / span, edges, bins);
  }
  for (let k = 0; k < n; k++) counts[k] = bins[k]!;
}

/**
 * The bin of each finite x of `block`: a first guess (x − min) · scale, off by at most one next to
 * an edge (numpy's own guess divides, then multiplies), then corrected against the edges as numpy
 * corrects its guess, so both land in the same bin.
 */
function countBins(block: Block, min: number, scale: number, edges: Float64Array, bins: Float64Array): void {
  const n = bins.length;
  for (let i = 0; i < block.length; i++) {
    const x = block[i]!;
    if (x - x !== 0) continue;
    // x ≥ min, so the guess is ≥ 0 and truncation is floor.
    let bin = Math.min(n - 1, ((x - min) * scale) | 0);
    if (x < edges[bin]!) bin--;
    else if (bin !== n - 1 && x >= edges[bin + 1]!) bin++;
    bins[bin]!++;
  }
}
