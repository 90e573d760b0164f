/**
 * The backend interface: the narrow set of kernels every backend implements.
 *
 * The ops layer (src/ops) does all shape logic — broadcasting, axis normalisation, output shapes —
 * and hands kernels `KernelView`s whose shapes already agree. Kernels only compute: each reads its
 * inputs through (storage, shape, strides, offset), so views (transposes, slices, broadcasts with
 * stride 0) need no copy, and returns a fresh, contiguous, row-major storage for its output.
 *
 * A backend answers `supports(kernel, inputs)`; when it says no, the dispatcher runs the js
 * reference backend instead. The js backend supports everything.
 */
import type { DType, Storage } from '../dtype.js';

/** What a kernel sees of a tensor: no gradient state, no methods. */
export interface KernelView {
  readonly dtype: DType;
  readonly storage: Storage;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

export type UnaryOp =
  | 'neg'
  | 'exp'
  | 'log'
  | 'sqrt'
  | 'rsqrt'
  | 'abs'
  | 'tanh'
  | 'sigmoid'
  | 'relu'
  | 'gelu'
  | 'gelu_tanh'
  | 'silu'
  | 'sign';
export const UNARY_OPS: readonly UnaryOp[] = [
  'neg',
  'exp',
  'log',
  'sqrt',
  'rsqrt',
  'abs',
  'tanh',
  'sigmoid',
  'relu',
  'gelu',
  'gelu_tanh',
  'silu',
  'sign',
];

export type ArithmeticOp = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum';
export type CompareOp = 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';
export type BinaryOp = ArithmeticOp | CompareOp;
export const COMPARE_OPS: readonly CompareOp[] = ['eq', 'ne', 'lt', 'le', 'gt', 'ge'];

export type ReduceOp = 'sum' | 'max' | 'min';
export type ArgReduceOp = 'argmax' | 'argmin';

export interface Conv2dParams {
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
  readonly dilation: readonly [number, number];
  readonly groups: number;
}

export interface Pool2dParams {
  readonly kernel: readonly [number, number];
  readonly stride: readonly [number, number];
  readonly padding: readonly [number, number];
}

/**
 * Activations whose gradient a backend may fuse into one pass (`FusedKernels.activationBackward`):
 * the ones in a model's MLP block, where the composite rule's several passes over the activations
 * cost a training step measurable time. Every other unary gradient is a composite only.
 */
export type ActivationOp = 'relu' | 'gelu' | 'gelu_tanh' | 'silu';
export const ACTIVATION_OPS: readonly ActivationOp[] = ['relu', 'gelu', 'gelu_tanh', 'silu'];

/** Optional fused kernels (see `FusedKernels`); a name covers the forward and its backward. */
export type FusedKernelName =
  | 'softmax'
  | 'layerNorm'
  | 'rmsNorm'
  | 'crossEntropy'
  | 'causalAttention'
  | 'causalAttentionQKV'
  | 'adam'
  | 'gradNorm'
  | 'activationBackward'
  | 'biasActivation'
  | 'maxPoolBiasRelu'
  | 'quantizedMatmul'
  | 'matmulAccumulate'
  | 'matmulPair'
  | 'loraBackward';
export const FUSED_KERNELS: readonly FusedKernelName[] = [
  'softmax',
  'layerNorm',
  'rmsNorm',
  'crossEntropy',
  'causalAttention',
  'causalAttentionQKV',
  'adam',
  'gradNorm',
  'activationBackward',
  'biasActivation',
  'maxPoolBiasRelu',
  'quantizedMatmul',
  'matmulAccumulate',
  'matmulPair',
  'loraBackward',
];

/** ggml block formats a quantized weight can be held in (32 values per block). */
export type QuantType = 'q8_0' | 'q4_0';

/**
 * A weight matrix W [rows, cols] kept as ggml blocks along each row (the bytes of a GGUF tensor
 * with ggml dims [cols, rows], used as they are); cols is a multiple of 32.
 */
export interface QuantizedMatrix {
  readonly type: QuantType;
  readonly rows: number;
  readonly cols: number;
  readonly blocks: Uint8Array;
}

/** Hyperparameters of one Adam/AdamW update (src/optim/adam.ts `adamUpdate` is the reference). */
export interface AdamStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** AdamW: p ← p·(1 − lr·wd) instead of g ← g + wd·p. */
  decoupled: boolean;
  /** This update's number, from 1 (bias correction). */
  step: number;
}

/** One parameter's Adam/AdamW update: dense f32 arrays of one length and its hyperparameters. */
export interface AdamUpdate {
  param: Float32Array;
  grad: Float32Array;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
  h: AdamStep;
}

/**
 * How matmul multiplies f32 operands: 'f32', or 'bf16' mixed precision (operands rounded to
 * bfloat16, products accumulated and returned in f32; docs/performance.md).
 */
export type MatmulPrecision = 'f32' | 'bf16';

/** Every kernel name, for `supports()` and for `knobs info`. */
export type KernelName =
  | 'unary'
  | 'binary'
  | 'where'
  | 'reduce'
  | 'argReduce'
  | 'cumsum'
  | 'matmul'
  | 'assign'
  | 'cast'
  | 'gatherRows'
  | 'scatterAddRows'
  | 'conv2d'
  | 'conv2dBackwardInput'
  | 'conv2dBackwardWeight'
  | 'maxPool2d'
  | 'maxPool2dBackward'
  | 'avgPool2d'
  | 'avgPool2dBackward'
  | FusedKernelName;

/** Which input gradients a fused backward should compute. */
export interface NormGradsWanted {
  readonly x: boolean;
  readonly weight: boolean;
  readonly bias: boolean;
}

/**
 * Fused kernels for ops that are composites of primitives in src/ops/nn.ts. They are optional: the
 * ops layer uses them when `backend.fused` exists and `supports(name, inputs)` says yes, and runs
 * the composite otherwise, so a backend without them loses speed, never an op. Each must match
 * its composite (test/fused.test.ts). All of them work over rows: the input is seen as
 * [rows, C] with C its trailing size, and outputs are contiguous.
 */
export interface FusedKernels {
  /** softmax (log-softmax when `log`) over the last axis. */
  softmax(x: KernelView, log: boolean): Storage;
  /** dL/dx of softmax (log-softmax when `log`) from its output y and g = dL/dy. */
  softmaxBackward(y: KernelView, g: KernelView, log: boolean): Storage;
  /**
   * Layer norm over the trailing C elements (biased variance), optional affine weight/bias of C
   * elements. Also returns per-row mean and 1/sqrt(var + eps) for the backward.
   */
  layerNorm(
    x: KernelView,
    C: number,
    weight: KernelView | null,
    bias: KernelView | null,
    eps: number,
  ): { y: Storage; mean: Storage; rstd: Storage };
  /**
   * layerNorm of s = x + r (x, r of one shape), also returning s: a residual add and the next
   * norm in one pass; the same values as the add followed by layerNorm.
   */
  addLayerNorm(
    x: KernelView,
    r: KernelView,
    C: number,
    weight: KernelView | null,
    bias: KernelView | null,
    eps: number,
  ): { sum: Storage; y: Storage; mean: Storage; rstd: Storage };
  /** `accumulate` (x's shape), when given, is added into dx: the same values as adding it afterwards. */
  layerNormBackward(
    x: KernelView,
    C: number,
    weight: KernelView | null,
    mean: KernelView,
    rstd: KernelView,
    g: KernelView,
    wanted: NormGradsWanted,
    accumulate?: KernelView | null,
  ): { dx: Storage | null; dweight: Storage | null; dbias: Storage | null };
  /** RMS norm over the last C elements: x / sqrt(mean(x²) + eps) · weight; returns per-row rstd. */
  rmsNorm(x: KernelView, C: number, weight: KernelView | null, eps: number): { y: Storage; rstd: Storage };
  rmsNormBackward(
    x: KernelView,
    C: number,
    weight: KernelView | null,
    rstd: KernelView,
    g: KernelView,
    wanted: NormGradsWanted,
  ): { dx: Storage | null; dweight: Storage | null };
  /**
   * Mean cross-entropy of logits [N, C] against class ids (already checked: in [0, C) or
   * `ignoreIndex`) over the rows not ignored (NaN when none), and, when `grad`, its gradient
   * with respect to the logits (zero on ignored rows).
   */
  crossEntropy(
    logits: KernelView,
    targets: Int32Array,
    ignoreIndex: number,
    grad: boolean,
  ): { loss: number; dlogits: Storage | null };
  /**
   * Causal self-attention softmax(q·kᵀ·scale, masked to keys ≤ the query's position) · v for q, k,
   * v of one shape [..., T, D]; also the per-row log-sum-exp of the scores, for the backward.
   */
  causalAttention(q: KernelView, k: KernelView, v: KernelView, scale: number): { out: Storage; lse: Storage };
  causalAttentionBackward(
    q: KernelView,
    k: KernelView,
    v: KernelView,
    out: KernelView,
    lse: KernelView,
    g: KernelView,
    scale: number,
  ): { dq: Storage; dk: Storage; dv: Storage };
  /**
   * The same attention on GPT's fused projection: q, k, v read in place from qkv [B, T, 3·H·D]
   * (q, k, v side by side, head h at columns h·D of each), the result as [B, T, H·D] (heads
   * merged), lse [B, H, T]. No head split or merge copies.
   */
  causalAttentionQKV(qkv: KernelView, heads: number, scale: number): { out: Storage; lse: Storage };
  /** d qkv [B, T, 3·H·D] (dq, dk, dv side by side) from g = dL/dout [B, T, H·D]. */
  causalAttentionQKVBackward(
    qkv: KernelView,
    out: KernelView,
    lse: KernelView,
    g: KernelView,
    heads: number,
    scale: number,
  ): Storage;
  /**
   * One Adam/AdamW update in place over dense f32 arrays of one length (param, its gradient and
   * the two moment buffers), as src/optim/adam.ts `adamUpdate` (the optimizer's reference).
   */
  adam(param: Float32Array, grad: Float32Array, expAvg: Float32Array, expAvgSq: Float32Array, h: AdamStep): void;
  /** `adam` on every entry in one call (one crossing per optimizer step), with the same results bit for bit. */
  adamMany(updates: readonly AdamUpdate[]): void;
  /** Σ x² over all the arrays (clipGradNorm's 2-norm), summed in double in an order independent of the threads. */
  sumOfSquares(arrays: readonly Float32Array[]): number;
  /** x ← x·k in place over all the arrays, each product rounded once from double (as a JS loop does). */
  scaleInPlace(arrays: readonly Float32Array[], k: number): void;
  /** g · f'(x) in one pass, for `x` and `g` of one shape; must match the composite rule in src/autograd/gradients.ts. */
  activationBackward(op: ActivationOp, x: KernelView, g: KernelView): Storage;
  /**
   * A linear layer's epilogue on its GEMM output h [rows, N] (dense, freshly made by matmul, owned
   * by the caller): h += bias in place (bias [N], when given), then returns act(h) as new storage
   * (null when `act` is null: h is the output). Must equal the composite add and activation.
   */
  biasActivation(
    h: Float32Array,
    rows: number,
    N: number,
    bias: KernelView | null,
    act: ActivationOp | null,
  ): Storage | null;
  /**
   * Its backward from g [rows, N]: dh = g ⊙ act'(h) (null when `act` is null: dh is g) and, when
   * `bias`, db = Σrows dh, summed in an order that depends only on the shape.
   */
  biasActivationBackward(
    g: KernelView,
    h: KernelView | null,
    act: ActivationOp | null,
    bias: boolean,
  ): { dh: Storage | null; db: Storage | null };
  /**
   * relu(maxPool2d(x) + bias[c]) over x [N, C, H, W] in one pass (a CNN block after its convolution):
   * the output and the pool's indices, equal to the composite maxPool2d → add → relu.
   */
  maxPoolBiasRelu(x: KernelView, bias: KernelView, p: Pool2dParams): { out: Storage; indices: Storage };
  /**
   * Its backward from g and the forward's `out` and `indices`: dx [N, C, H, W] and, when `bias`,
   * db [C] = Σ over images and pixels of g ⊙ relu'(out), summed in an order that depends only on the shape.
   */
  maxPoolBiasReluBackward(
    g: KernelView,
    out: KernelView,
    indices: KernelView,
    xShape: readonly number[],
    bias: boolean,
  ): { dx: Storage; db: Storage | null };
  /**
   * x [..., K] · Wᵀ → [..., N] for W [N, K] in blocks, x's rows quantized to q8_0 first; must
   * match src/backends/js/qmatmul.ts (the reference). A row's result never depends on the batch.
   */
  quantizedMatmul(x: KernelView, w: QuantizedMatrix): Storage;
  /** g [..., N] · W → [..., K] (the input gradient; W gets none). */
  quantizedMatmulBackward(g: KernelView, w: QuantizedMatrix): Storage;
  /**
   * c [M, N] (row-major; the caller's own, freshly computed) += bias [N] (when given) + alpha · a [M, K]
   * · b [K, N], for 2-D views a and b (transposed views too): the GEMM's beta = 1, so a fused LoRA
   * linear (src/ops/lora-linear.ts) adds its low-rank product into the base's output in the GEMM's
   * pass; with a LoRA rank as K, bias and product go in in one pass over c ((c + bias) + product).
   */
  matmulAccumulate(a: KernelView, b: KernelView, c: Float32Array, alpha: number, bias?: KernelView | null): void;
  /**
   * [a1·b1, a2·b2] for 2-D f32 views, as row-major storages: two independent products (a linear
   * layer's dX and dW) in one call, each on its own share of the threads. Each result is a plain
   * matmul's value at some thread count (the same bits for a given count).
   */
  matmulPair(a1: KernelView, b1: KernelView, a2: KernelView, b2: KernelView): [Storage, Storage];
  /**
   * A LoRA linear's low-rank backward (src/ops/lora-linear.ts) for f32 g [M, N], sB [N, r] (the scaled
   * lora_B), t [M, r] and h [M, K], r ≤ 32: u = g·sB [M, r], dB = gᵀ·t [N, r] and dA = uᵀ·h [r, K] in one
   * pass over g and h, as row-major storages. The bits do not depend on the thread count.
   */
  loraBackward(g: KernelView, sB: KernelView, t: KernelView, h: KernelView): { u: Storage; dB: Storage; dA: Storage };
}

/**
 * Kernels for one decode step of one sequence (batch 1, one new position; src/models/llama-decode.ts),
 * on dense f32 arrays the caller owns: at batch 1 a token's time is the weights' bytes plus one
 * call per step, so these skip views, allocation and the tape. Each output row's value does not
 * depend on the thread count.
 */
export interface DecodeKernels {
  /** y [N] = W [N, K] · x [K], W dense row-major. */
  gemv(x: Float32Array, w: Float32Array, N: number, K: number, y: Float32Array): void;
  /** y [N] = W · x for W [N, K] in blocks: quantizedMatmul's kernel at M = 1 (the same values). */
  qgemv(x: Float32Array, w: QuantizedMatrix, y: Float32Array): void;
  /** x [C] += r (when given), then y = x / sqrt(mean(x²) + eps) · w, as rmsNorm. */
  addRmsNorm(x: Float32Array, r: Float32Array | null, w: Float32Array, eps: number, y: Float32Array): void;
  /** out = silu(g) · u. */
  swiglu(g: Float32Array, u: Float32Array, out: Float32Array): void;
  /**
   * Rotary (cos, sin [D], "half" pairs) in place on q [H·D] and k [KV·D]; k and v written to the
   * caches [KV, maxLen, D] at `pos`; y [H·D] = softmax(q·kᵀ·scale) · v over positions 0…pos, query
   * head h reading key/value head h / (H/KV).
   */
  decodeAttention(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    cos: Float32Array,
    sin: Float32Array,
    keys: Float32Array,
    values: Float32Array,
    shape: { heads: number; kvHeads: number; headDim: number; maxLength: number },
    pos: number,
    scale: number,
    y: Float32Array,
  ): void;
}

export interface Backend {
  readonly name: string;
  /** Libraries, ISA and threads, for `knobs info`. */
  describe(): Record<string, unknown>;
  /**
   * Whether this backend runs `kernel` on these inputs; if not, the js backend does (for a fused
   * kernel: the ops layer runs the composite). `outDtype` is the result's dtype where the
   * inputs do not fix it (cast).
   */
  supports(kernel: KernelName, inputs: readonly KernelView[], outDtype?: DType): boolean;
  /** Fused kernels, when the backend has them (the js reference backend does not: its composites are the spec). */
  readonly fused?: FusedKernels;
  /** Batch-1 decode kernels, when the backend has them (else models decode through the ops). */
  readonly decode?: DecodeKernels;
  /**
   * The matmul precisions this backend runs fast here (absent: f32 only). Every backend's matmul
   * accepts 'bf16' (the js backend emulates it as the reference); this says where it is worth asking.
   */
  matmulPrecisions?(): readonly MatmulPrecision[];

  /** Elementwise f(x), same dtype (f32/f64). */
  unary(op: UnaryOp, x: KernelView): Storage;
  /** a ∘ b; `a` and `b` already have the output's shape (broadcast via stride-0 views). Compare ops give bool. */
  binary(op: BinaryOp, a: KernelView, b: KernelView): Storage;
  /** cond ? a : b, all three already of the output's shape; `cond` is bool. */
  where(cond: KernelView, a: KernelView, b: KernelView): Storage;
  /**
   * Reduces over `axes` (sorted, unique, non-negative). The output is contiguous with the input's
   * shape where each reduced axis has size 1 (keepdim). Reducing an empty axis gives 0 for sum and
   * is rejected by the ops layer for max/min.
   */
  reduce(op: ReduceOp, x: KernelView, axes: readonly number[]): Storage;
  /** Index of the max/min along `axis` (first one on ties), i32, keepdim shape. */
  argReduce(op: ArgReduceOp, x: KernelView, axis: number): Storage;
  /** Running sums along `axis` (from the end when `reverse`), x's shape and dtype, contiguous. */
  cumsum(x: KernelView, axis: number, reverse: boolean): Storage;
  /**
   * Batched matrix product: a [...batch, M, K] · b [...batch, K, N] → [...batch, M, N].
   * Batch dims already agree (broadcast via stride-0 views). Inner dims may be transposed views.
   * `precision` 'bf16' (f32 operands only): operands rounded to bf16, f32 accumulation and result.
   */
  matmul(a: KernelView, b: KernelView, precision?: MatmulPrecision): Storage;
  /** Copies `src` into `dst` element by element; both views have the same shape. Mutates dst's storage. */
  assign(dst: KernelView, src: KernelView): void;
  /** Converts to another dtype, contiguous output. */
  cast(x: KernelView, dtype: DType): Storage;
  /** table [V, C] rows picked by ids (i32/i64, any shape, n elements) → [n, C]. Ids already bounds-checked. */
  gatherRows(table: KernelView, ids: KernelView): Storage;
  /** Adds row i of src [n, C] into row ids[i] of a zero [rows, C] output (sums duplicates). */
  scatterAddRows(src: KernelView, ids: KernelView, rows: number): Storage;

  /** x [N, Cin, H, W] ⋆ w [Cout, Cin/groups, kH, kW] → [N, Cout, Ho, Wo] (no bias; the op adds it). */
  conv2d(x: KernelView, w: KernelView, p: Conv2dParams): Storage;
  /** dL/dx from g [N, Cout, Ho, Wo] and w; `xShape` = [N, Cin, H, W]. */
  conv2dBackwardInput(g: KernelView, w: KernelView, xShape: readonly number[], p: Conv2dParams): Storage;
  /** dL/dw from g and x; `wShape` = [Cout, Cin/groups, kH, kW]. */
  conv2dBackwardWeight(g: KernelView, x: KernelView, wShape: readonly number[], p: Conv2dParams): Storage;
  /** Max pooling over [N, C, H, W] → output and the flat (h·W + w) argmax index per output, i32. */
  maxPool2d(x: KernelView, p: Pool2dParams): { out: Storage; indices: Storage };
  maxPool2dBackward(g: KernelView, indices: KernelView, xShape: readonly number[]): Storage;
  /** Average pooling; padding counts toward the divisor (PyTorch's count_include_pad=True). */
  avgPool2d(x: KernelView, p: Pool2dParams): Storage;
  avgPool2dBackward(g: KernelView, xShape: readonly number[], p: Pool2dParams): Storage;
}
