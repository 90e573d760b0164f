/**
 * Convolution and pooling for the js backend, as direct loops over NCHW tensors — slow and
 * plain on purpose: this is the reference the native im2col + GEMM path is checked against.
 */
import { type NumericStorage, type Storage, allocate } from '../../dtype.js';
import type { Conv2dParams, KernelView, Pool2dParams } from '../backend.js';
import { convOutSize } from '../../shape.js';
import { dense } from './strided.js';

interface ConvGeometry {
  N: number;
  Cin: number;
  H: number;
  W: number;
  Cout: number;
  cinPerGroup: number;
  coutPerGroup: number;
  kH: number;
  kW: number;
  Ho: number;
  Wo: number;
}

function geometry(xShape: readonly number[], wShape: readonly number[], p: Conv2dParams): ConvGeometry {
  const [N, Cin, H, W] = xShape as [number, number, number, number];
  const [Cout, cinPerGroup, kH, kW] = wShape as [number, number, number, number];
  return {
    N,
    Cin,
    H,
    W,
    Cout,
    cinPerGroup,
    kH,
    kW,
    coutPerGroup: Cout / p.groups,
    Ho: convOutSize(H, kH, p.stride[0], p.padding[0], p.dilation[0]),
    Wo: convOutSize(W, kW, p.stride[1], p.padding[1], p.dilation[1]),
  };
}

/**
 * Visits every (output position, kernel tap) pair whose input pixel lies inside the image:
 * visit(xIndex, wIndex, outIndex). Forward and both backward passes are this one loop.
 */
function forEachTap(g: ConvGeometry, p: Conv2dParams, visit: (xi: number, wi: number, oi: number) => void): void {
  const { N, Cin, H, W, Cout, cinPerGroup, coutPerGroup, kH, kW, Ho, Wo } = g;
  for (let n = 0; n < N; n++) {
    for (let co = 0; co < Cout; co++) {
      const group = Math.floor(co / coutPerGroup);
      for (let oh = 0; oh < Ho; oh++) {
        for (let ow = 0; ow < Wo; ow++) {
          const oi = ((n * Cout + co) * Ho + oh) * Wo + ow;
          for (let ci = 0; ci < cinPerGroup; ci++) {
            const cx = group * cinPerGroup + ci;
            for (let kh = 0; kh < kH; kh++) {
              const ih = oh * p.stride[0] - p.padding[0] + kh * p.dilation[0];
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < kW; kw++) {
                const iw = ow * p.stride[1] - p.padding[1] + kw * p.dilation[1];
                if (iw < 0 || iw >= W) continue;
                visit(((n * Cin + cx) * H + ih) * W + iw, ((co * cinPerGroup + ci) * kH + kh) * kW + kw, oi);
              }
            }
          }
        }
      }
    }
  }
}

export function conv2d(x: KernelView, w: KernelView, p: Conv2dParams): Storage {
  const g = geometry(x.shape, w.shape, p);
  const xs = dense(x) as NumericStorage;
  const ws = dense(w) as NumericStorage;
  const acc = new Float64Array(g.N * g.Cout * g.Ho * g.Wo);
  forEachTap(g, p, (xi, wi, oi) => {
    acc[oi] += xs[xi]! * ws[wi]!;
  });
  const out = allocate(x.dtype, acc.length) as NumericStorage;
  out.set(acc);
  return out;
}

export function conv2dBackwardInput(
  gOut: KernelView,
  w: KernelView,
  xShape: readonly number[],
  p: Conv2dParams,
): Storage {
  const g = geometry(xShape, w.shape, p);
  const gs = dense(gOut) as NumericStorage;
  const ws = dense(w) as NumericStorage;
  const acc = new Float64Array(g.N * g.Cin * g.H * g.W);
  forEachTap(g, p, (xi, wi, oi) => {
    acc[xi] += gs[oi]! * ws[wi]!;
  });
  const out = allocate(w.dtype, acc.length) as NumericStorage;
  out.set(acc);
  return out;
}

export function conv2dBackwardWeight(
  gOut: KernelView,
  x: KernelView,
  wShape: readonly number[],
  p: Conv2dParams,
): Storage {
  const g = geometry(x.shape, wShape, p);
  const gs = dense(gOut) as NumericStorage;
  const xs = dense(x) as NumericStorage;
  const acc = new Float64Array(g.Cout * g.cinPerGroup * g.kH * g.kW);
  forEachTap(g, p, (xi, wi, oi) => {
    acc[wi] += gs[oi]! * xs[xi]!;
  });
  const out = allocate(x.dtype, acc.length) as NumericStorage;
  out.set(acc);
  return out;
}

/** Visits every pooling window: visit(plane, outIndex, taps) with taps = in-image (h·W + w) offsets. */
function forEachWindow(
  shape: readonly number[],
  p: Pool2dParams,
  visit: (planeBase: number, oi: number, taps: number[]) => void,
): void {
  const [N, C, H, W] = shape as [number, number, number, number];
  const Ho = convOutSize(H, p.kernel[0], p.stride[0], p.padding[0]);
  const Wo = convOutSize(W, p.kernel[1], p.stride[1], p.padding[1]);
  const taps: number[] = [];
  for (let plane = 0; plane < N * C; plane++) {
    for (let oh = 0; oh < Ho; oh++) {
      for (let ow = 0; ow < Wo; ow++) {
        taps.length = 0;
        for (let kh = 0; kh < p.kernel[0]; kh++) {
          const ih = oh * p.stride[0] - p.padding[0] + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < p.kernel[1]; kw++) {
            const iw = ow * p.stride[1] - p.padding[1] + kw;
            if (iw >= 0 && iw < W) taps.push(ih * W + iw);
          }
        }
        visit(plane * H * W, (plane * Ho + oh) * Wo + ow, taps);
      }
    }
  }
}

function pooledSize(shape: readonly number[], p: Pool2dParams): number {
  const [N, C, H, W] = shape as [number, number, number, number];
  return (
    N *
    C *
    convOutSize(H, p.kernel[0], p.stride[0], p.padding[0]) *
    convOutSize(W, p.kernel[1], p.stride[1], p.padding[1])
  );
}

export function maxPool2d(x: KernelView, p: Pool2dParams): { out: Storage; indices: Storage } {
  const xs = dense(x) as NumericStorage;
  const n = pooledSize(x.shape, p);
  const out = allocate(x.dtype, n) as NumericStorage;
  const indices = new Int32Array(n);
  forEachWindow(x.shape, p, (base, oi, taps) => {
    let best = -Infinity;
    let bestTap = taps[0] ?? 0;
    for (const t of taps) {
      const v = xs[base + t]!;
      if (v > best || v !== v) {
        best = v;
        bestTap = t;
        if (v !== v) break; // NaN propagates, as in PyTorch
      }
    }
    out[oi] = best;
    indices[oi] = bestTap;
  });
  return { out, indices };
}

export function maxPool2dBackward(g: KernelView, indices: KernelView, xShape: readonly number[]): Storage {
  const [N, C, H, W] = xShape as [number, number, number, number];
  const gs = dense(g) as NumericStorage;
  const idx = dense(indices) as Int32Array;
  const out = allocate(g.dtype, N * C * H * W) as NumericStorage;
  const perPlane = gs.length / (N * C || 1);
  for (let i = 0; i < gs.length; i++) {
    const plane = Math.floor(i / perPlane);
    out[plane * H * W + idx[i]!] += gs[i]!;
  }
  return out;
}

export function avgPool2d(x: KernelView, p: Pool2dParams): Storage {
  const xs = dense(x) as NumericStorage;
  const out = allocate(x.dtype, pooledSize(x.shape, p)) as NumericStorage;
  const divisor = p.kernel[0] * p.kernel[1];
  forEachWindow(x.shape, p, (base, oi, taps) => {
    let s = 0;
    for (const t of taps) s += xs[base + t]!;
    out[oi] = s / divisor;
  });
  return out;
}

export function avgPool2dBackward(g: KernelView, xShape: readonly number[], p: Pool2dParams): Storage {
  const gs = dense(g) as NumericStorage;
  const [N, C, H, W] = xShape as [number, number, number, number];
  const out = allocate(g.dtype, N * C * H * W) as NumericStorage;
  const divisor = p.kernel[0] * p.kernel[1];
  forEachWindow(xShape, p, (base, oi, taps) => {
    const share = gs[oi]! / divisor;
    for (const t of taps) out[base + t] += share;
  });
  return out;
}
