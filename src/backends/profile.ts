/**
 * Kernel profiling: while a profile is open, every kernel the dispatcher hands out (plain and
 * fused) is timed, and calls, seconds and — where the work has a standard count — floating-point
 * operations are summed per op. `knobs train --profile` (or KNOBS_PROFILE=1) prints the result.
 *
 * Timing wraps the backend object the dispatcher returns, so the ops layer needs no changes and a
 * closed profile costs one null check per dispatch. Kernels are synchronous, so wall time around
 * the call is the kernel's time (N-API crossing and output allocation included).
 */
import type { Backend, Conv2dParams, DecodeKernels, FusedKernels, KernelView, QuantizedMatrix } from './backend.js';

export interface OpTime {
  /** The kernel, with its operation where it has one: `matmul`, `binary:add`, `layerNormBackward`. */
  readonly op: string;
  calls: number;
  seconds: number;
  /** Floating-point operations done (0 when the op has no standard count: elementwise, copies, norms). */
  flops: number;
}

let open: Map<string, OpTime> | null = null;
const wrapped = new WeakMap<object, object>();

/** Starts collecting (a second start while open is an error: profiles do not nest). */
export function startProfile(): void {
  if (open) throw new Error('startProfile: a profile is already open (profiles do not nest)');
  open = new Map();
}

/** Pauses collecting and returns what was collected since start or the last resume. */
export function stopProfile(): OpTime[] {
  const got = open ? [...open.values()] : [];
  open = null;
  return got;
}

/** Whether a profile is open (the dispatcher then hands out timed backends). */
export function profiling(): boolean {
  return open !== null;
}

/** Adds the ops of `from` into `into` (per-step profiles summed over a run). */
export function mergeOpTimes(into: Map<string, OpTime>, from: readonly OpTime[]): void {
  for (const t of from) {
    const have = into.get(t.op);
    if (have) {
      have.calls += t.calls;
      have.seconds += t.seconds;
      have.flops += t.flops;
    } else into.set(t.op, { ...t });
  }
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Multiply-adds × 2 of the ops whose count is standard; 0 elsewhere. */
function flopsOf(kernel: string, args: readonly unknown[]): number {
  switch (kernel) {
    case 'matmul': {
      const [a, b] = args as [KernelView, KernelView];
      const r = b.shape.length;
      return 2 * numel(a.shape) * b.shape[r - 1]!; // 2·batch·M·K·N
    }
    case 'matmulPair': {
      const [a1, b1, a2, b2] = args as [KernelView, KernelView, KernelView, KernelView];
      return 2 * (numel(a1.shape) * b1.shape[1]! + numel(a2.shape) * b2.shape[1]!);
    }
    case 'loraBackward': {
      // u = g·sB, dB = gᵀ·t: 2·M·N·r each; dA = uᵀ·h: 2·M·K·r
      const [g, sB, , h] = args as [KernelView, KernelView, KernelView, KernelView];
      const [M, N] = g.shape as [number, number];
      return 2 * M * sB.shape[1]! * (2 * N + h.shape[1]!);
    }
    case 'conv2d': {
      // output elements × 2·(Cin/groups)·kH·kW
      const [x, w, p] = args as [KernelView, KernelView, Conv2dParams];
      const [N, , H, W] = x.shape as [number, number, number, number];
      const [Cout, , kH, kW] = w.shape as [number, number, number, number];
      const out = (n: number, k: number, i: 0 | 1) =>
        Math.max(0, Math.floor((n + 2 * p.padding[i] - p.dilation[i] * (k - 1) - 1) / p.stride[i]) + 1);
      return 2 * N * Cout * out(H, kH, 0) * out(W, kW, 1) * numel(w.shape.slice(1));
    }
    case 'causalAttention':
    case 'causalAttentionBackward': {
      const q = args[0] as KernelView;
      const r = q.shape.length;
      const T = q.shape[r - 2]!;
      // causal: half of q·kᵀ and of p·v (2·T²·D each, halved); the backward does twice the forward's products
      const forward = 2 * numel(q.shape) * T;
      return kernel === 'causalAttention' ? forward : 2 * forward;
    }
    case 'causalAttentionQKV':
    case 'causalAttentionQKVBackward': {
      const qkv = args[0] as KernelView; // [B, T, 3C]: the same count as causalAttention's on q [B, H, T, D]
      const forward = (2 * numel(qkv.shape) * qkv.shape[1]!) / 3;
      return kernel === 'causalAttentionQKV' ? forward : 2 * forward;
    }
    case 'gemv':
      return 2 * (args[2] as number) * (args[3] as number); // (x, W, N, K, y)
    case 'qgemv': {
      const w = args[1] as QuantizedMatrix;
      return 2 * w.rows * w.cols;
    }
    default:
      return 0;
  }
}

/** Kernels whose first argument names the operation (unary:exp, binary:mul, reduce:sum, …). */
const BY_OPERATION = new Set(['unary', 'binary', 'reduce', 'argReduce', 'activationBackward']);

function timedCall(kernel: string, fn: (...a: unknown[]) => unknown, self: object): (...a: unknown[]) => unknown {
  return (...args: unknown[]) => {
    const t0 = performance.now();
    const result = fn.apply(self, args);
    const seconds = (performance.now() - t0) / 1000;
    if (open) {
      const op = BY_OPERATION.has(kernel)
        ? `${kernel}:${String(args[0])}`
        : kernel === 'matmul' && args[2] === 'bf16'
          ? 'matmul:bf16'
          : kernel;
      let t = open.get(op);
      if (!t) open.set(op, (t = { op, calls: 0, seconds: 0, flops: 0 }));
      t.calls++;
      t.seconds += seconds;
      t.flops += flopsOf(kernel, BY_OPERATION.has(kernel) ? args.slice(1) : args);
    }
    return result;
  };
}

/** Methods the dispatcher never calls through the returned object (they are not kernels). */
const UNTIMED = new Set(['supports', 'describe']);

/** The same object with every kernel method timed (made once per object and kept). */
function timedObject<T extends object>(target: T, extra: Record<string, unknown> = {}): T {
  const have = wrapped.get(target);
  if (have) return have as T;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(target))
    out[key] =
      typeof value === 'function' && !UNTIMED.has(key)
        ? timedCall(key, value as (...a: unknown[]) => unknown, target)
        : value;
  Object.assign(out, extra);
  wrapped.set(target, out);
  return out as T;
}

/** `backend` with its kernels (plain and fused) timed. */
export function timedBackend(backend: Backend): Backend {
  return timedObject(backend, backend.fused ? { fused: timedFused(backend.fused) } : {});
}

export function timedFused(fused: FusedKernels): FusedKernels {
  return timedObject(fused);
}

export function timedDecode(decode: DecodeKernels): DecodeKernels {
  return timedObject(decode);
}
