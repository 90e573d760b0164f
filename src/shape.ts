/** Pure shape helpers: sizes, strides, broadcasting, axis normalisation. */
import { ArgumentError, ShapeError } from './errors.js';

export type Shape = readonly number[];

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** Checks that every dimension is a non-negative integer. */
export function checkShape(shape: Shape, what: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(
        `${what}: shape ${formatShape(shape)} has an invalid dimension ${d}; dimensions are non-negative integers`,
        { op: what, shapes: [shape] },
      );
    }
  }
}

/** NumPy/PyTorch broadcasting: align trailing dims; each pair must be equal or contain a 1. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i]!;
      if (d === out[o]) continue;
      if (out[o] === 1) out[o] = d;
      else if (d !== 1) {
        throw new ShapeError(
          `${op}: shapes ${shapes.map(formatShape).join(' and ')} do not broadcast (dimension ${o - rank} is ${out[o]} vs ${d}); ` +
            'make the sizes equal or 1, e.g. with reshape or unsqueeze',
          { op, shapes },
        );
      }
    }
  }
  return out;
}

/** Normalises a possibly negative axis into [0, rank). */
export function normalizeAxis(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -Math.max(rank, 1) || axis >= Math.max(rank, 1)) {
    throw new ArgumentError(
      `${op}: axis ${axis} is out of range for a tensor of rank ${rank} (valid: ${-rank}..${rank - 1})`,
      { op, axis, rank },
    );
  }
  return axis < 0 ? axis + rank : axis;
}

/** Normalises an axis list (undefined = all axes) into sorted unique non-negative axes. */
export function normalizeAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof axes === 'number' ? [axes] : axes;
  const out = [...new Set(list.map((a) => normalizeAxis(op, a, rank)))].sort((a, b) => a - b);
  if (out.length !== list.length)
    throw new ArgumentError(`${op}: repeated axis in ${JSON.stringify(list)}`, { op, axes: list });
  return out;
}

export function isContiguousLayout(shape: Shape, strides: Shape): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] === 1) continue;
    if (strides[i] !== expected) return false;
    expected *= shape[i]!;
  }
  return true;
}

/** Output size of one spatial axis of a convolution or pooling window (PyTorch's floor formula). */
export function convOutSize(size: number, kernel: number, stride: number, padding: number, dilation = 1): number {
  return Math.floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1;
}
