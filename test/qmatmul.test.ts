/**
 * Quantized products (native/kernels/qmatmul.cpp, src/backends/js/qmatmul.ts, src/ops/quantized.ts)
 * and QuantizedLinear / quantizeModel (src/nn/quantized-linear.ts).
 *
 *  - the js reference quantizes activations to exactly ggml's q8_0 bytes (quantizeQ8_0 is checked
 *    against ggml elsewhere), and stays within a proven bound of dequantize-then-f32-matmul;
 *  - the native kernel matches the reference (same integers per block, another f32 summation
 *    order) and is batch- and thread-invariant bit for bit; this CPU's packed path (AVX2 or
 *    AVX-512 VNNI) equals the scalar one bit for bit;
 *  - the input gradient is g · dequantized W; models run and generate on quantized weights.
 * The native cases are skipped when the addon is not built, unless KNOBS_REQUIRE_NATIVE=1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { QuantizedMatrix, QuantType } from '../src/backends/backend.js';
import { QK, qmatmul, qmatmulBackward, quantizeActivationRow, quantizeBlocks } from '../src/backends/js/qmatmul.js';
import { dequantizeGguf, GGML_TYPE, GGML_TYPES } from '../src/formats/gguf.js';
import { quantizeQ4_0, quantizeQ8_0 } from '../src/formats/gguf-write.js';
import {
  quantizeMatrix,
  quantizedMatrixFromBlocks,
  replaceLinear,
  requantizeToQ8_0,
} from '../src/nn/quantized-linear.js';
import { parseRecipe } from '../src/train/recipe.js';
import { train } from '../src/train/trainer.js';
import { cli } from './harness/cli.js';
import { addon, native, skip } from './harness/native.js';

const TYPES: readonly QuantType[] = ['q8_0', 'q4_0'];

function values(n: number, seed: number, scale = 1): Float32Array {
  const g = new k.Generator(seed);
  return Float32Array.from({ length: n }, () => g.normal() * scale);
}

function dequantize(w: QuantizedMatrix): Float32Array {
  const id = w.type === 'q8_0' ? GGML_TYPE.Q8_0 : GGML_TYPE.Q4_0;
  return dequantizeGguf(GGML_TYPES.get(id)!, w.blocks, w.rows * w.cols);
}

function randomMatrix(type: QuantType, N: number, K: number, seed: number): QuantizedMatrix {
  return quantizeMatrix(type, values(N * K, seed), N, K);
}

/** Largest |a − b| over the largest |b|. */
function diffOverScale(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return worst / scale;
}

/** Largest |a − b| / (|b| + floor). */
function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>, floor: number): number {
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (Math.abs(b[i]!) + floor));
  return worst;
}

// Shapes: K = 96 has an odd number of blocks (the SIMD path pairs blocks), N = 37 rows split unevenly.
const SHAPES: [number, number, number][] = [
  [1, 32, 1],
  [1, 768, 64],
  [5, 96, 37],
  [3, 2048, 40],
];

describe('quantized matmul: the js reference', () => {
  it("quantizes an activation row to ggml's q8_0 blocks bit for bit", () => {
    const x = values(4 * 32, 1, 3);
    x[5] = 0; // a zero amid others
    x.fill(0, 32, 64); // an all-zero block: d = 0
    const row = quantizeActivationRow(x, 0, x.length);
    const bytes = quantizeQ8_0(x);
    for (let b = 0; b < 4; b++)
      for (let j = 0; j < QK; j++) assert.equal(row.q[b * QK + j], (bytes[34 * b + 2 + j]! << 24) >> 24);
    // the scales, through dequantization
    const deq = dequantizeGguf(GGML_TYPES.get(GGML_TYPE.Q8_0)!, bytes, x.length);
    for (let i = 0; i < x.length; i++) assert.equal(Math.fround(row.q[i]! * row.d[Math.floor(i / QK)]!), deq[i]);
  });

  it("quantizes weights to the same bytes as the GGUF writer's ggml quantizers", () => {
    const w = values(64 * 32, 9, 0.1);
    w.fill(0, 32, 64);
    w[100] = -3; // a negative extreme: q4_0 keeps its sign in d
    assert.deepEqual(quantizeBlocks('q8_0', w), quantizeQ8_0(w));
    assert.deepEqual(quantizeBlocks('q4_0', w), quantizeQ4_0(w));
  });

  for (const type of TYPES) {
    it(`${type}: within the activation-rounding bound of dequantize-then-f32-matmul`, () => {
      for (const [M, K, N] of SHAPES) {
        const w = randomMatrix(type, N, K, 10 + K);
        const x = values(M * K, 20 + N, 2);
        const y = qmatmul(x, M, w);
        const W = dequantize(w);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            // |Σ w·(x − x̂)| ≤ Σ |w| · amax(block)/254: each activation is off by at most half its step.
            let exact = 0;
            let bound = 0;
            for (let b = 0; b < K / QK; b++) {
              let amax = 0;
              for (let j = 0; j < QK; j++) amax = Math.max(amax, Math.abs(x[m * K + b * QK + j]!));
              for (let j = 0; j < QK; j++) {
                const wk = W[n * K + b * QK + j]!;
                exact += x[m * K + b * QK + j]! * wk;
                bound += (Math.abs(wk) * amax) / 254;
              }
            }
            const err = Math.abs(y[m * N + n]! - exact);
            assert.ok(
              err <= bound * 1.01 + 1e-4 * (1 + Math.abs(exact)),
              `${type} [${M},${K},${N}] (${m},${n}): ${err} > ${bound}`,
            );
          }
        }
      }
    });

    it(`${type}: the input gradient is g · dequantized W`, () => {
      const [M, K, N] = [3, 96, 37];
      const w = randomMatrix(type, N, K, 3);
      const g = values(M * N, 4);
      const dx = qmatmulBackward(g, M, w);
      const W = dequantize(w);
      const want = new Float64Array(M * K);
      for (let m = 0; m < M; m++)
        for (let n = 0; n < N; n++) for (let j = 0; j < K; j++) want[m * K + j] += g[m * N + n]! * W[n * K + j]!;
      assert.ok(maxRelDiff(dx, want, 1e-3) < 1e-4);
    });
  }
});

describe('quantized matmul: the native kernel', { skip }, () => {
  const code = { q8_0: 8, q4_0: 2 } as const;
  const run = (type: QuantType, x: Float32Array, M: number, w: QuantizedMatrix): Float32Array => {
    const y = new Float32Array(M * w.rows);
    addon!.qmatmul(code[type], x, M, w.cols, w.blocks, w.rows, y);
    return y;
  };

  for (const type of TYPES) {
    it(`${type}: matches the js reference (${addon?.qmatmulIsa()})`, () => {
      for (const [M, K, N] of SHAPES) {
        const w = randomMatrix(type, N, K, 30 + K);
        const x = values(M * K, 40 + N, 2);
        // Same int32 per block; only the f32 summation order differs (K/32 roundings of the row's terms).
        const d = diffOverScale(run(type, x, M, w), qmatmul(x, M, w));
        assert.ok(d < 1e-5, `[${M},${K},${N}]: ${d}`);
      }
    });

    it(`${type}: a row's result does not depend on the batch or the thread count`, () => {
      const [M, K, N] = [7, 256, 300];
      const w = randomMatrix(type, N, K, 5);
      const x = values(M * K, 6);
      const before = addon!.setThreads(1);
      try {
        const batch1 = run(type, x, M, w);
        addon!.setThreads(2);
        const batch2 = run(type, x, M, w);
        assert.deepEqual(batch2, batch1);
        for (const m of [0, 3, 6]) {
          const single = run(type, x.slice(m * K, (m + 1) * K), 1, w);
          assert.deepEqual(single, batch1.subarray(m * N, (m + 1) * N), `row ${m}`);
        }
      } finally {
        addon!.setThreads(before);
      }
    });

    it(`${type}: the input gradient matches the reference`, () => {
      const [M, K, N] = [4, 96, 37];
      const w = randomMatrix(type, N, K, 7);
      const g = values(M * N, 8);
      const dx = new Float32Array(M * K);
      addon!.qmatmulBackward(code[type], g, M, N, w.blocks, K, dx);
      // f32 sums of 37 terms in whatever order the GEMM library takes: relative to the largest element
      // (an element near cancellation carries the same absolute rounding, not a relative one)
      const d = diffOverScale(dx, qmatmulBackward(g, M, w));
      assert.ok(d < 1e-5, String(d));
    });

    it(`${type}: the training-sized input gradient (f32 tiles of W) matches the reference, same bits at 1 and 2 threads`, () => {
      // 300 rows of g: two row tiles; 10 blocks: a full and a partial column tile; 200 weight rows:
      // two panels per tile (each tile sums the panels in order).
      const [M, K, N] = [300, 320, 200];
      const w = randomMatrix(type, N, K, 11);
      const g = values(M * N, 12);
      const grad = (threads: number): Float32Array => {
        const before = addon!.setThreads(threads);
        try {
          const dx = new Float32Array(M * K).fill(NaN); // every element must be written
          addon!.qmatmulBackward(code[type], g, M, N, w.blocks, K, dx);
          return dx;
        } finally {
          addon!.setThreads(before);
        }
      };
      const one = grad(1);
      const d = diffOverScale(one, qmatmulBackward(g, M, w)); // f32 sums of 200 terms in another order
      assert.ok(d < 1e-5, String(d));
      assert.deepEqual(grad(2), one);
    });
  }

  // The packed layout ("x16" with AVX-512 VNNI, "x8" with AVX2; made once per weight by the backend).
  const packed = addon && addon.qrepackBytes(8, 16, 32) > 0;
  const runPacked = (type: QuantType, x: Float32Array, M: number, w: QuantizedMatrix): Float32Array => {
    const p = new Uint8Array(addon!.qrepackBytes(code[type], w.rows, w.cols));
    addon!.qrepack(code[type], w.blocks, w.rows, w.cols, p);
    const y = new Float32Array(M * w.rows);
    addon!.qmatmulPacked(code[type], x, M, w.cols, p, w.rows, y);
    return y;
  };

  for (const type of TYPES) {
    it(`${type} packed: matches the js reference, whatever the batch and thread count`, { skip: !packed }, () => {
      for (const [M, K, N] of SHAPES) {
        const w = randomMatrix(type, N, K, 30 + K);
        const x = values(M * K, 40 + N, 2);
        const d = diffOverScale(runPacked(type, x, M, w), qmatmul(x, M, w));
        assert.ok(d < 1e-5, `[${M},${K},${N}]: ${d}`);
      }
      const [M, K, N] = [7, 256, 300]; // 300 rows: the last group of 16 is partly padding
      const w = randomMatrix(type, N, K, 5);
      const x = values(M * K, 6);
      const before = addon!.setThreads(1);
      try {
        const batch1 = runPacked(type, x, M, w);
        addon!.setThreads(2);
        assert.deepEqual(runPacked(type, x, M, w), batch1);
        for (const m of [0, 3, 6])
          assert.deepEqual(
            runPacked(type, x.slice(m * K, (m + 1) * K), 1, w),
            batch1.subarray(m * N, (m + 1) * N),
            `row ${m}`,
          );
        // quantizedMatmul on the native backend runs the packed layout
        const y = k.withBackend('native', () => k.quantizedMatmul(k.Tensor.fromStorage(x, [M, K], 'f32'), w));
        assert.deepEqual(Float32Array.from(y.toFlatArray()), batch1);
      } finally {
        addon!.setThreads(before);
      }
    });
  }

  // Every path takes the same f32 steps on the same exact block sums (qmatmul.cpp), so this CPU's
  // packed kernel (AVX2 or AVX-512 VNNI) and the scalar path give the same bits. The scalar path is
  // chosen once per process: a child with KNOBS_QMATMUL_SCALAR=1 computes it.
  it(`${addon?.qmatmulIsa()} = the scalar path, bit for bit (both types, tiles of 1–4 rows, a partial group)`, () => {
    const cases = TYPES.flatMap((type) =>
      [
        [1, 768, 64],
        [7, 96, 37],
        [16, 2048, 20],
      ].map(([M, K, N], i) => {
        const w = randomMatrix(type, N!, K!, 50 + i);
        return { type, M: M!, w, x: values(M! * K!, 60 + i, 3) };
      }),
    );
    // Activations whose q8_0 quantization meets exact ties: each block's largest |x| is 127, so
    // x/d is x itself and ±k.5 must round away from zero (round-half-even would differ), next to
    // values one ulp either side of .5.
    const ties = [127, -0.5, 0.5, 1.5, -2.5, 126.5, -126.5, 0.49999997, -0.49999997, 0.50000006, 3.5, -3.5];
    for (const type of TYPES) {
      const w = randomMatrix(type, 24, 64, 70);
      const x = Float32Array.from(
        { length: 3 * 64 },
        (_, i) => ties[i % 32 < ties.length ? i % 32 : 0]! * (i % 64 < 32 ? 1 : -1),
      );
      cases.push({ type, M: 3, w, x });
    }
    const scalar = scalarProducts(
      cases.map(({ type, M, w, x }) => ({ type: code[type], M, K: w.cols, N: w.rows, x, w: w.blocks })),
    );
    cases.forEach(({ type, M, w, x }, i) => {
      const what = `${type} [${M}, ${w.cols}, ${w.rows}]`;
      assert.deepEqual(run(type, x, M, w), scalar[i], `${what}: qmatmul`);
      if (packed) assert.deepEqual(runPacked(type, x, M, w), scalar[i], `${what}: qmatmulPacked`);
    });
  });

  it('rejects blocks that do not fit the shape, with the addon error', () => {
    const w = randomMatrix('q8_0', 4, 64, 1);
    assert.throws(
      () => addon!.qmatmul(8, new Float32Array(64), 1, 64, w.blocks.subarray(1), 4, new Float32Array(4)),
      (e: Error & { code?: string }) => e.code === 'E_BACKEND' && /w holds 271 bytes/.test(e.message),
    );
  });
});

interface ProductCase {
  type: number;
  M: number;
  K: number;
  N: number;
  x: Float32Array;
  w: Uint8Array;
}

/** Each case's qmatmul in a child process on the scalar path (KNOBS_QMATMUL_SCALAR=1). */
function scalarProducts(cases: readonly ProductCase[]): Float32Array[] {
  const script = `
    import { loadNativeAddon } from ${JSON.stringify(new URL('../src/backends/native/index.js', import.meta.url).href)};
    const addon = loadNativeAddon();
    if (addon.qmatmulIsa() !== 'scalar') throw new Error('not the scalar path: ' + addon.qmatmulIsa());
    let input = '';
    for await (const chunk of process.stdin) input += chunk;
    const f32 = (b64) => new Float32Array(Uint8Array.from(Buffer.from(b64, 'base64')).buffer);
    const out = JSON.parse(input).map(({ type, M, K, N, x, w }) => {
      const y = new Float32Array(M * N);
      addon.qmatmul(type, f32(x), M, K, Buffer.from(w, 'base64'), N, y);
      return Buffer.from(y.buffer).toString('base64');
    });
    process.stdout.write(JSON.stringify(out));`;
  const bytes = (a: Float32Array | Uint8Array): string =>
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    input: JSON.stringify(cases.map((c) => ({ ...c, x: bytes(c.x), w: bytes(c.w) }))),
    env: { ...process.env, KNOBS_QMATMUL_SCALAR: '1' },
    encoding: 'utf8',
    maxBuffer: 1 << 28,
  });
  assert.equal(child.status, 0, child.stderr);
  return (JSON.parse(child.stdout) as string[]).map(
    (b) => new Float32Array(Uint8Array.from(Buffer.from(b, 'base64')).buffer),
  );
}

describe('QuantizedLinear and quantizeModel', () => {
  const backendsToTry = native ? ['js', 'native'] : ['js'];

  for (const backend of backendsToTry) {
    it(`forward and input gradient on the ${backend} backend; the weight gets none`, () => {
      k.withBackend(backend, () => {
        const lin = new k.Linear(64, 24, { generator: new k.Generator(1) });
        const q = k.QuantizedLinear.fromLinear(lin, 'q8_0');
        assert.equal(q.inFeatures, 64);
        assert.equal(q.outFeatures, 24);
        const x = k.fromArray(values(2 * 3 * 64, 2), [2, 3, 64], { requiresGrad: true });
        const y = q.forward(x);
        assert.deepEqual(y.shape, [2, 3, 24]);
        const ref = lin.forward(x.detach());
        assert.ok(maxRelDiff(y.toFlatArray(), ref.toFlatArray(), 0.5) < 0.02);
        const g = k.fromArray(values(2 * 3 * 24, 3), [2, 3, 24]);
        y.backward(g);
        const W = dequantize(q.weight);
        const gv = g.toFlatArray();
        const want = new Float64Array(6 * 64);
        for (let m = 0; m < 6; m++)
          for (let n = 0; n < 24; n++)
            for (let j = 0; j < 64; j++) want[m * 64 + j] += gv[m * 24 + n]! * W[n * 64 + j]!;
        assert.ok(maxRelDiff(x.grad!.toFlatArray(), want, 1e-2) < 1e-4);
        assert.deepEqual(
          q.namedParameters().map(([n]) => n),
          ['bias'],
        );
        assert.notEqual(q.bias!.grad, null);
      });
    });
  }

  it('a Conv1D ([in, out] weight) quantizes to the same rows as its Linear twin', () => {
    const conv = new k.Conv1D(32, 8, { generator: new k.Generator(4) });
    const q = k.QuantizedLinear.fromLinear(conv, 'q4_0');
    const expected = quantizeMatrix(
      'q4_0',
      Float32Array.from(conv.weight.transpose(0, 1).contiguous().toFlatArray()),
      8,
      32,
    );
    assert.deepEqual(q.weight.blocks, expected.blocks);
  });

  it('rejects wrong input shapes and dtypes, and blocks of the wrong size, with typed errors', () => {
    const q = new k.QuantizedLinear(randomMatrix('q8_0', 4, 64, 1));
    assert.throws(
      () => q.forward(k.zeros([2, 32])),
      (e: Error & { code?: string }) => e.code === 'E_SHAPE' && /end in 64/.test(e.message),
    );
    assert.throws(
      () => q.forward(k.zeros([2, 64], { dtype: 'f64' })),
      (e: Error & { code?: string }) => e.code === 'E_DTYPE',
    );
    const w = randomMatrix('q8_0', 4, 64, 1);
    assert.throws(
      () => new k.QuantizedLinear({ ...w, blocks: w.blocks.subarray(2) }),
      (e: Error & { code?: string }) => e.code === 'E_ARGUMENT' && /272 bytes/.test(e.message),
    );
    assert.throws(() => quantizeMatrix('q4_0', new Float32Array(40), 2, 20), /multiple of 32/);
  });

  const tiny = {
    vocab_size: 50,
    hidden_size: 64,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 32,
    tie_word_embeddings: false,
  };

  for (const type of TYPES) {
    it(`Llama on ${type} weights: logits near f32, generate runs, every Linear swapped`, () => {
      const f32 = new k.Llama(tiny, { seed: 3 });
      const q = new k.Llama(tiny, { seed: 3 });
      const r = k.quantizeModel(q, type);
      assert.equal(r.quantized.length, 2 * 7 + 1);
      assert.deepEqual(r.kept, []);
      assert.ok(q.model.layers.at(0).self_attn.q_proj instanceof k.QuantizedLinear);
      assert.ok(q.lm_head instanceof k.QuantizedLinear);
      const ids = k.fromArray([1, 5, 9, 2, 7], [1, 5], { dtype: 'i32' });
      const a = k.noGrad(() => f32.forward(ids)).toFlatArray();
      const b = k.noGrad(() => q.forward(ids)).toFlatArray();
      let scale = 0;
      for (const v of a) scale = Math.max(scale, Math.abs(v));
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      assert.ok(worst < (type === 'q8_0' ? 0.05 : 0.3) * scale, `${worst} vs scale ${scale}`);
      const out = q.generate([1, 2, 3], { greedy: true, maxNewTokens: 6, eosTokenId: null });
      assert.equal(out.tokens.length, 6);
    });
  }

  it('GPT (Conv1D layers in a ModuleList) runs on q8_0 weights', () => {
    const cfg = { vocab_size: 40, n_positions: 16, n_embd: 32, n_layer: 1, n_head: 2 };
    const f32 = new k.GPT(cfg, { seed: 1 });
    const q = new k.GPT(cfg, { seed: 1 });
    const r = k.quantizeModel(q, 'q8_0');
    assert.equal(r.quantized.length, 4);
    const ids = k.fromArray([1, 2, 3], [1, 3], { dtype: 'i32' });
    const a = k.noGrad(() => f32.forward(ids)).toFlatArray();
    const b = k.noGrad(() => q.forward(ids)).toFlatArray();
    assert.ok(maxRelDiff(b, a, 0.5) < 0.05);
  });

  it('loader hooks: file blocks with rows reordered, K-quant rows re-quantized to q8_0, the swap and its report', () => {
    const [N, K] = [6, 64];
    const W = values(N * K, 11);
    const order = [3, 0, 5, 1, 4, 2];
    const permuted = new Float32Array(N * K);
    order.forEach((from, i) => permuted.set(W.subarray(from * K, (from + 1) * K), i * K));
    const file = quantizeMatrix('q8_0', W, N, K);
    assert.deepEqual(
      quantizedMatrixFromBlocks('q8_0', file.blocks, N, K, order).blocks,
      quantizeMatrix('q8_0', permuted, N, K).blocks,
    );
    assert.equal(quantizedMatrixFromBlocks('q8_0', file.blocks, N, K).blocks, file.blocks); // kept, not copied
    assert.throws(() => quantizedMatrixFromBlocks('q4_0', file.blocks, N, K), /not a q4_0 matrix \[6, 64\]/);

    // A "K-quant" stand-in: q4_0 rows decoded one at a time by the loader's dequantizer.
    const q4 = quantizeMatrix('q4_0', W, N, K);
    const decoded = dequantize(q4);
    const seen: number[] = [];
    const requantized = requantizeToQ8_0(N, K, (i) => (seen.push(i), decoded.slice(i * K, (i + 1) * K)));
    assert.deepEqual(seen, [0, 1, 2, 3, 4, 5]);
    assert.deepEqual(requantized.blocks, quantizeMatrix('q8_0', decoded, N, K).blocks);

    const model = new k.Sequential(new k.Linear(K, N), new k.Linear(N, 2));
    replaceLinear(model, '0', new k.QuantizedLinear(requantized, null, 'q4_K'));
    assert.deepEqual(k.weightKinds(model), { q8_0: 1, f32: 2, requantized_from: { q4_K: 1 } }); // f32: 1's weight and bias
    assert.throws(
      () => replaceLinear(model, '1', new k.QuantizedLinear(requantized)),
      (e: Error & { code?: string }) => e.code === 'E_SHAPE',
    );
  });

  it('leaves a layer whose input is not a multiple of 32 in f32 and says so', () => {
    const model = new k.Sequential(new k.Linear(20, 64), new k.Linear(64, 3));
    const r = k.quantizeModel(model, 'q8_0');
    assert.deepEqual(r.quantized, ['1']);
    assert.deepEqual(r.kept, [{ name: '0', reason: 'input size 20 is not a multiple of 32' }]);
    assert.ok(model.layers[1] instanceof k.QuantizedLinear);
    assert.deepEqual(model.forward(k.zeros([2, 20])).shape, [2, 3]);
  });
});

describe('knobs generate --quantize … --json', () => {
  let root: string;
  let run: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'knobs-qmatmul-'));
    run = join(root, 'run');
    const text = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
    const recipe = {
      name: 'qmatmul-cli',
      model: { type: 'gpt', n_positions: 32, n_embd: 32, n_layer: 1, n_head: 2 },
      data: { type: 'text', path: text, validation_fraction: 0.1 },
      optimizer: { type: 'adam', lr: 0.001 },
      batch_size: 2,
      steps: 1,
      eval_batches: 1,
    };
    await train(parseRecipe(recipe), { out: run });
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('reports the weights per kind, load time and prompt / decode speeds', async () => {
    const args = ['generate', run, '--prompt', 'In the', '--max-tokens', '4', '--temperature', '0', '--json'];
    const f32 = await cli(args);
    assert.equal(f32.code, 0, f32.stderr);
    const a = JSON.parse(f32.stdout);
    assert.deepEqual(a.weights, { f32: 16 });
    const q = await cli([...args, '--quantize', 'q8_0']);
    assert.equal(q.code, 0, q.stderr);
    const b = JSON.parse(q.stdout);
    assert.deepEqual(b.weights, { q8_0: 4, f32: 12 }); // c_attn, attn.c_proj, c_fc, mlp.c_proj; wte, wpe, norms, biases stay f32
    assert.equal(b.ids.length, 4);
    for (const r of [a, b]) {
      for (const key of ['load_s', 'prompt_tokens_per_s', 'tokens_per_s']) assert.ok(r[key] > 0, `${key}: ${r[key]}`);
    }
    const bad = await cli([...args, '--quantize', 'q5_k']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /E_USAGE.*--quantize must be one of q8_0, q4_0, got 'q5_k'/);
  });
});
