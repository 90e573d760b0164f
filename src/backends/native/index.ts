/**
 * The native backend: C/C++ kernels (native/) behind N-API, loaded from build/Release/knobs.node.
 *
 * It computes in f32 only; `supports()` says no for anything else (f64, odd ranks, dtypes a
 * kernel lacks) and the dispatcher runs the js reference backend instead. Views reach the addon
 * zero-copy as (storage, layout): the layouts of one call are packed into one reused Float64Array,
 * `[ndim, offset, ...shape, ...strides]` per view, which the addon checks against each storage
 * before any kernel runs (see native/binding.cpp).
 *
 * `loadNativeBackend()` returns null when the addon is missing or fails to load;
 * `nativeLoadError()` then says why. KNOBS_NATIVE_PATH overrides the addon path, KNOBS_THREADS
 * sets the pool size (default: every core).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allocateUnfilled, type DType, type Storage } from '../../dtype.js';
import type {
  ActivationOp,
  ArgReduceOp,
  Backend,
  BinaryOp,
  Conv2dParams,
  DecodeKernels,
  FusedKernels,
  KernelName,
  KernelView,
  MatmulPrecision,
  NormGradsWanted,
  Pool2dParams,
  QuantizedMatrix,
  ReduceOp,
  UnaryOp,
} from '../backend.js';

type F32 = Float32Array;
type Ids = Int32Array | BigInt64Array;
type Opt<T> = T | null;

/** The addon's exports (native/binding.cpp), one function per kernels.h entry. */
export interface NativeAddon {
  info(): {
    gemm: string;
    gemmLibraries: string;
    isa: string;
    /** The ISA oneDNN's JIT uses ("avx512_core_amx", …; "none" without oneDNN). */
    onednnIsa: string;
    /** Whether bf16 GEMMs run here (oneDNN with AVX512_BF16 or AMX). */
    bf16: boolean;
    threads: number;
    mallocTuned: boolean;
  };
  /** oneDNN's implementation of the bf16 matmul, e.g. "brg:avx512_core_amx_bf16" ("none" when unavailable). */
  bf16Impl(): string;
  setThreads(n: number): number;
  selectGemm(name: string): void;
  sgemm(transA: 0 | 1, transB: 0 | 1, M: number, N: number, K: number, A: F32, B: F32, C: F32): void;
  matmul(a: F32, b: F32, meta: Float64Array, out: F32): void;
  /** matmul with bf16 operands, f32 accumulation (throws E_BACKEND where info().bf16 is false). */
  matmulBf16(a: F32, b: F32, meta: Float64Array, out: F32): void;
  /** sgemm with bf16 operands, f32 accumulation (as matmulBf16). */
  sgemmBf16(transA: 0 | 1, transB: 0 | 1, M: number, N: number, K: number, A: F32, B: F32, C: F32): void;
  unary(op: number, x: F32, meta: Float64Array, out: F32): void;
  /** y [M, N] = x [M, K] · Wᵀ, W in ggml blocks of `type` (8 = q8_0, 2 = q4_0); see native/kernels/qmatmul.cpp. */
  qmatmul(type: number, x: F32, M: number, K: number, w: Uint8Array, N: number, y: F32): void;
  qmatmulBackward(type: number, dy: F32, M: number, N: number, w: Uint8Array, K: number, dx: F32): void;
  /** "avx512_vnni" or "scalar". */
  qmatmulIsa(): string;
  /** Batch-invariant decode kernels (native/kernels/bi_decode.cpp; src/serve/ uses them): y [M, N] = x [M, K] · Wᵀ. */
  biMatmul(x: F32, M: number, K: number, w: F32, N: number, y: F32): void;
  /** y [M, N] = x [M, K] · W with W stored [K, N] (GPT-2's Conv1D), batch-invariant (native/kernels/bi_matmul_kn.cpp). */
  biMatmulKn(x: F32, M: number, K: number, w: F32, N: number, y: F32): void;
  /** qmatmulPacked's bits, each packed weight vector loaded once for a tile of rows (the engine's q8_0/q4_0 product). */
  biQmatmulPacked(type: number, x: F32, M: number, K: number, packed: Uint8Array, N: number, y: F32): void;
  biRmsNorm(x: F32, M: number, C: number, w: F32, eps: number, y: F32): void;
  /** x += r (the residual; r may be null), then y = biRmsNorm(x). */
  biAddRmsNorm(x: F32, r: F32 | null, M: number, C: number, w: F32, eps: number, y: F32): void;
  /** q [R, H, D] and k [R, KVH, D] rotated at positions[r] (cos, sin [·, D/2]), then k and v stored in each row's cache slot. */
  biRopeKv(
    q: F32,
    k: F32,
    v: F32,
    R: number,
    H: number,
    KVH: number,
    D: number,
    cos: F32,
    sin: F32,
    positions: Int32Array,
    kpool: F32 | Uint16Array,
    vpool: F32 | Uint16Array,
    block: number,
    tables: Int32Array,
    tableStride: number,
  ): void;
  /** biRopeKv without the rotation (learned positions, GPT-2): k and v [R, KVH, D] stored in each row's cache slot. */
  biStoreKv(
    k: F32,
    v: F32,
    R: number,
    KVH: number,
    D: number,
    positions: Int32Array,
    kpool: F32 | Uint16Array,
    vpool: F32 | Uint16Array,
    block: number,
    tables: Int32Array,
    tableStride: number,
  ): void;
  /** out [R, H, D]: each row attends to its own lens[r] positions in paged pools [blocks, KVH, block, D] (f32, or f16 bits). */
  biPagedAttention(
    q: F32,
    R: number,
    H: number,
    D: number,
    kpool: F32 | Uint16Array,
    vpool: F32 | Uint16Array,
    KVH: number,
    block: number,
    tables: Int32Array,
    tableStride: number,
    lens: Int32Array,
    scale: number,
    out: F32,
  ): void;
  biSwiglu(gate: F32, up: F32, n: number, out: F32): void;
  /** Bytes of W's packed layout for the product ("x16", q8_0 / q4_0 with VNNI), 0 where there is none. */
  qrepackBytes(type: number, N: number, K: number): number;
  qrepack(type: number, w: Uint8Array, N: number, K: number, out: Uint8Array): void;
  /** qmatmul on the packed layout: the same integers per block, each row's value independent of M and threads. */
  qmatmulPacked(type: number, x: F32, M: number, K: number, packed: Uint8Array, N: number, y: F32): void;
  /** Batch-1 decode kernels (native/kernels/decode.cpp); see DecodeKernels. */
  gemv(x: F32, w: F32, N: number, K: number, y: F32): void;
  addRmsNorm(x: F32, r: F32 | null, w: F32, C: number, eps: number, y: F32): void;
  swiglu(g: F32, u: F32, n: number, out: F32): void;
  decodeAttention(
    q: F32,
    k: F32,
    v: F32,
    cos: F32,
    sin: F32,
    keys: F32,
    values: F32,
    H: number,
    KV: number,
    D: number,
    maxLen: number,
    pos: number,
    scale: number,
    y: F32,
  ): void;
  /** g · f'(x) for the activation ops (UNARY_CODE) only. */
  activationBackward(op: number, x: F32, g: F32, meta: Float64Array, out: F32): void;
  /** h += bias in place, y = act(h) (act −1: none, y unused). */
  biasActivation(h: F32, rows: number, N: number, bias: Opt<F32>, act: number, y: Opt<F32>): void;
  /** dh = g · act'(h) (act ≥ 0), db = Σrows dh (or g); dh, db null when not wanted. */
  biasActivationBackward(g: F32, h: Opt<F32>, rows: number, N: number, act: number, dh: Opt<F32>, db: Opt<F32>): void;
  /** c += bias + alpha · a · b, 2-D views, bias dense [N] or null (FusedKernels.matmulAccumulate). */
  matmulAccumulate(a: F32, b: F32, meta: Float64Array, c: F32, alpha: number, bias: Opt<F32>): void;
  /** out1 = a1·b1, out2 = a2·b2 (2-D views) in one job (FusedKernels.matmulPair). */
  matmulPair(a1: F32, b1: F32, a2: F32, b2: F32, meta: Float64Array, out1: F32, out2: F32): void;
  /** u = g·sB, dB = gᵀ·t, dA = uᵀ·h, dense, rank r ≤ 32 (FusedKernels.loraBackward). */
  loraBackward(
    g: F32,
    sB: F32,
    t: F32,
    h: F32,
    M: number,
    N: number,
    K: number,
    r: number,
    u: F32,
    dB: F32,
    dA: F32,
  ): void;
  binary(op: number, a: F32, b: F32, meta: Float64Array, out: F32 | Uint8Array): void;
  where(cond: Uint8Array, a: F32, b: F32, meta: Float64Array, out: F32): void;
  assign(dst: Storage, src: Storage, meta: Float64Array): void;
  cast(x: Storage, meta: Float64Array, out: Storage, outIsBool: boolean): void;
  reduce(op: number, x: F32, meta: Float64Array, axisMask: number, out: F32): void;
  argReduce(isMin: 0 | 1, x: F32, meta: Float64Array, axis: number, out: Int32Array): void;
  cumsum(x: F32, outer: number, n: number, inner: number, reverse: 0 | 1, out: F32): void;
  gatherRows(table: F32, meta: Float64Array, ids: Ids, out: F32): void;
  scatterAddRows(src: F32, meta: Float64Array, ids: Ids, rows: number, out: F32): void;
  conv2d(x: F32, w: F32, params: Float64Array, out: F32): void;
  conv2dBackwardInput(g: F32, w: F32, params: Float64Array, dx: F32): void;
  conv2dBackwardWeight(g: F32, x: F32, params: Float64Array, dw: F32): void;
  maxPool2d(x: F32, params: Float64Array, out: F32, indices: Int32Array): void;
  maxPool2dBackward(g: F32, indices: Int32Array, sizes: Float64Array, dx: F32): void;
  maxPool2dBiasRelu(x: F32, bias: F32, params: Float64Array, out: F32, indices: Int32Array): void;
  maxPool2dBiasReluBackward(g: F32, out: F32, indices: Int32Array, sizes: Float64Array, dx: F32, db: Opt<F32>): void;
  avgPool2d(x: F32, params: Float64Array, out: F32): void;
  avgPool2dBackward(g: F32, params: Float64Array, dx: F32): void;
  // Fused kernels over contiguous rows (Backend.fused wraps them).
  softmax(x: F32, rows: number, C: number, out: F32): void;
  logSoftmax(x: F32, rows: number, C: number, out: F32): void;
  softmaxBackward(y: F32, g: F32, rows: number, C: number, dx: F32): void;
  logSoftmaxBackward(y: F32, g: F32, rows: number, C: number, dx: F32): void;
  layerNorm(
    x: F32,
    w: Opt<F32>,
    b: Opt<F32>,
    rows: number,
    C: number,
    eps: number,
    y: F32,
    mean: Opt<F32>,
    rstd: Opt<F32>,
  ): void;
  layerNormBackward(
    x: F32,
    w: Opt<F32>,
    mean: F32,
    rstd: F32,
    g: F32,
    rows: number,
    C: number,
    dx: Opt<F32>,
    dw: Opt<F32>,
    db: Opt<F32>,
    acc?: Opt<F32>,
  ): void;
  /** layerNorm of sum = x + r, sum written too (a residual add and the next norm in one pass). */
  addLayerNorm(
    x: F32,
    r: F32,
    w: Opt<F32>,
    b: Opt<F32>,
    rows: number,
    C: number,
    eps: number,
    sum: F32,
    y: F32,
    mean: Opt<F32>,
    rstd: Opt<F32>,
  ): void;
  rmsNorm(x: F32, w: Opt<F32>, rows: number, C: number, eps: number, y: F32, rstd: Opt<F32>): void;
  rmsNormBackward(x: F32, w: Opt<F32>, rstd: F32, g: F32, rows: number, C: number, dx: Opt<F32>, dw: Opt<F32>): void;
  crossEntropy(
    logits: F32,
    targets: Int32Array,
    rows: number,
    C: number,
    ignoreIndex: number,
    dlogits: Opt<F32>,
  ): number;
  /** decoupled (default 1): AdamW's weight decay; 0: Adam's (L2 added to the gradient). */
  adamw(
    param: F32,
    grad: F32,
    m: F32,
    v: F32,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
    decoupled?: 0 | 1,
  ): void;
  /** adamw on each tensor; hyper holds lr, beta1, beta2, eps, weightDecay, step, decoupled per tensor. */
  adamMany(params: F32[], grads: F32[], ms: F32[], vs: F32[], hyper: Float64Array): void;
  /** Σ x² over the arrays, in double. */
  sumSquaresMany(arrays: readonly F32[]): number;
  /** x ← x·k in place over the arrays. */
  scaleMany(arrays: readonly F32[], k: number): void;
  causalAttention(
    q: F32,
    k: F32,
    v: F32,
    BH: number,
    T: number,
    D: number,
    scale: number,
    out: F32,
    lse: Opt<F32>,
  ): void;
  causalAttentionBackward(
    q: F32,
    k: F32,
    v: F32,
    out: F32,
    lse: F32,
    g: F32,
    BH: number,
    T: number,
    D: number,
    scale: number,
    dq: F32,
    dk: F32,
    dv: F32,
  ): void;
  causalAttentionQKV(
    qkv: F32,
    B: number,
    T: number,
    H: number,
    D: number,
    scale: number,
    out: F32,
    lse: Opt<F32>,
  ): void;
  causalAttentionQKVBackward(
    qkv: F32,
    out: F32,
    lse: F32,
    g: F32,
    B: number,
    T: number,
    H: number,
    D: number,
    scale: number,
    dqkv: F32,
  ): void;
}

// Kernel enums, in the order of native/kernels.h (test/native-op-codes.test.ts holds them in step).
export const UNARY_CODE: Readonly<Record<UnaryOp, number>> = {
  neg: 0,
  exp: 1,
  log: 2,
  sqrt: 3,
  rsqrt: 4,
  abs: 5,
  tanh: 6,
  sigmoid: 7,
  relu: 8,
  gelu: 9,
  gelu_tanh: 10,
  silu: 11,
  sign: 12,
};
export const BINARY_CODE: Readonly<Record<BinaryOp, number>> = {
  add: 0,
  sub: 1,
  mul: 2,
  div: 3,
  pow: 4,
  maximum: 5,
  minimum: 6,
  eq: 7,
  ne: 8,
  lt: 9,
  le: 10,
  gt: 11,
  ge: 12,
};
export const REDUCE_CODE: Readonly<Record<ReduceOp, number>> = { sum: 0, max: 1, min: 2 };
const MAX_DIMS = 16;
/** dtypes the addon's cast reads and writes. */
const CAST_DTYPES = new Set<DType>(['f32', 'f64', 'i32', 'i8', 'u8', 'bool']);

let loadError: string | undefined;
let cached: Backend | null | undefined;

/** Why the native backend is unavailable (undefined when it loaded or was never asked for). */
export function nativeLoadError(): string | undefined {
  return loadError;
}

function findAddon(): string | undefined {
  const override = process.env.KNOBS_NATIVE_PATH;
  if (override) return override;
  // src/backends/native → the package root is 3 levels up (4 from dist/src/backends/native).
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'build', 'Release', 'knobs.node');
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  return undefined;
}

/** ggml's type ids, which the addon takes for a block format. */
export const GGML_TYPE_ID: Readonly<Record<QuantizedMatrix['type'], number>> = { q8_0: 8, q4_0: 2 };

/** The raw addon (for fused kernels and benchmarks), or null; see nativeLoadError(). */
/*
 * Each q8_0 / q4_0 weight's packed layout (native/kernels/qmatmul.cpp, "x16"), made on its first
 * product and kept while the weight lives: 1.06× / 1.11× its blocks' bytes more memory, for a product
 * that no longer spends its time rearranging blocks (docs/performance.md, "Decode"). The ggml
 * blocks stay as they are (the input gradient, GGUF export and the js reference read them). One
 * cache per process, so the backend's ops, its decode step and the batch engine share one copy.
 */
const packedWeights = new WeakMap<QuantizedMatrix, Uint8Array | null>();

/** W's packed layout (made on first use, kept while W lives), or null where this CPU has none. */
export function packedOf(addon: NativeAddon, w: QuantizedMatrix): Uint8Array | null {
  let packed = packedWeights.get(w);
  if (packed === undefined) {
    const type = GGML_TYPE_ID[w.type];
    const bytes = addon.qrepackBytes(type, w.rows, w.cols);
    packed = bytes > 0 ? new Uint8Array(bytes) : null;
    if (packed) addon.qrepack(type, w.blocks, w.rows, w.cols, packed);
    packedWeights.set(w, packed);
  }
  return packed;
}

/** y [M, N] = x [M, K] · Wᵀ on W's packed layout when it has one, else on its blocks (the same bits). */
export function quantizedProduct(addon: NativeAddon, x: F32, M: number, w: QuantizedMatrix, y: F32): void {
  const packed = packedOf(addon, w);
  if (packed) addon.qmatmulPacked(GGML_TYPE_ID[w.type], x, M, w.cols, packed, w.rows, y);
  else addon.qmatmul(GGML_TYPE_ID[w.type], x, M, w.cols, w.blocks, w.rows, y);
}

export function loadNativeAddon(): NativeAddon | null {
  const path = findAddon();
  if (!path) {
    loadError = 'build/Release/knobs.node not found (run `node scripts/build-native.mjs`)';
    return null;
  }
  try {
    const addon = createRequire(import.meta.url)(path) as NativeAddon;
    const threads = Number(process.env.KNOBS_THREADS);
    if (Number.isInteger(threads) && threads >= 1) addon.setThreads(Math.min(threads, 256));
    return addon;
  } catch (e) {
    loadError = `loading ${path} failed: ${(e as Error).message}`;
    return null;
  }
}

/** The native backend, or null when the addon is missing or does not load (see nativeLoadError()). */
export function loadNativeBackend(): Backend | null {
  if (cached !== undefined) return cached;
  const addon = loadNativeAddon();
  cached = addon ? createNativeBackend(addon) : null;
  return cached;
}

/*
 * Small outputs come from 64 KiB slabs, as Node's Buffer pool does: in Node 20 a fresh small typed
 * array lives on the V8 heap and handing it to N-API first moves it off-heap (~1 µs), and a fresh
 * ArrayBuffer costs about as much; a view into a slab costs ~40 ns. Kernels overwrite every output
 * element, so slab memory needs no clearing. A slab is freed when the last view into it is.
 */
const SLAB_BYTES = 1 << 16;
const SLAB_MAX_ITEM = 4096;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabPos = 0;
/**
 * Reserves `bytes` in the current slab (starting a new one when full) and returns the offset. Call
 * it before reading `slab`: `new Float32Array(slab, slabBytes(n), n)` would read the old slab first
 * and place the view at offset 0 of a full slab, over live tensors (a bug this order once caused).
 */
function slabBytes(bytes: number): number {
  if (slabPos + bytes > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabPos = 0;
  }
  const at = slabPos;
  slabPos += (bytes + 15) & ~15;
  return at;
}
/*
 * Larger outputs skip the zero fill (every kernel writes each output element): Buffer.allocUnsafeSlow
 * takes malloc'd memory that, with the addon's malloc settings (kn_tune_malloc), is recycled heap
 * memory whose pages are already mapped, instead of fresh pages that fault in one by one.
 */
function allocF32(n: number): Float32Array {
  if (n > 0 && n * 4 <= SLAB_MAX_ITEM) {
    const at = slabBytes(n * 4); // first: it may start a new slab
    return new Float32Array(slab, at, n);
  }
  return allocateUnfilled('f32', n);
}
function allocU8(n: number): Uint8Array {
  if (!(n > 0 && n <= SLAB_MAX_ITEM)) return allocateUnfilled('u8', n);
  const at = slabBytes(n);
  return new Uint8Array(slab, at, n);
}
function allocI32(n: number): Int32Array {
  if (!(n > 0 && n * 4 <= SLAB_MAX_ITEM)) return allocateUnfilled('i32', n);
  const at = slabBytes(n * 4);
  return new Int32Array(slab, at, n);
}

/** A max pool's backward geometry [N, C, H, W, Ho, Wo] from its gradient's and its input's shapes. */
function poolSizes(gShape: readonly number[], xShape: readonly number[]): Float64Array {
  return Float64Array.of(gShape[0]!, gShape[1]!, xShape[2]!, xShape[3]!, gShape[2]!, gShape[3]!);
}

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isContiguous(v: KernelView): boolean {
  let expected = 1;
  for (let i = v.shape.length - 1; i >= 0; i--) {
    if (v.shape[i] === 1) continue;
    if (v.strides[i] !== expected) return false;
    expected *= v.shape[i]!;
  }
  return true;
}

export function createNativeBackend(addon: NativeAddon): Backend {
  // One layout buffer reused by every call: 4 views of rank ≤ 16 at most.
  const meta = new Float64Array(4 * (2 + 2 * MAX_DIMS));
  const pack = (...views: KernelView[]): Float64Array => {
    let p = 0;
    for (const v of views) {
      const r = v.shape.length;
      meta[p++] = r;
      meta[p++] = v.offset;
      for (let i = 0; i < r; i++) meta[p++] = v.shape[i]!;
      for (let i = 0; i < r; i++) meta[p++] = v.strides[i]!;
    }
    return meta;
  };
  const f32 = (v: KernelView): F32 => v.storage as F32;
  const bf16 = addon.info().bf16;
  /** The view's elements as contiguous f32 storage starting at 0 (a copy only when needed). */
  const dense = (v: KernelView): F32 => {
    const n = numel(v.shape);
    if (isContiguous(v))
      return v.offset === 0 && v.storage.length === n ? f32(v) : f32(v).subarray(v.offset, v.offset + n);
    const out = allocF32(n);
    addon.assign(out, v.storage, pack(denseView(v.shape, out), v));
    return out;
  };
  const convParams = (xShape: readonly number[], wShape: readonly number[], p: Conv2dParams): Float64Array =>
    Float64Array.of(
      xShape[0]!,
      xShape[1]!,
      xShape[2]!,
      xShape[3]!,
      wShape[0]!,
      wShape[1]!,
      wShape[2]!,
      wShape[3]!,
      p.stride[0],
      p.stride[1],
      p.padding[0],
      p.padding[1],
      p.dilation[0],
      p.dilation[1],
      p.groups,
    );
  const poolParams = (xShape: readonly number[], p: Pool2dParams): Float64Array =>
    Float64Array.of(
      xShape[0]!,
      xShape[1]!,
      xShape[2]!,
      xShape[3]!,
      p.kernel[0],
      p.kernel[1],
      p.stride[0],
      p.stride[1],
      p.padding[0],
      p.padding[1],
    );
  const pooled = (xShape: readonly number[], p: Pool2dParams): number => {
    const o = (n: number, k: number, s: number, pad: number) =>
      n + 2 * pad < k ? 0 : Math.floor((n + 2 * pad - k) / s) + 1;
    return (
      xShape[0]! *
      xShape[1]! *
      o(xShape[2]!, p.kernel[0], p.stride[0], p.padding[0]) *
      o(xShape[3]!, p.kernel[1], p.stride[1], p.padding[1])
    );
  };
  const convOut = (n: number, k: number, s: number, pad: number, d: number) => {
    const span = d * (k - 1) + 1;
    return n + 2 * pad < span ? 0 : Math.floor((n + 2 * pad - span) / s) + 1;
  };

  const denseOpt = (v: KernelView | null): F32 | null => (v ? dense(v) : null);
  const qmatmul = (x: F32, M: number, w: QuantizedMatrix, y: F32): void => quantizedProduct(addon, x, M, w, y);

  const fused: FusedKernels = {
    softmax(x: KernelView, log: boolean): Storage {
      const C = x.shape[x.shape.length - 1] ?? 1;
      const n = numel(x.shape);
      const out = allocF32(n);
      if (n > 0) (log ? addon.logSoftmax : addon.softmax)(dense(x), n / C, C, out);
      return out;
    },
    softmaxBackward(y: KernelView, g: KernelView, log: boolean): Storage {
      const C = y.shape[y.shape.length - 1] ?? 1;
      const n = numel(y.shape);
      const dx = allocF32(n);
      if (n > 0) (log ? addon.logSoftmaxBackward : addon.softmaxBackward)(dense(y), dense(g), n / C, C, dx);
      return dx;
    },
    layerNorm(x: KernelView, C: number, weight: KernelView | null, bias: KernelView | null, eps: number) {
      const n = numel(x.shape);
      const rows = C > 0 ? n / C : 0;
      const y = allocF32(n),
        mean = allocF32(rows),
        rstd = allocF32(rows);
      if (n > 0) addon.layerNorm(dense(x), denseOpt(weight), denseOpt(bias), rows, C, eps, y, mean, rstd);
      return { y, mean, rstd };
    },
    addLayerNorm(
      x: KernelView,
      r: KernelView,
      C: number,
      weight: KernelView | null,
      bias: KernelView | null,
      eps: number,
    ) {
      const n = numel(x.shape);
      const rows = C > 0 ? n / C : 0;
      const sum = allocF32(n),
        y = allocF32(n),
        mean = allocF32(rows),
        rstd = allocF32(rows);
      if (n > 0)
        addon.addLayerNorm(dense(x), dense(r), denseOpt(weight), denseOpt(bias), rows, C, eps, sum, y, mean, rstd);
      return { sum, y, mean, rstd };
    },
    layerNormBackward(
      x: KernelView,
      C: number,
      weight: KernelView | null,
      mean: KernelView,
      rstd: KernelView,
      g: KernelView,
      wanted: NormGradsWanted,
      accumulate?: KernelView | null,
    ) {
      const n = numel(x.shape);
      const rows = C > 0 ? n / C : 0;
      const dx = wanted.x ? allocF32(n) : null;
      const dweight = wanted.weight ? allocF32(C) : null;
      const dbias = wanted.bias ? allocF32(C) : null;
      if (n > 0)
        addon.layerNormBackward(
          dense(x),
          denseOpt(weight),
          dense(mean),
          dense(rstd),
          dense(g),
          rows,
          C,
          dx,
          dweight,
          dbias,
          accumulate && dx ? dense(accumulate) : null,
        );
      else for (const t of [dweight, dbias]) t?.fill(0);
      return { dx, dweight, dbias };
    },
    rmsNorm(x: KernelView, C: number, weight: KernelView | null, eps: number) {
      const n = numel(x.shape);
      const rows = C > 0 ? n / C : 0;
      const y = allocF32(n),
        rstd = allocF32(rows);
      if (n > 0) addon.rmsNorm(dense(x), denseOpt(weight), rows, C, eps, y, rstd);
      return { y, rstd };
    },
    rmsNormBackward(
      x: KernelView,
      C: number,
      weight: KernelView | null,
      rstd: KernelView,
      g: KernelView,
      wanted: NormGradsWanted,
    ) {
      const n = numel(x.shape);
      const rows = C > 0 ? n / C : 0;
      const dx = wanted.x ? allocF32(n) : null;
      const dweight = wanted.weight ? allocF32(C) : null;
      if (n > 0) addon.rmsNormBackward(dense(x), denseOpt(weight), dense(rstd), dense(g), rows, C, dx, dweight);
      else dweight?.fill(0);
      return { dx, dweight };
    },
    crossEntropy(logits: KernelView, targets: Int32Array, ignoreIndex: number, grad: boolean) {
      const [N, C] = logits.shape as [number, number];
      const dlogits = grad ? allocF32(N * C) : null;
      const loss = N * C > 0 ? addon.crossEntropy(dense(logits), targets, N, C, ignoreIndex, dlogits) : NaN;
      return { loss, dlogits };
    },
    causalAttention(q: KernelView, k: KernelView, v: KernelView, scale: number) {
      const r = q.shape.length;
      const T = q.shape[r - 2]!,
        D = q.shape[r - 1]!;
      const n = numel(q.shape);
      const BH = T * D > 0 ? n / (T * D) : 0;
      const out = allocF32(n),
        lse = allocF32(BH * T);
      if (n > 0) addon.causalAttention(dense(q), dense(k), dense(v), BH, T, D, scale, out, lse);
      return { out, lse };
    },
    causalAttentionBackward(
      q: KernelView,
      k: KernelView,
      v: KernelView,
      out: KernelView,
      lse: KernelView,
      g: KernelView,
      scale: number,
    ) {
      const r = q.shape.length;
      const T = q.shape[r - 2]!,
        D = q.shape[r - 1]!;
      const n = numel(q.shape);
      const BH = T * D > 0 ? n / (T * D) : 0;
      const dq = allocF32(n),
        dk = allocF32(n),
        dv = allocF32(n);
      if (n > 0)
        addon.causalAttentionBackward(
          dense(q),
          dense(k),
          dense(v),
          dense(out),
          dense(lse),
          dense(g),
          BH,
          T,
          D,
          scale,
          dq,
          dk,
          dv,
        );
      return { dq, dk, dv };
    },
    causalAttentionQKV(qkv: KernelView, heads: number, scale: number) {
      const [B, T, C3] = qkv.shape as [number, number, number];
      const D = C3 / 3 / heads;
      const out = allocF32((B * T * C3) / 3),
        lse = allocF32(B * heads * T);
      if (B * T > 0) addon.causalAttentionQKV(dense(qkv), B, T, heads, D, scale, out, lse);
      return { out, lse };
    },
    causalAttentionQKVBackward(
      qkv: KernelView,
      out: KernelView,
      lse: KernelView,
      g: KernelView,
      heads: number,
      scale: number,
    ) {
      const [B, T, C3] = qkv.shape as [number, number, number];
      const D = C3 / 3 / heads;
      const dqkv = allocF32(B * T * C3);
      if (B * T * D > 0)
        addon.causalAttentionQKVBackward(dense(qkv), dense(out), dense(lse), dense(g), B, T, heads, D, scale, dqkv);
      return dqkv;
    },
    activationBackward(op: ActivationOp, x: KernelView, g: KernelView): Storage {
      const out = allocF32(numel(x.shape));
      addon.activationBackward(UNARY_CODE[op], f32(x), f32(g), pack(x, g), out);
      return out;
    },
    biasActivation(h: F32, rows: number, N: number, bias: KernelView | null, act: ActivationOp | null) {
      const y = act ? allocF32(rows * N) : null;
      addon.biasActivation(h, rows, N, denseOpt(bias), act ? UNARY_CODE[act] : -1, y);
      return y;
    },
    biasActivationBackward(g: KernelView, h: KernelView | null, act: ActivationOp | null, bias: boolean) {
      const N = g.shape[g.shape.length - 1] ?? 1;
      const rows = N > 0 ? numel(g.shape) / N : 0;
      const dh = act ? allocF32(rows * N) : null;
      const db = bias ? allocF32(N) : null;
      addon.biasActivationBackward(dense(g), h && dense(h), rows, N, act ? UNARY_CODE[act] : -1, dh, db);
      return { dh, db };
    },
    maxPoolBiasRelu(x: KernelView, bias: KernelView, p: Pool2dParams) {
      const n = pooled(x.shape, p);
      const out = allocF32(n);
      const indices = allocI32(n);
      addon.maxPool2dBiasRelu(dense(x), dense(bias), poolParams(x.shape, p), out, indices);
      return { out, indices };
    },
    maxPoolBiasReluBackward(g, out, indices, xShape, bias) {
      const dx = allocF32(numel(xShape));
      const db = bias ? allocF32(xShape[1]!) : null;
      const idx = denseAny(indices, addon, pack) as Int32Array;
      addon.maxPool2dBiasReluBackward(dense(g), dense(out), idx, poolSizes(g.shape, xShape), dx, db);
      return { dx, db };
    },
    matmulAccumulate(a: KernelView, b: KernelView, c: Float32Array, alpha: number, bias?: KernelView | null): void {
      addon.matmulAccumulate(f32(a), f32(b), pack(a, b), c, alpha, bias ? dense(bias) : null);
    },
    matmulPair(a1: KernelView, b1: KernelView, a2: KernelView, b2: KernelView): [Storage, Storage] {
      const out1 = allocF32(a1.shape[0]! * b1.shape[1]!);
      const out2 = allocF32(a2.shape[0]! * b2.shape[1]!);
      addon.matmulPair(f32(a1), f32(b1), f32(a2), f32(b2), pack(a1, b1, a2, b2), out1, out2);
      return [out1, out2];
    },
    loraBackward(g: KernelView, sB: KernelView, t: KernelView, h: KernelView) {
      const [M, N] = g.shape as [number, number];
      const [K, r] = [h.shape[1]!, sB.shape[1]!];
      const u = allocF32(M * r);
      const dB = allocF32(N * r);
      const dA = allocF32(r * K);
      addon.loraBackward(dense(g), dense(sB), dense(t), dense(h), M, N, K, r, u, dB, dA);
      return { u, dB, dA };
    },
    quantizedMatmul(x: KernelView, w: QuantizedMatrix): Storage {
      const M = numel(x.shape) / w.cols;
      const y = allocF32(M * w.rows);
      qmatmul(dense(x), M, w, y);
      return y;
    },
    quantizedMatmulBackward(g: KernelView, w: QuantizedMatrix): Storage {
      const M = numel(g.shape) / w.rows;
      const dx = allocF32(M * w.cols);
      addon.qmatmulBackward(GGML_TYPE_ID[w.type], dense(g), M, w.rows, w.blocks, w.cols, dx);
      return dx;
    },
    adam(param, grad, expAvg, expAvgSq, h) {
      if (param.length > 0)
        addon.adamw(
          param,
          grad,
          expAvg,
          expAvgSq,
          h.lr,
          h.beta1,
          h.beta2,
          h.eps,
          h.weightDecay,
          h.step,
          h.decoupled ? 1 : 0,
        );
    },
    adamMany(updates) {
      const hyper = new Float64Array(7 * updates.length);
      updates.forEach(({ h }, i) =>
        hyper.set([h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, h.step, h.decoupled ? 1 : 0], 7 * i),
      );
      addon.adamMany(
        updates.map((u) => u.param),
        updates.map((u) => u.grad),
        updates.map((u) => u.expAvg),
        updates.map((u) => u.expAvgSq),
        hyper,
      );
    },
    sumOfSquares: (arrays) => addon.sumSquaresMany(arrays),
    scaleInPlace: (arrays, k) => addon.scaleMany(arrays, k),
  };

  const decode: DecodeKernels = {
    gemv: (x, w, N, K, y) => addon.gemv(x, w, N, K, y),
    qgemv: (x, w, y) => qmatmul(x, 1, w, y),
    addRmsNorm: (x, r, w, eps, y) => addon.addRmsNorm(x, r, w, x.length, eps, y),
    swiglu: (g, u, out) => addon.swiglu(g, u, out.length, out),
    decodeAttention: (q, k, v, cos, sin, keys, values, s, pos, scale, y) =>
      addon.decodeAttention(q, k, v, cos, sin, keys, values, s.heads, s.kvHeads, s.headDim, s.maxLength, pos, scale, y),
  };

  return {
    name: 'native',
    fused,
    decode,
    describe: () => {
      const i = addon.info();
      return {
        name: 'native',
        gemm: i.gemm,
        gemmLibraries: i.gemmLibraries.split(','),
        isa: i.isa,
        onednnIsa: i.onednnIsa,
        bf16: i.bf16 ? addon.bf16Impl() : false,
        threads: i.threads,
        dtypes: ['f32'],
      };
    },

    supports(kernel: KernelName, inputs: readonly KernelView[], outDtype?: DType): boolean {
      for (const v of inputs) if (v.shape.length > MAX_DIMS) return false;
      switch (kernel) {
        case 'assign':
          return true; // any dtype: the addon copies by element size
        case 'cast':
          // both ends: a dtype the addon lacks (f16, bf16, i64 …) goes to js through the dispatcher, so traces see it
          return CAST_DTYPES.has(inputs[0]!.dtype) && (outDtype === undefined || CAST_DTYPES.has(outDtype));
        case 'where':
          return inputs[0]!.dtype === 'bool' && inputs[1]!.dtype === 'f32' && inputs[2]!.dtype === 'f32';
        case 'gatherRows':
        case 'scatterAddRows':
          return inputs[0]!.dtype === 'f32' && (inputs[1]!.dtype === 'i32' || inputs[1]!.dtype === 'i64');
        case 'maxPool2dBackward':
          return inputs[0]!.dtype === 'f32' && inputs[1]!.dtype === 'i32';
        case 'matmul':
          return (
            inputs.length === 2 &&
            inputs[0]!.dtype === 'f32' &&
            inputs[1]!.dtype === 'f32' &&
            inputs[0]!.shape.length >= 2 &&
            inputs[0]!.shape.length === inputs[1]!.shape.length
          );
        case 'loraBackward': {
          // g [M, N], sB [N, r], t [M, r], h [M, K]: N, K ≥ 1 and a rank of 1 to the kernel's 32
          const [g, sB, , h] = inputs as [KernelView, KernelView, KernelView, KernelView];
          const r = sB.shape[1]!;
          const sized = g.shape[1]! >= 1 && h.shape[1]! >= 1 && r >= 1 && r <= 32;
          return sized && inputs.every((v) => v.dtype === 'f32' && v.shape.length === 2);
        }
        default:
          return inputs.every((v) => v.dtype === 'f32');
      }
    },

    unary(op: UnaryOp, x: KernelView): Storage {
      const out = allocF32(numel(x.shape));
      addon.unary(UNARY_CODE[op], f32(x), pack(x), out);
      return out;
    },
    binary(op: BinaryOp, a: KernelView, b: KernelView): Storage {
      const code = BINARY_CODE[op];
      const n = numel(a.shape);
      const out = code >= BINARY_CODE.eq ? allocU8(n) : allocF32(n);
      addon.binary(code, f32(a), f32(b), pack(a, b), out);
      return out;
    },
    where(cond: KernelView, a: KernelView, b: KernelView): Storage {
      const out = allocF32(numel(a.shape));
      addon.where(cond.storage as Uint8Array, f32(a), f32(b), pack(cond, a, b), out);
      return out;
    },
    reduce(op: ReduceOp, x: KernelView, axes: readonly number[]): Storage {
      let mask = 0;
      for (const a of axes) mask |= 1 << a;
      const out = allocF32(numel(x.shape.map((d, i) => (axes.includes(i) ? 1 : d))));
      addon.reduce(REDUCE_CODE[op], f32(x), pack(x), mask, out);
      return out;
    },
    argReduce(op: ArgReduceOp, x: KernelView, axis: number): Storage {
      const out = allocI32(numel(x.shape.map((d, i) => (i === axis ? 1 : d))));
      addon.argReduce(op === 'argmin' ? 1 : 0, f32(x), pack(x), axis, out);
      return out;
    },
    cumsum(x: KernelView, axis: number, reverse: boolean): Storage {
      const out = allocF32(numel(x.shape));
      addon.cumsum(
        dense(x),
        numel(x.shape.slice(0, axis)),
        x.shape[axis]!,
        numel(x.shape.slice(axis + 1)),
        reverse ? 1 : 0,
        out,
      );
      return out;
    },
    matmulPrecisions: () => (bf16 ? ['f32', 'bf16'] : ['f32']),
    matmul(a: KernelView, b: KernelView, precision: MatmulPrecision = 'f32'): Storage {
      const r = a.shape.length;
      const out = allocF32(numel(a.shape.slice(0, r - 1)) * b.shape[r - 1]!);
      (precision === 'bf16' ? addon.matmulBf16 : addon.matmul)(f32(a), f32(b), pack(a, b), out);
      return out;
    },
    assign(dst: KernelView, src: KernelView): void {
      addon.assign(dst.storage, src.storage, pack(dst, src));
    },
    cast(x: KernelView, dtype: DType): Storage {
      const n = numel(x.shape);
      const out: Storage =
        dtype === 'f32'
          ? allocF32(n)
          : dtype === 'f64'
            ? new Float64Array(n)
            : dtype === 'i32'
              ? allocI32(n)
              : dtype === 'i8'
                ? new Int8Array(n)
                : allocU8(n);
      addon.cast(x.storage, pack(x), out, dtype === 'bool');
      return out;
    },
    gatherRows(table: KernelView, ids: KernelView): Storage {
      const idx =
        ids.dtype === 'i64'
          ? (denseAny(ids, addon, pack) as BigInt64Array)
          : (denseAny(ids, addon, pack) as Int32Array);
      const out = allocF32(idx.length * table.shape[1]!);
      addon.gatherRows(f32(table), pack(table), idx, out);
      return out;
    },
    scatterAddRows(src: KernelView, ids: KernelView, rows: number): Storage {
      const idx = denseAny(ids, addon, pack) as Ids;
      const out = allocF32(rows * src.shape[1]!);
      addon.scatterAddRows(f32(src), pack(src), idx, rows, out);
      return out;
    },

    conv2d(x: KernelView, w: KernelView, p: Conv2dParams): Storage {
      const [N, , H, W] = x.shape as [number, number, number, number];
      const [Cout, , kH, kW] = w.shape as [number, number, number, number];
      const out = allocF32(
        N *
          Cout *
          convOut(H, kH, p.stride[0], p.padding[0], p.dilation[0]) *
          convOut(W, kW, p.stride[1], p.padding[1], p.dilation[1]),
      );
      addon.conv2d(dense(x), dense(w), convParams(x.shape, w.shape, p), out);
      return out;
    },
    conv2dBackwardInput(g: KernelView, w: KernelView, xShape: readonly number[], p: Conv2dParams): Storage {
      const out = allocF32(numel(xShape));
      addon.conv2dBackwardInput(dense(g), dense(w), convParams(xShape, w.shape, p), out);
      return out;
    },
    conv2dBackwardWeight(g: KernelView, x: KernelView, wShape: readonly number[], p: Conv2dParams): Storage {
      const out = allocF32(numel(wShape));
      addon.conv2dBackwardWeight(dense(g), dense(x), convParams(x.shape, wShape, p), out);
      return out;
    },
    maxPool2d(x: KernelView, p: Pool2dParams): { out: Storage; indices: Storage } {
      const n = pooled(x.shape, p);
      const out = allocF32(n);
      const indices = allocI32(n);
      addon.maxPool2d(dense(x), poolParams(x.shape, p), out, indices);
      return { out, indices };
    },
    maxPool2dBackward(g: KernelView, indices: KernelView, xShape: readonly number[]): Storage {
      const out = allocF32(numel(xShape));
      addon.maxPool2dBackward(dense(g), denseAny(indices, addon, pack) as Int32Array, poolSizes(g.shape, xShape), out);
      return out;
    },
    avgPool2d(x: KernelView, p: Pool2dParams): Storage {
      const out = allocF32(pooled(x.shape, p));
      addon.avgPool2d(dense(x), poolParams(x.shape, p), out);
      return out;
    },
    avgPool2dBackward(g: KernelView, xShape: readonly number[], p: Pool2dParams): Storage {
      const out = allocF32(numel(xShape));
      addon.avgPool2dBackward(dense(g), poolParams(xShape, p), out);
      return out;
    },
  };
}

function denseView(shape: readonly number[], storage: Storage): KernelView {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return { dtype: 'f32', storage, shape, strides, offset: 0 };
}

/** Contiguous storage of any-dtype view (ids, indices). */
function denseAny(v: KernelView, addon: NativeAddon, pack: (...views: KernelView[]) => Float64Array): Storage {
  const n = numel(v.shape);
  if (isContiguous(v))
    return v.offset === 0 && v.storage.length === n
      ? v.storage
      : (v.storage.subarray(v.offset, v.offset + n) as Storage);
  const Ctor = v.storage.constructor as new (n: number) => Storage;
  const out = new Ctor(n);
  addon.assign(out, v.storage, pack(denseView(v.shape, out), v));
  return out;
}
