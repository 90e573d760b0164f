/**
 * What the continuous-batching engine (src/serve/engine.ts) runs: one batched forward pass of a
 * decoder over rows from many sequences, each row one token at its own position of its own
 * sequence, read against that sequence's paged KV cache (src/serve/paged-kv.ts). Decode steps are
 * one row per sequence; a prompt chunk is several rows of one sequence.
 *
 * `BatchedDecoder` holds what the model families share (src/serve/batched-llama.ts,
 * src/serve/batched-gpt.ts): the projections — f32 weights stored [out, in] or [in, out] (GPT-2's
 * Conv1D), q8_0/q4_0 blocks — each through a batch-invariant kernel (native/kernels/bi_decode.cpp,
 * bi_matmul_kn.cpp), each row's LoRA delta, the step's reusable buffers and the rows' block tables.
 *
 * LoRA: each row names its adapter (or none); for every adapted projection the rows of one adapter
 * are gathered and get `scaling · B(A x)` added, computed with the same batch-invariant matmul; for
 * a DoRA adapter the sum is then scaled by its magnitude over the adapted weight's norm, per output
 * (PEFT's `(m / ‖W + scaling·B·A‖) ⊙ (W x + scaling·B·A x)`). The bias comes last, on every row.
 *
 * An adapter may also train copies of base tensors (PEFT's `modules_to_save` and `bias`: a norm, the
 * head, an embedding, a bias; src/finetune/saved-tensors.ts). Every base tensor the engine reads is a
 * `Site`, and a row reads its adapter's copy where it has one: norms and biases run over runs of
 * consecutive rows that read the same values (one run of all rows when no row's adapter has a copy
 * there); a copied weight (the head, say) is read once for the rows of each copy, gathered. Every
 * kernel is row-wise, so a row's bits do not depend on the run or group it falls in.
 */
import { GGML_TYPE_ID, type NativeAddon, packedOf, quantizedProduct } from '../backends/native/index.js';
import { ArgumentError } from '../errors.js';
import type { LoraAdapter, LoraLayer } from '../finetune/lora.js';
import { Linear, type WeightLayout } from '../nn/linear.js';
import { div } from '../ops/elementwise.js';
import { QuantizedLinear } from '../nn/quantized-linear.js';
import type { Tensor } from '../tensor.js';
import { KV_BLOCK, type PagedKvCache, type PagedKvShape } from './paged-kv.js';

export type F32 = Float32Array;

/** One token of one sequence in a step. */
export interface BatchRow {
  token: number;
  /** Its position in the sequence (0-based); positions before it must already be in the cache. */
  position: number;
  /** The sequence's block table. */
  table: Int32Array;
  adapter: LoraAdapter | null;
  /** Whether the step returns logits for this row (the last row of a prompt, and decode rows). */
  wantLogits: boolean;
}

/** A model the engine can batch. */
export interface BatchedModel {
  /** The KV cache's shape (layers, KV heads, head size). */
  readonly shape: PagedKvShape;
  readonly vocabSize: number;
  readonly contextLength: number;
  /**
   * Runs the rows through the model, writing their keys and values into `kv`; returns the logits
   * [V] of each row with wantLogits, in row order.
   */
  forward(rows: readonly BatchRow[], kv: PagedKvCache): F32[];
  /** The key of a tensor `adapter` trains a copy of that the forward does not read (its rows would miss it), or null. */
  unreadCopy(adapter: LoraAdapter): string | null;
}

/** A base tensor the engine reads, with its values: a row whose adapter trains a copy of it reads the copy. */
export interface Site {
  base: Tensor;
  data: F32;
}

/** One projection of the model: y [M, out] = x [M, in] · W into y, batch-invariant; then its bias, if any. */
export interface Projection {
  path: string;
  out: number;
  /** y = x · W, W's values `w` (an f32 weight's copy) or the base's. */
  product(x: F32, M: number, y: F32, w?: F32): void;
  /** The f32 weight (null for q8_0/q4_0 blocks, which adapters do not copy). */
  weight: Site | null;
  bias: Site | null;
}

/** Where each row's keys and values live, in the layout the paged kernels read. */
export interface RowLayout {
  /** Each row's block table, padded to `stride` entries. */
  tables: Int32Array;
  stride: number;
  positions: Int32Array;
  /** Positions each row attends to (its own included). */
  lens: Int32Array;
}

export function f32Data(t: Tensor, what: string): F32 {
  if (t.dtype !== 'f32') throw new ArgumentError(`batched decoding needs f32 weights; ${what} is ${t.dtype}`);
  return t.contiguousStorage() as F32;
}

/** The indices of the rows by `keyOf(row)`, in row order; rows whose key is null are left out. */
function groupRows<K>(rows: readonly BatchRow[], keyOf: (row: BatchRow) => K | null): Map<K, number[]> {
  const groups = new Map<K, number[]>();
  rows.forEach((row, r) => {
    const key = keyOf(row);
    if (key === null) return;
    const g = groups.get(key);
    if (g) g.push(r);
    else groups.set(key, [r]);
  });
  return groups;
}

/** Rows `idx` of x [·, width], packed in order. */
function gather(x: F32, idx: readonly number[], width: number): F32 {
  const out = new Float32Array(idx.length * width);
  idx.forEach((row, j) => out.set(x.subarray(row * width, (row + 1) * width), j * width));
  return out;
}

export abstract class BatchedDecoder implements BatchedModel {
  abstract readonly shape: PagedKvShape;
  abstract readonly vocabSize: number;
  abstract readonly contextLength: number;
  /**
   * Each step's intermediates (x, q, k, …) reuse these buffers, grown to the largest step seen:
   * fresh arrays of up to megabytes per projection and step made the garbage collector run several
   * times a step. Only the logits, handed out, are new each step.
   */
  private readonly scratch = new Map<string, F32>();
  /**
   * Each DoRA layer's per-output factor m / ‖W + scaling·B·A‖, computed once: a served adapter's
   * weights do not change (AdapterSet loads a new object for new weights, so a new entry).
   */
  private readonly doraScales = new WeakMap<LoraLayer, F32>();
  /** Each adapter's trained copies by the base tensor they stand for (adapters do not change: see doraScales). */
  private readonly copies = new WeakMap<LoraAdapter, Map<Tensor, F32>>();
  /** The base tensors the engine reads (its sites). */
  private readonly read = new Set<Tensor>();

  constructor(protected readonly addon: NativeAddon) {}

  /** y [M, N] += bias, one f32 add per value (natively: GPT-2 has a bias on every projection). */
  private addBias(y: F32, M: number, bias: F32): void {
    if (M > 0) this.addon.biasActivation(y, M, bias.length, bias, -1, null);
  }

  /** A base tensor the engine reads, as a site. */
  protected site(t: Tensor, what: string): Site {
    this.read.add(t);
    return { base: t, data: f32Data(t, what) };
  }

  unreadCopy(adapter: LoraAdapter): string | null {
    return adapter.saved.find((s) => !this.read.has(s.target.original))?.target.key ?? null;
  }

  /** `adapter`'s trained copy of the base tensor at `site` (modules_to_save, bias), or null. */
  private copyOf(site: Site, adapter: LoraAdapter | null): F32 | null {
    if (!adapter || adapter.saved.length === 0) return null;
    let copies = this.copies.get(adapter);
    if (!copies) {
      copies = new Map(adapter.saved.map((s) => [s.target.original, f32Data(s.value, s.target.key)]));
      this.copies.set(adapter, copies);
    }
    return copies.get(site.base) ?? null;
  }

  /** The values a row on `adapter` reads at `site`: the adapter's copy, or the base's. */
  protected values(site: Site, adapter: LoraAdapter | null): F32 {
    return this.copyOf(site, adapter) ?? site.data;
  }

  /**
   * `fn(r0, n, values)` over runs of consecutive rows that read the same values at every site (all
   * rows at once unless an adapter holds a copy there); `fn` runs a row-wise kernel on rows r0 … r0+n−1.
   */
  protected inRuns(
    rows: readonly BatchRow[],
    sites: readonly Site[],
    fn: (r0: number, n: number, values: F32[]) => void,
  ): void {
    const copies = rows.some((row) => (row.adapter?.saved.length ?? 0) > 0);
    const base = sites.map((site) => site.data);
    let start = 0;
    let run: F32[] | null = null;
    rows.forEach((row, r) => {
      const values = copies ? sites.map((site) => this.values(site, row.adapter)) : base;
      if (run && values.every((v, i) => v === run![i])) return;
      if (run) fn(start, r - start, run);
      [start, run] = [r, values];
    });
    if (run) fn(start, rows.length - start, run);
  }

  abstract forward(rows: readonly BatchRow[], kv: PagedKvCache): F32[];

  /** A Linear (weight [out, in] or [in, out]) or a q8_0/q4_0 QuantizedLinear as a batch-invariant projection. */
  protected projection(layer: Linear | QuantizedLinear, path: string): Projection {
    if (layer.adapter !== null)
      throw new ArgumentError(
        `batched decoding applies adapters per request; ${path} has one attached to the model (serve adapters as request-level adapters instead)`,
      );
    const bias = layer.bias ? this.site(layer.bias, `${path}.bias`) : null;
    if (layer instanceof QuantizedLinear) {
      const weight = layer.weight;
      const N = weight.rows;
      return {
        path,
        out: N,
        product: (x, M, y) => {
          // The packed copy the backend's decode step also uses (made once per weight), with each
          // weight vector loaded once per tile of rows; where there is none, the blocks' product.
          const packed = M > 0 ? packedOf(this.addon, weight) : null;
          if (packed) this.addon.biQmatmulPacked(GGML_TYPE_ID[weight.type], x, M, weight.cols, packed, N, y);
          else if (M > 0) quantizedProduct(this.addon, x, M, weight, y);
        },
        weight: null,
        bias,
      };
    }
    if (!(layer instanceof Linear)) throw new ArgumentError(`batched decoding: ${path} is not a linear layer`);
    return this.dense(
      this.site(layer.weight, `${path}.weight`),
      bias,
      layer.outFeatures,
      layer.inFeatures,
      path,
      layer.layout,
    );
  }

  /**
   * An f32 weight as a projection: a Linear's, stored [N, K] (out, in) or, as GPT-2's Conv1D,
   * [K, N] (`in_out`, multiplied as stored); or a tied embedding as the head.
   */
  protected dense(
    weight: Site,
    bias: Site | null,
    N: number,
    K: number,
    path: string,
    layout: WeightLayout = 'out_in',
  ): Projection {
    const product = layout === 'in_out' ? this.addon.biMatmulKn : this.addon.biMatmul;
    return {
      path,
      out: N,
      product: (x, M, y, w = weight.data) => {
        if (M > 0) product(x, M, K, w, N, y);
      },
      weight,
      bias,
    };
  }

  /** `n` floats of the buffer `name` (contents left from earlier use: callers overwrite them). */
  protected buffer(name: string, n: number): F32 {
    let b = this.scratch.get(name);
    if (!b || b.length < n) {
      b = new Float32Array(Math.max(n, 2 * (b?.length ?? 0)));
      this.scratch.set(name, b);
    }
    return b.subarray(0, n);
  }

  /**
   * Projection plus each row's LoRA delta (rows grouped by adapter; each group's delta is row-wise),
   * then the bias, into the buffer `into` (or a new array).
   */
  protected project(p: Projection, x: F32, rows: readonly BatchRow[], inDim: number, into: string | null): F32 {
    const M = rows.length;
    const N = p.out;
    const y = into ? this.buffer(into, M * N) : new Float32Array(M * N);
    p.product(x, M, y);
    // rows whose adapter trains a copy of the weight (the head, say) again, one product per copy
    const weight = p.weight;
    if (weight)
      for (const [w, idx] of groupRows(rows, (row) => this.copyOf(weight, row.adapter))) {
        const yg = new Float32Array(idx.length * N);
        p.product(gather(x, idx, inDim), idx.length, yg, w);
        idx.forEach((row, j) => y.set(yg.subarray(j * N, (j + 1) * N), row * N));
      }
    const deltas = groupRows(rows, (row) => (row.adapter?.layers.has(p.path) ? row.adapter : null));
    for (const [adapter, idx] of deltas) {
      const lora = adapter.layers.get(p.path)!;
      const A = f32Data(lora.lora_A.weight, `${p.path}.lora_A.weight`); // [r, in]
      const B = f32Data(lora.lora_B.weight, `${p.path}.lora_B.weight`); // [out, r]
      const r = lora.r;
      const G = idx.length;
      const t = new Float32Array(G * r);
      this.addon.biMatmul(gather(x, idx, inDim), G, inDim, A, r, t);
      const d = new Float32Array(G * N);
      this.addon.biMatmul(t, G, r, B, N, d);
      const s = lora.scaling;
      const dora = lora.magnitude ? this.doraScale(lora) : null;
      idx.forEach((row, j) => {
        for (let n = 0; n < N; n++) {
          const at = row * N + n;
          y[at] += Math.fround(s * d[j * N + n]!);
          if (dora) y[at] *= dora[n]!;
        }
      });
    }
    if (p.bias) this.inRuns(rows, [p.bias], (r0, n, [b]) => this.addBias(y.subarray(r0 * N, (r0 + n) * N), n, b!));
    return y;
  }

  /** m / ‖W + scaling·B·A‖ per output of a DoRA layer (the norm PEFT takes, detached; lora.ts). */
  private doraScale(lora: LoraLayer): F32 {
    let scale = this.doraScales.get(lora);
    if (!scale) {
      scale = f32Data(div(lora.magnitude!.weight.detach(), lora.weightNorm()), 'a DoRA scale');
      this.doraScales.set(lora, scale);
    }
    return scale;
  }

  /** The rows' block tables, positions and lengths; a row past its sequence's cache is an error. */
  protected layout(rows: readonly BatchRow[]): RowLayout {
    for (const row of rows)
      if (row.position >= this.contextLength || row.position >= row.table.length * KV_BLOCK)
        throw new ArgumentError(`batched decoding: position ${row.position} is past the sequence's cache`);
    const R = rows.length;
    const tables = new Int32Array(R * Math.max(1, ...rows.map((r) => r.table.length)));
    const stride = tables.length / Math.max(R, 1);
    const positions = new Int32Array(R);
    const lens = new Int32Array(R);
    rows.forEach((row, r) => {
      tables.set(row.table, r * stride);
      positions[r] = row.position;
      lens[r] = row.position + 1;
    });
    return { tables, stride, positions, lens };
  }

  /** The head's logits [V] of the rows with wantLogits, from the final-normed hidden states h [R, C]. */
  protected logits(head: Projection, h: F32, rows: readonly BatchRow[], C: number): F32[] {
    const picked = rows.flatMap((row, r) => (row.wantLogits ? [r] : []));
    const normed = this.buffer('normed', picked.length * C);
    picked.forEach((r, j) => normed.set(h.subarray(r * C, (r + 1) * C), j * C));
    const logits = this.project(
      head,
      normed,
      picked.map((r) => rows[r]!),
      C,
      null, // the logits leave with the caller
    );
    const V = this.vocabSize;
    return picked.map((_, j) => logits.subarray(j * V, (j + 1) * V));
  }
}
