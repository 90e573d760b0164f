/**
 * `diff(a, b)`: two models mapped to the canonical form (Hugging Face names and shapes, values as
 * numbers whatever the dtype), compared tensor by tensor, each side read one tensor at a time.
 *
 * Per tensor: rel_l2 = ‖a − b‖₂ / ‖a‖₂ (over ‖b‖₂ when a is all zeros; 0 when both are), max_abs =
 * max |a − b|, and moved_fraction, the share of elements with |a − b| > atol + 1e-6·|a|. Two NaN,
 * or the same infinity, at one position have not moved; any other non-finite pair has, and stays
 * out of the norms. Status: same (nothing moved), changed, added (only in b), removed (only in a),
 * reshaped (shapes differ; not compared), uncompared (a dtype knobs does not decode).
 */
import { ArgumentError } from '../errors.js';
import type { Block } from './blocks.js';
import { layerOf } from './canonical.js';
import { type WeightsFormat, type WeightsReader, type WeightsTensor, openWeights } from './reader.js';

export type DiffStatus = 'same' | 'changed' | 'added' | 'removed' | 'reshaped' | 'uncompared';

export interface DiffOptions {
  /** Absolute tolerance of "moved" (default 0). */
  atol?: number;
  /** Called after each tensor both sides hold is compared: bytes of a read so far, of the total. */
  onProgress?: (doneBytes: number, totalBytes: number, tensor: string) => void;
}

export interface TensorDiff {
  name: string;
  status: DiffStatus;
  /** Shape in a and in b (one is absent for added and removed). */
  shape_a?: number[];
  shape_b?: number[];
  dtype_a?: string;
  dtype_b?: string;
  /** Null unless compared (same or changed). */
  rel_l2: number | null;
  max_abs: number | null;
  moved_fraction: number | null;
}

export interface LayerDiff {
  /** The layer index (`h.{i}.`, `model.layers.{i}.`), or null for tensors outside the layers. */
  layer: number | null;
  /** Tensors of this layer compared, and how many of them changed. */
  tensors: number;
  changed: number;
  /** Tensors of this layer that could not be compared (added, removed, reshaped). */
  unmatched: number;
  /** Over all compared elements of the layer together. */
  rel_l2: number | null;
  max_abs: number | null;
  moved_fraction: number | null;
}

export interface DiffSide {
  path: string;
  format: WeightsFormat;
  architecture: string | null;
  tensorCount: number;
}

export interface ModelDiff {
  a: DiffSide;
  b: DiffSide;
  atol: number;
  /** What does not match between the two models, in words; empty when their tensors line up. */
  notes: string[];
  /** a's tensors in a's order, then those only in b. */
  tensors: TensorDiff[];
  /** Sorted by how much moved: rel_l2, then moved_fraction, descending. */
  layers: LayerDiff[];
}

/** Sums a comparison accumulates; a layer's are the sums of its tensors'. */
interface Sums {
  diffSq: number;
  aSq: number;
  bSq: number;
  maxAbs: number;
  moved: number;
  numel: number;
}

const emptySums = (): Sums => ({ diffSq: 0, aSq: 0, bSq: 0, maxAbs: 0, moved: 0, numel: 0 });

function addSums(into: Sums, s: Sums): void {
  into.diffSq += s.diffSq;
  into.aSq += s.aSq;
  into.bSq += s.bSq;
  into.maxAbs = Math.max(into.maxAbs, s.maxAbs);
  into.moved += s.moved;
  into.numel += s.numel;
}

function relL2(s: Sums): number {
  if (s.diffSq === 0) return 0;
  return Math.sqrt(s.diffSq) / Math.sqrt(s.aSq > 0 ? s.aSq : s.bSq);
}

/** A stream of blocks read a position at a time: the current block and where in it we are. */
class Cursor {
  private block: Block | null = null;
  private at = 0;
  constructor(private readonly source: AsyncGenerator<Block>) {}

  /** The current block from the current position on; null at the end of the stream. */
  async rest(): Promise<{ block: Block; at: number } | null> {
    while (this.block === null || this.at === this.block.length) {
      const next = await this.source.next();
      if (next.done) return null;
      this.block = next.value;
      this.at = 0;
    }
    return { block: this.block, at: this.at };
  }

  advance(n: number): void {
    this.at += n;
  }
}

/**
 * Compares two streams of the same number of values into `s`. Their blocks may break at
 * different places (a safetensors chunk against a GGUF chunk), so each step takes what both
 * current blocks still hold.
 */
async function compareBlocks(a: AsyncGenerator<Block>, b: AsyncGenerator<Block>, atol: number, s: Sums): Promise<void> {
  const ca = new Cursor(a);
  const cb = new Cursor(b);
  for (;;) {
    const x = await ca.rest();
    const y = await cb.rest();
    if (x === null || y === null) {
      if (x !== y) throw new ArgumentError('diff: the two tensors gave different numbers of values');
      return;
    }
    const n = Math.min(x.block.length - x.at, y.block.length - y.at);
    compareSpan(x.block, x.at, y.block, y.at, n, atol, s);
    ca.advance(n);
    cb.advance(n);
  }
}

function compareSpan(xa: Block, ia: number, yb: Block, ib: number, n: number, atol: number, s: Sums): void {
  s.numel += n;
  for (let k = 0; k < n; k++) {
    const p = xa[ia + k]!;
    const q = yb[ib + k]!;
    const d = p - q;
    if (d - d !== 0) {
      // A non-finite side: unmoved only when both are NaN or both the same infinity.
      if (!(p === q || (p !== p && q !== q))) s.moved++;
      continue;
    }
    const ad = Math.abs(d);
    s.diffSq += d * d;
    s.aSq += p * p;
    s.bSq += q * q;
    if (ad > s.maxAbs) s.maxAbs = ad;
    if (ad > atol + 1e-6 * Math.abs(p)) s.moved++;
  }
}

const sameShape = (x: readonly number[], y: readonly number[]): boolean =>
  x.length === y.length && x.every((d, i) => d === y[i]);

async function compareTensor(
  ra: WeightsReader,
  rb: WeightsReader,
  ta: WeightsTensor,
  tb: WeightsTensor,
  atol: number,
): Promise<{ row: TensorDiff; sums: Sums | null }> {
  const row: TensorDiff = {
    name: ta.name,
    status: 'same',
    shape_a: [...ta.shape],
    shape_b: [...tb.shape],
    dtype_a: ta.dtype,
    dtype_b: tb.dtype,
    rel_l2: null,
    max_abs: null,
    moved_fraction: null,
  };
  if (!sameShape(ta.shape, tb.shape)) return { row: { ...row, status: 'reshaped' }, sums: null };
  const va = await ra.values(ta.name);
  if (!va) return { row: { ...row, status: 'uncompared' }, sums: null };
  const vb = await rb.values(tb.name);
  if (!vb) return { row: { ...row, status: 'uncompared' }, sums: null };
  const sums = emptySums();
  await compareBlocks(va.blocks(), vb.blocks(), atol, sums);
  row.status = sums.moved === 0 ? 'same' : 'changed';
  row.rel_l2 = relL2(sums);
  row.max_abs = sums.maxAbs;
  row.moved_fraction = sums.numel > 0 ? sums.moved / sums.numel : 0;
  return { row, sums };
}

function side(r: WeightsReader): DiffSide {
  return { path: r.path, format: r.format, architecture: r.architecture, tensorCount: r.tensors.length };
}

export async function diff(pathA: string, pathB: string, options: DiffOptions = {}): Promise<ModelDiff> {
  const atol = options.atol ?? 0;
  if (!Number.isFinite(atol) || atol < 0)
    throw new ArgumentError(`diff: atol must be a finite number ≥ 0, got ${atol}`, { atol });
  const ra = await openWeights(pathA);
  try {
    const rb = await openWeights(pathB);
    try {
      return await compareModels(ra, rb, atol, options.onProgress);
    } finally {
      await rb.close();
    }
  } finally {
    await ra.close();
  }
}

interface LayerAcc {
  sums: Sums;
  tensors: number;
  changed: number;
  unmatched: number;
}

async function compareModels(
  ra: WeightsReader,
  rb: WeightsReader,
  atol: number,
  onProgress: DiffOptions['onProgress'],
): Promise<ModelDiff> {
  const inB = new Map(rb.tensors.map((t) => [t.name, t]));
  const inA = new Set(ra.tensors.map((t) => t.name));
  const layers = new Map<number | null, LayerAcc>();
  const layer = (name: string): LayerAcc => {
    const key = layerOf(name);
    let acc = layers.get(key);
    if (!acc) layers.set(key, (acc = { sums: emptySums(), tensors: 0, changed: 0, unmatched: 0 }));
    return acc;
  };
  const tensors: TensorDiff[] = [];
  const totalBytes = ra.tensors.reduce((s, t) => s + (inB.has(t.name) ? t.bytes : 0), 0);
  let doneBytes = 0;
  for (const ta of ra.tensors) {
    const tb = inB.get(ta.name);
    if (!tb) {
      tensors.push({
        name: ta.name,
        status: 'removed',
        shape_a: [...ta.shape],
        dtype_a: ta.dtype,
        rel_l2: null,
        max_abs: null,
        moved_fraction: null,
      });
      layer(ta.name).unmatched++;
      continue;
    }
    const { row, sums } = await compareTensor(ra, rb, ta, tb, atol);
    tensors.push(row);
    const acc = layer(ta.name);
    if (sums) {
      addSums(acc.sums, sums);
      acc.tensors++;
      if (row.status === 'changed') acc.changed++;
    } else {
      acc.unmatched++;
    }
    doneBytes += ta.bytes;
    onProgress?.(doneBytes, totalBytes, ta.name);
  }
  for (const tb of rb.tensors) {
    if (inA.has(tb.name)) continue;
    tensors.push({
      name: tb.name,
      status: 'added',
      shape_b: [...tb.shape],
      dtype_b: tb.dtype,
      rel_l2: null,
      max_abs: null,
      moved_fraction: null,
    });
    layer(tb.name).unmatched++;
  }
  return { a: side(ra), b: side(rb), atol, notes: notesOn(ra, rb, tensors), tensors, layers: layerRows(layers) };
}

function layerRows(layers: Map<number | null, LayerAcc>): LayerDiff[] {
  const rows: LayerDiff[] = [...layers].map(([layer, acc]) => ({
    layer,
    tensors: acc.tensors,
    changed: acc.changed,
    unmatched: acc.unmatched,
    rel_l2: acc.tensors > 0 ? relL2(acc.sums) : null,
    max_abs: acc.tensors > 0 ? acc.sums.maxAbs : null,
    moved_fraction: acc.tensors > 0 ? (acc.sums.numel > 0 ? acc.sums.moved / acc.sums.numel : 0) : null,
  }));
  const key = (v: number | null): number => v ?? -1;
  return rows.sort(
    (x, y) =>
      key(y.rel_l2) - key(x.rel_l2) || key(y.moved_fraction) - key(x.moved_fraction) || key(x.layer) - key(y.layer),
  );
}

/** What does not line up, said once each: architecture, tensors on one side only, shapes. */
function notesOn(ra: WeightsReader, rb: WeightsReader, tensors: TensorDiff[]): string[] {
  const notes: string[] = [];
  if (ra.architecture !== rb.architecture && ra.architecture !== null && rb.architecture !== null) {
    notes.push(`the architectures differ: a is ${ra.architecture}, b is ${rb.architecture}`);
  }
  const count = (status: DiffStatus): number => tensors.filter((t) => t.status === status).length;
  const removed = count('removed');
  const added = count('added');
  const reshaped = count('reshaped');
  const uncompared = count('uncompared');
  if (removed > 0) notes.push(`${removed} tensor${removed === 1 ? ' is' : 's are'} only in a (removed)`);
  if (added > 0) notes.push(`${added} tensor${added === 1 ? ' is' : 's are'} only in b (added)`);
  if (reshaped > 0)
    notes.push(`${reshaped} tensor${reshaped === 1 ? ' has' : 's have'} different shapes (reshaped, not compared)`);
  if (uncompared > 0)
    notes.push(
      `${uncompared} tensor${uncompared === 1 ? ' has' : 's have'} a dtype knobs does not decode (not compared)`,
    );
  if (notes.length > 0)
    notes.push(`compared the ${count('same') + count('changed')} tensors both hold with the same shape`);
  return notes;
}
