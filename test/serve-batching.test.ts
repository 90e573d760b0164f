/**
 * Continuous batching (src/serve/): the batch-invariant kernels, the batched Llama forward against
 * the model's own forward, the KV budget, and the evidence — sixteen concurrent requests
 * (mixed prompt lengths, adapters, seeded sampling and greedy) give the same tokens and the same
 * logits, bit for bit, as each request run alone, at 1 and 2 threads.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { GGML_TYPE_ID, packedOf } from '../src/backends/native/index.js';
import { AdapterSet } from '../src/finetune/adapter-set.js';
import { quantizeMatrix, quantizeModel } from '../src/nn/quantized-linear.js';
import { BatchedLlama } from '../src/serve/batched-llama.js';
import { BatchEngine, KvBudgetError, type SequenceRequest } from '../src/serve/engine.js';
import { PagedKvCache } from '../src/serve/paged-kv.js';
import {
  type Trace,
  maxRelDiff,
  randoms,
  saveRandomAdapters,
  sixteenRequests,
  traced,
  tinyLlamaConfig,
} from './harness/batching.js';
import { addon, skip } from './harness/native.js';

const CONFIG = tinyLlamaConfig();

/** The last row of model.forward(ids): the unbatched reference. */
function referenceLogits(model: k.Llama, ids: readonly number[]): Float32Array {
  const logits = k.noGrad(() => model.forward(k.fromArray(ids, [1, ids.length], { dtype: 'i32' })));
  const V = CONFIG.vocab_size;
  return (logits.contiguousStorage() as Float32Array).slice((ids.length - 1) * V, ids.length * V);
}

describe('batch-invariant kernels', { skip }, () => {
  it('biMatmul: a row is the same bits in any batch and at any thread count, and matches f64', () => {
    const [M, K, N] = [37, 200, 75];
    const x = randoms(M * K, 1, 1);
    const w = randoms(N * K, 2, 0.1);
    const run = (xs: Float32Array, m: number): Float32Array => {
      const y = new Float32Array(m * N);
      addon!.biMatmul(xs, m, K, w, N, y);
      return y;
    };
    const before = addon!.setThreads(1);
    try {
      const one = run(x, M);
      for (const t of [2, 3]) {
        addon!.setThreads(t);
        assert.deepEqual(run(x, M), one, `threads ${t}`);
      }
      for (const m of [0, 5, 36])
        assert.deepEqual(run(x.slice(m * K, (m + 1) * K), 1), one.subarray(m * N, (m + 1) * N));
      assert.deepEqual(run(x.slice(4 * K, 7 * K), 3), one.subarray(4 * N, 7 * N));
      for (let m = 0; m < M; m += 9)
        for (let n = 0; n < N; n += 7) {
          let ref = 0;
          for (let i = 0; i < K; i++) ref += x[m * K + i]! * w[n * K + i]!;
          assert.ok(Math.abs(one[m * N + n]! - ref) < 1e-4, `[${m}, ${n}]`);
        }
    } finally {
      addon!.setThreads(before);
    }
  });

  it('biQmatmulPacked: row r of an M-row product is the 1-row product bit for bit, = qmatmulPacked', (t) => {
    const [K, N] = [96, 76]; // 3 blocks; 4.75 groups of 16 columns (x16) or 9.5 of 8 (x8): the last is partial
    const x = randoms(64 * K, 3, 1);
    for (const type of ['q8_0', 'q4_0'] as const) {
      const w = quantizeMatrix(type, randoms(N * K, 4, 0.1), N, K);
      const id = GGML_TYPE_ID[type];
      const packed = packedOf(addon!, w);
      if (!packed) return t.skip('no packed layout on this CPU (needs AVX2 or AVX-512 VNNI)');
      const run = (m0: number, M: number, threads: number): Float32Array => {
        addon!.setThreads(threads);
        const y = new Float32Array(M * N);
        addon!.biQmatmulPacked(id, x.slice(m0 * K, (m0 + M) * K), M, K, packed, N, y);
        return y;
      };
      const before = addon!.setThreads(1);
      try {
        const alone = Array.from({ length: 64 }, (_, m) => run(m, 1, 1));
        for (const M of [1, 3, 16, 64])
          for (const threads of [1, 2]) {
            const m0 = 64 - M; // the last rows: in a 64-row batch they sit in other tiles than alone
            const y = run(m0, M, threads);
            for (let r = 0; r < M; r++)
              assert.deepEqual(
                y.subarray(r * N, (r + 1) * N),
                alone[m0 + r],
                `${type} M ${M} row ${r} threads ${threads}`,
              );
          }
        const old = new Float32Array(64 * N);
        addon!.qmatmulPacked(id, x, 64, K, packed, N, old);
        assert.deepEqual(run(0, 64, 1), old, `${type}: the same bits as qmatmulPacked`);
        const plain = new Float32Array(64 * N);
        addon!.qmatmul(id, x, 64, K, w.blocks, N, plain);
        assert.ok(maxRelDiff(old, plain) < 1e-5, `${type}: the blocks' product agrees`);
      } finally {
        addon!.setThreads(before);
      }
    }
  });

  /** Row r's output [H, D] checked against a dense softmax over its positions in f64. */
  type AttentionShape = { H: number; KVH: number; D: number; block: number; stride: number };
  type AttentionPools = { kpool: Float32Array; vpool: Float32Array; tables: Int32Array; lens: Int32Array };

  /** Row r of a batch's attention computed as a batch of one: its query, block table and length only. */
  function attentionAlone(
    q: Float32Array,
    r: number,
    shape: AttentionShape,
    pools: AttentionPools,
    scale: number,
  ): Float32Array {
    const { H, KVH, D, block, stride } = shape;
    const { kpool, vpool, tables, lens } = pools;
    const alone = new Float32Array(H * D);
    const rowTable = tables.slice(r * stride, (r + 1) * stride);
    const rowQ = q.slice(r * H * D, (r + 1) * H * D);
    addon!.biPagedAttention(
      rowQ,
      1,
      H,
      D,
      kpool,
      vpool,
      KVH,
      block,
      rowTable,
      stride,
      lens.slice(r, r + 1),
      scale,
      alone,
    );
    return alone;
  }

  function checkAttention(
    q: Float32Array,
    out: Float32Array,
    r: number,
    shape: AttentionShape,
    pools: AttentionPools,
    scale: number,
  ): void {
    const { H, KVH, D, block, stride } = shape;
    const { kpool, vpool, tables, lens } = pools;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / KVH));
      const at = (t: number): number =>
        ((tables[r * stride + Math.floor(t / block)]! * KVH + g) * block + (t % block)) * D;
      const s = Array.from({ length: lens[r]! }, (_, t) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(r * H + h) * D + d]! * kpool[at(t) + d]!;
        return dot * scale;
      });
      const mx = Math.max(...s);
      const p = s.map((v) => Math.exp(v - mx));
      const z = p.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        const ref = p.reduce((acc, pt, t) => acc + pt * vpool[at(t) + d]!, 0) / z;
        assert.ok(Math.abs(out[(r * H + h) * D + d]! - ref) < 1e-5, `row ${r} head ${h}`);
      }
    }
  }

  it('biPagedAttention: each row reads only its own blocks and length, as a dense softmax does', () => {
    const [H, KVH, D, block] = [4, 2, 8, 16];
    const blocks = 6;
    const kpool = randoms(blocks * KVH * block * D, 3, 1);
    const vpool = randoms(blocks * KVH * block * D, 4, 1);
    const tables = Int32Array.from([5, 1, 0, 3, 2, 4]); // row 0: blocks 5, 1, 0; row 1: blocks 3, 2, 4
    const lens = Int32Array.from([40, 17]);
    const q = randoms(2 * H * D, 5, 1);
    const out = new Float32Array(2 * H * D);
    addon!.biPagedAttention(q, 2, H, D, kpool, vpool, KVH, block, tables, 3, lens, 0.3, out);
    for (let r = 0; r < 2; r++)
      checkAttention(q, out, r, { H, KVH, D, block, stride: 3 }, { kpool, vpool, tables, lens }, 0.3);
    // Row 1 alone: the same bits.
    const alone = new Float32Array(H * D);
    addon!.biPagedAttention(
      q.slice(H * D),
      1,
      H,
      D,
      kpool,
      vpool,
      KVH,
      block,
      tables.slice(3),
      3,
      lens.slice(1),
      0.3,
      alone,
    );
    assert.deepEqual(alone, out.subarray(H * D));
  });

  it('biPagedAttention, three query heads per KV head and D = 64: each row alone = in the batch, at 1 and 2 threads', () => {
    // The decode model's shape (12 heads over 4 KV heads, D 64): the vectorised path, with lengths
    // below, at and across the 16-position score chunks and blocks.
    const [H, KVH, D, block, stride] = [6, 2, 64, 16, 7];
    const lens = Int32Array.from([1, 16, 17, 100, 37, 33]);
    const R = lens.length;
    const blocks = R * stride;
    const kpool = randoms(blocks * KVH * block * D, 6, 1);
    const vpool = randoms(blocks * KVH * block * D, 7, 1);
    const tables = Int32Array.from({ length: R * stride }, (_, i) => (i * 11) % blocks); // scattered blocks
    const q = randoms(R * H * D, 8, 0.3);
    const before = addon!.setThreads(1);
    try {
      const out = new Float32Array(R * H * D);
      addon!.biPagedAttention(q, R, H, D, kpool, vpool, KVH, block, tables, stride, lens, 0.125, out);
      for (let r = 0; r < R; r++) {
        checkAttention(q, out, r, { H, KVH, D, block, stride }, { kpool, vpool, tables, lens }, 0.125);
        for (const threads of [1, 2]) {
          addon!.setThreads(threads);
          const alone = attentionAlone(q, r, { H, KVH, D, block, stride }, { kpool, vpool, tables, lens }, 0.125);
          assert.deepEqual(alone, out.subarray(r * H * D, (r + 1) * H * D), `row ${r} threads ${threads}`);
        }
      }
      addon!.setThreads(2);
      const out2 = new Float32Array(R * H * D);
      addon!.biPagedAttention(q, R, H, D, kpool, vpool, KVH, block, tables, stride, lens, 0.125, out2);
      assert.deepEqual(out2, out, 'the batch at 2 threads');
    } finally {
      addon!.setThreads(before);
    }
  });

  it('biPagedAttention, other head shapes (groups of 1–5 heads; D with 1–4 vectors a pass and a tail): dense softmax, alone = batched', () => {
    for (const [H, KVH, D] of [
      [4, 4, 128],
      [8, 2, 80],
      [10, 2, 24],
      [3, 1, 112],
      [2, 1, 96],
    ] as const) {
      const [block, stride] = [16, 3];
      const lens = Int32Array.from([33, 1, 48, 16]);
      const R = lens.length;
      const blocks = R * stride;
      const kpool = randoms(blocks * KVH * block * D, 20 + D, 1);
      const vpool = randoms(blocks * KVH * block * D, 21 + D, 1);
      const tables = Int32Array.from({ length: R * stride }, (_, i) => (i * 5) % blocks);
      const q = randoms(R * H * D, 22 + D, 0.3);
      const out = new Float32Array(R * H * D);
      const before = addon!.setThreads(2);
      try {
        addon!.biPagedAttention(q, R, H, D, kpool, vpool, KVH, block, tables, stride, lens, 0.2, out);
        addon!.setThreads(1);
        for (let r = 0; r < R; r++) {
          checkAttention(q, out, r, { H, KVH, D, block, stride }, { kpool, vpool, tables, lens }, 0.2);
          const alone = attentionAlone(q, r, { H, KVH, D, block, stride }, { kpool, vpool, tables, lens }, 0.2);
          assert.deepEqual(alone, out.subarray(r * H * D, (r + 1) * H * D), `H ${H} KVH ${KVH} D ${D} row ${r}`);
        }
      } finally {
        addon!.setThreads(before);
      }
    }
  });

  it('biSwiglu: silu(gate)·up to float precision, including large and tiny gates', () => {
    const n = 4099; // not a multiple of any vector width
    const gate = randoms(n, 9, 4);
    gate.set([0, -0, 88, -88, 100, -100, 1e-30, -1e-30]);
    const up = randoms(n, 10, 1);
    const out = new Float32Array(n);
    addon!.biSwiglu(gate, up, n, out);
    for (let i = 0; i < n; i++) {
      const g = gate[i]!;
      const ref = (g / (1 + Math.exp(-g))) * up[i]!;
      assert.ok(Math.abs(out[i]! - ref) <= 1e-6 * Math.abs(ref) + 1e-37, `gate ${g}: ${out[i]} vs ${ref}`);
    }
  });

  it('bad block tables are refused, not read out of bounds', () => {
    const pool = new Float32Array(2 * 1 * 16 * 4);
    const call = (tables: number[], len: number): void =>
      addon!.biPagedAttention(
        new Float32Array(4),
        1,
        1,
        4,
        pool,
        pool,
        1,
        16,
        Int32Array.from(tables),
        tables.length,
        Int32Array.from([len]),
        1,
        new Float32Array(4),
      );
    assert.throws(() => call([2], 3), /block 2 is not in the pool/);
    assert.throws(() => call([0], 17), /does not fit its table/);
    assert.throws(() => call([0], 0), /does not fit its table/);
  });

  it('biRopeKv: rotate-half at each row position in f32 steps, keys and values into its cache slot; biStoreKv unrotated', () => {
    const [R, H, KVH, D, block, stride, P] = [3, 4, 2, 8, 16, 3, 40];
    const half = D / 2;
    const cos = randoms(P * half, 11, 1);
    const sin = randoms(P * half, 12, 1);
    const q = randoms(R * H * D, 13, 1);
    const kk = randoms(R * KVH * D, 14, 1);
    const v = randoms(R * KVH * D, 15, 1);
    const blocks = 7;
    const kpool = new Float32Array(blocks * KVH * block * D);
    const vpool = new Float32Array(blocks * KVH * block * D);
    const tables = Int32Array.from([6, 2, 0, 1, 0, 0, 5, 3, 4]);
    const positions = Int32Array.from([39, 0, 17]);
    const [q1, k1] = [q.slice(), kk.slice()];
    addon!.biRopeKv(q1, k1, v, R, H, KVH, D, cos, sin, positions, kpool, vpool, block, tables, stride);
    const f = Math.fround;
    for (let r = 0; r < R; r++) {
      const p = positions[r]!;
      const rotate = (x: Float32Array, o: number, j: number): [number, number] => {
        const [a, b, c, s] = [x[o + j]!, x[o + j + half]!, cos[p * half + j]!, sin[p * half + j]!];
        return [f(f(a * c) - f(b * s)), f(f(b * c) + f(a * s))];
      };
      for (let h = 0; h < H; h++)
        for (let j = 0; j < half; j++) {
          const o = (r * H + h) * D;
          assert.deepEqual([q1[o + j], q1[o + j + half]], rotate(q, o, j), `q row ${r} head ${h}`);
        }
      for (let g = 0; g < KVH; g++) {
        const o = (r * KVH + g) * D;
        for (let j = 0; j < half; j++) assert.deepEqual([k1[o + j], k1[o + j + half]], rotate(kk, o, j));
        const at = ((tables[r * stride + Math.floor(p / block)]! * KVH + g) * block + (p % block)) * D;
        assert.deepEqual(kpool.subarray(at, at + D), k1.subarray(o, o + D), `key row ${r} head ${g}`);
        assert.deepEqual(vpool.subarray(at, at + D), v.subarray(o, o + D), `value row ${r} head ${g}`);
      }
    }
    const written = kpool.reduce((n, x) => n + (x !== 0 ? 1 : 0), 0);
    assert.equal(written, R * KVH * D, 'nothing else written');
    // biStoreKv (GPT-2: learned positions) stores without rotating: the rotated keys give the same pools.
    const [kstore, vstore] = [new Float32Array(kpool.length), new Float32Array(vpool.length)];
    addon!.biStoreKv(k1, v, R, KVH, D, positions, kstore, vstore, block, tables, stride);
    assert.deepEqual([kstore, vstore], [kpool, vpool]);
    assert.throws(
      () => addon!.biStoreKv(k1, v, R, KVH, D, Int32Array.from([39, 0, 48]), kstore, vstore, block, tables, stride),
      /row 2: position 48 does not fit its table/,
    );
    const bad = (tab: number[], pos: number, cs = cos): void =>
      addon!.biRopeKv(
        q.slice(0, H * D),
        kk.slice(0, KVH * D),
        v.slice(0, KVH * D),
        1,
        H,
        KVH,
        D,
        cs,
        cs,
        Int32Array.from([pos]),
        kpool,
        vpool,
        block,
        Int32Array.from(tab),
        tab.length,
      );
    assert.throws(() => bad([7], 3), /block 7 is not in the pool/);
    assert.throws(() => bad([0], 16), /position 16 does not fit its table/);
    assert.throws(() => bad([0], -1), /does not fit its table/);
    assert.throws(() => bad([0, 1, 2], 40), /position 40 has no cos\/sin/);
  });

  it('an f16 cache: biRopeKv stores each key and value rounded to f16, biPagedAttention = its f32 run on the widened values', () => {
    const [R, H, KVH, D, block, stride, P] = [5, 6, 2, 64, 16, 7, 120];
    const half = D / 2;
    const cos = randoms(P * half, 21, 1);
    const sin = randoms(P * half, 22, 1);
    const blocks = R * stride;
    const size = blocks * KVH * block * D;
    const [k16, v16] = [new Uint16Array(size), new Uint16Array(size)];
    const [k32, v32] = [new Float32Array(size), new Float32Array(size)];
    const tables = Int32Array.from({ length: R * stride }, (_, i) => (i * 11) % blocks);
    const lens = Int32Array.from([1, 16, 17, 100, 37]);
    // Fill every row's positions through both caches, one position a call, as decode steps do.
    const last = Math.max(...lens);
    for (let p = 0; p < last; p++) {
      const rows = [...lens.keys()].filter((r) => p < lens[r]!);
      const pick = (x: Int32Array): Int32Array =>
        Int32Array.from(rows.flatMap((r) => [...x.subarray(r * stride, (r + 1) * stride)]));
      const qk = randoms(rows.length * H * D, 100 + p, 1);
      const kk = randoms(rows.length * KVH * D, 300 + p, 2);
      const v = randoms(rows.length * KVH * D, 500 + p, 2);
      const positions = Int32Array.from(rows.map(() => p));
      const [q1, k1, q2, k2] = [qk.slice(), kk.slice(), qk.slice(), kk.slice()];
      addon!.biRopeKv(q1, k1, v, rows.length, H, KVH, D, cos, sin, positions, k16, v16, block, pick(tables), stride);
      addon!.biRopeKv(q2, k2, v, rows.length, H, KVH, D, cos, sin, positions, k32, v32, block, pick(tables), stride);
      assert.deepEqual(q1, q2, 'the queries are rotated alike');
    }
    // Stored as round-to-nearest-even halves of what the f32 cache holds, and nothing else written.
    assert.deepEqual(
      k16,
      Uint16Array.from(k32, (x) => k.f32ToF16Bits(x)),
    );
    assert.deepEqual(
      v16,
      Uint16Array.from(v32, (x) => k.f32ToF16Bits(x)),
    );
    const widened = (h: Uint16Array): Float32Array => Float32Array.from(h, (b) => k.f16BitsToF32(b));
    const q = randoms(R * H * D, 23, 0.3);
    const before = addon!.setThreads(1);
    try {
      const want = new Float32Array(R * H * D);
      addon!.biPagedAttention(q, R, H, D, widened(k16), widened(v16), KVH, block, tables, stride, lens, 0.125, want);
      for (const threads of [1, 2]) {
        addon!.setThreads(threads);
        const got = new Float32Array(R * H * D);
        addon!.biPagedAttention(q, R, H, D, k16, v16, KVH, block, tables, stride, lens, 0.125, got);
        assert.deepEqual(got, want, `threads ${threads}`);
        for (let r = 0; r < R; r++) {
          const pools = { kpool: k16 as unknown as Float32Array, vpool: v16 as unknown as Float32Array, tables, lens };
          const alone = attentionAlone(q, r, { H, KVH, D, block, stride }, pools, 0.125);
          assert.deepEqual(alone, want.subarray(r * H * D, (r + 1) * H * D), `row ${r} alone, threads ${threads}`);
        }
      }
    } finally {
      addon!.setThreads(before);
    }
    const out = new Float32Array(H * D);
    const one = (kp: Float32Array | Uint16Array, vp: Float32Array | Uint16Array): void =>
      addon!.biPagedAttention(q.slice(0, H * D), 1, H, D, kp, vp, KVH, block, tables, stride, lens, 0.125, out);
    assert.throws(() => one(k16, v32), /vpool must be a Uint16Array like kpool, got a Float32Array/);
    assert.throws(
      () => one(new Int32Array(size) as unknown as Uint16Array, v16),
      /kpool must be a Float32Array \(f32 cache\) or a Uint16Array \(f16 cache\)/,
    );
    assert.throws(() => one(k16.subarray(1), v16.subarray(1)), /same whole number of \[KVH, block, D\] blocks/);
  });

  it('biAddRmsNorm: x += r then biRmsNorm, bit for bit; without r, biRmsNorm', () => {
    const [M, C] = [5, 200];
    const x = randoms(M * C, 16, 1);
    const r = randoms(M * C, 17, 1);
    const w = randoms(C, 18, 1);
    const [x1, y1, y2] = [x.slice(), new Float32Array(M * C), new Float32Array(M * C)];
    addon!.biAddRmsNorm(x1, r, M, C, w, 1e-6, y1);
    const sum = x.map((v, i) => v + r[i]!);
    assert.deepEqual(x1, sum);
    addon!.biRmsNorm(sum, M, C, w, 1e-6, y2);
    assert.deepEqual(y1, y2);
    addon!.biAddRmsNorm(x1, null, M, C, w, 1e-6, y1);
    assert.deepEqual(x1, sum, 'no residual: x unchanged');
    assert.deepEqual(y1, y2);
  });
});

describe('continuous batching', { skip }, () => {
  let dir = '';
  let model: k.Llama;
  let adapters: AdapterSet;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-batching-'));
    // Two adapters with random (nonzero) B, made on a twin of the base and saved as PEFT directories.
    await saveRandomAdapters(dir, () => new k.Llama(CONFIG, { seed: 0 }), [
      ['a', 11, ['q_proj', 'v_proj']],
      ['b', 12, ['o_proj', 'down_proj', 'gate_proj']],
      ['d', 13, ['k_proj', 'up_proj'], true], // DoRA
      // trained copies of norms, the embedding, a projection and the head beside its deltas
      [
        's',
        14,
        ['v_proj'],
        false,
        {
          modules_to_save: [
            'input_layernorm',
            'layers.1.post_attention_layernorm',
            'model.norm',
            'embed_tokens',
            'o_proj',
            'lm_head',
          ],
        },
      ],
      // other copies of the head and o_proj: two copies of one weight in a step
      ['t', 15, ['q_proj'], false, { modules_to_save: ['o_proj', 'lm_head'] }],
    ]);
    model = new k.Llama(CONFIG, { seed: 0 });
    model.eval();
    adapters = new AdapterSet(model);
    await adapters.load('a', join(dir, 'a'));
    await adapters.load('b', join(dir, 'b'));
    await adapters.load('d', join(dir, 'd'));
    await adapters.load('s', join(dir, 's'));
    await adapters.load('t', join(dir, 't'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const engineOf = (m: k.Llama, mb = 4, prefillChunk = 7): BatchEngine =>
    new BatchEngine(new BatchedLlama(m, addon!), { kvCacheBytes: mb * 2 ** 20, prefillChunk, adapters });

  /** The sixteen requests, on the base and the adapters a, b, d (DoRA), s and t (copies) in turn (or the base only). */
  const sixteen = (withAdapters = true): SequenceRequest[] =>
    sixteenRequests(CONFIG.vocab_size, withAdapters ? [null, 'a', 'b', 'd', 's', 't'] : [null]);

  it('matches the model forward (base, LoRA and DoRA adapters, trained copies) step after step', async () => {
    const engine = engineOf(model);
    for (const name of [null, 'a', 'b', 'd', 's', 't'] as const) {
      const got: Float32Array[] = [];
      const prompt = [1, 5, 9, 33, 20, 7, 64, 3, 3, 12, 40];
      const { tokens } = await engine.submit({
        prompt,
        maxTokens: 6,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: name,
        onToken: (_, logits) => void got.push(logits.slice()),
      });
      await adapters.use(name, () => {
        tokens.forEach((_, i) => {
          const ref = referenceLogits(model, [...prompt, ...tokens.slice(0, i)]);
          assert.ok(maxRelDiff(got[i]!, ref) < 1e-4, `adapter ${name}, step ${i}: ${maxRelDiff(got[i]!, ref)}`);
        });
      });
    }
  });

  it('16 concurrent requests give the tokens and logits each gives alone, at 1 and 2 threads', async () => {
    const before = addon!.setThreads(1);
    try {
      const runs: { threads: number; together: Trace[]; alone: Trace[] }[] = [];
      for (const threads of [1, 2]) {
        addon!.setThreads(threads);
        const engine = engineOf(model);
        const together = await Promise.all(sixteen().map((r) => traced(engine, r)));
        assert.ok(engine.stats.steps < together.reduce((n, t) => n + t.tokens.length, 0), 'requests shared steps');
        const alone: Trace[] = [];
        for (const r of sixteen()) alone.push(await traced(engineOf(model), r));
        runs.push({ threads, together, alone });
        assert.equal(engine.kv.usedBlocks, 0, 'every block came back');
      }
      for (const { threads, together, alone } of runs)
        together.forEach((t, i) => assert.deepEqual(t, alone[i], `threads ${threads}, request ${i}`));
      assert.deepEqual(runs[1]!.together, runs[0]!.together, 'threads 1 and 2 agree');
      const sampled = runs[0]!.together.filter((_, i) => i % 2 === 1);
      assert.ok(new Set(sampled.map((t) => t.tokens.join())).size > 1, 'the requests really differ');
    } finally {
      addon!.setThreads(before);
    }
  });

  it('q8_0 weights: batched equals alone', async () => {
    const q = new k.Llama(CONFIG, { seed: 0 });
    quantizeModel(q, 'q8_0');
    const engine = new BatchEngine(new BatchedLlama(q, addon!), { kvCacheBytes: 4 * 2 ** 20, prefillChunk: 5 });
    const reqs = sixteen()
      .slice(0, 8)
      .map((r) => ({ ...r, adapter: null }));
    const together = await Promise.all(reqs.map((r) => traced(engine, r)));
    for (const [i, r] of reqs.entries()) assert.deepEqual(await traced(engine, r), together[i]);
  });

  it('an f16 KV cache: twice the blocks in one budget, batched equals alone at 1 and 2 threads, near the f32 cache', async () => {
    const f16Of = (): BatchEngine =>
      new BatchEngine(new BatchedLlama(model, addon!), {
        kvCacheBytes: 4 * 2 ** 20,
        kvCacheDtype: 'f16',
        prefillChunk: 7,
        adapters,
      });
    const f16 = f16Of();
    assert.equal(f16.kv.dtype, 'f16');
    assert.equal(f16.kv.totalBlocks, 2 * engineOf(model).kv.totalBlocks);
    assert.ok(f16.kv.keys[0] instanceof Uint16Array);
    const before = addon!.setThreads(1);
    try {
      const runs: Trace[][] = [];
      for (const threads of [1, 2]) {
        addon!.setThreads(threads);
        const engine = f16Of();
        const together = await Promise.all(sixteen().map((r) => traced(engine, r)));
        for (const [i, r] of sixteen().entries())
          assert.deepEqual(await traced(f16Of(), r), together[i], `threads ${threads}, request ${i}`);
        assert.equal(engine.kv.usedBlocks, 0, 'every block came back');
        runs.push(together);
      }
      assert.deepEqual(runs[1], runs[0], 'threads 1 and 2 agree');
    } finally {
      addon!.setThreads(before);
    }
    // The rounding moves the logits a little, not the model: each step's logits against the f32 cache's.
    const prompt = [1, 5, 9, 33, 20, 7, 64, 3, 3, 12, 40];
    const logitsOf = async (engine: BatchEngine): Promise<Float32Array[]> => {
      const got: Float32Array[] = [];
      await engine.submit({
        prompt,
        maxTokens: 6,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
        adjustLogits: (logits) => {
          got.push(logits.slice());
          return logits;
        },
      });
      return got;
    };
    const [a, b] = [await logitsOf(f16Of()), await logitsOf(engineOf(model))];
    assert.notDeepEqual(a[0], b[0], 'the f16 cache is really used');
    a.forEach((x, i) => assert.ok(maxRelDiff(x, b[i]!) < 1e-3, `step ${i}: ${maxRelDiff(x, b[i]!)}`));
    assert.throws(
      () => new PagedKvCache({ layers: 1, kvHeads: 1, headDim: 16 }, 1, 'bf16' as 'f16'),
      (e: unknown) => e instanceof k.ArgumentError && /holds f32 or f16, not bf16/.test(e.message),
    );
  });

  it('the KV budget: a request that can never fit is refused, others wait for room', async () => {
    const blockBytes = PagedKvCache.blockBytes({ layers: 2, kvHeads: 2, headDim: 16 });
    const engine = new BatchEngine(new BatchedLlama(model, addon!), { kvCacheBytes: 5 * blockBytes });
    assert.equal(engine.kv.totalBlocks, 5);
    assert.throws(
      () => new PagedKvCache({ layers: 1, kvHeads: 64, headDim: 128 }, 2 ** 20),
      (e: unknown) =>
        e instanceof k.ArgumentError && /cannot allocate 1048576 blocks .*lower --kv-cache-mb/.test(e.message),
    );
    assert.throws(
      () =>
        engine.submit({
          prompt: [1, 2, 3],
          maxTokens: 100,
          sampling: { greedy: true },
          seed: 0,
          eos: new Set(),
          adapter: null,
        }),
      (e: unknown) =>
        e instanceof KvBudgetError &&
        /needs 7 KV cache blocks.*holds 5; .*raise --kv-cache-mb \(or serve with --kv-cache-dtype f16/.test(e.message),
    );
    // Each needs 2 blocks (20 + 12 − 1 positions): two run at once, the rest wait, all finish.
    let peak = 0;
    const reqs = Array.from({ length: 6 }, (_, i) =>
      engine.submit({
        prompt: Array.from({ length: 20 }, (_, t) => (t + i) % 90),
        maxTokens: 12,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
        onToken: () => void (peak = Math.max(peak, engine.kv.usedBlocks)),
      }),
    );
    const results = await Promise.all(reqs);
    assert.ok(results.every((r) => r.tokens.length === 12 && r.finishReason === 'length'));
    assert.equal(peak, 4);
    assert.equal(engine.kv.usedBlocks, 0);
  });

  it('a callback that throws fails its own request only', async () => {
    const engine = engineOf(model);
    const base = { maxTokens: 5, sampling: { greedy: true }, seed: 0, eos: new Set<number>(), adapter: null };
    const [bad, good] = await Promise.allSettled([
      engine.submit({
        ...base,
        prompt: [1, 2, 3],
        onToken: () => {
          throw new Error('client bug');
        },
      }),
      engine.submit({ ...base, prompt: [4, 5, 6] }),
    ]);
    assert.equal(bad.status, 'rejected');
    assert.match(String((bad as PromiseRejectedResult).reason), /client bug/);
    assert.equal(good.status === 'fulfilled' && good.value.tokens.length, 5);
    assert.equal(engine.kv.usedBlocks, 0);
  });

  it('an abort frees its blocks at once, running or waiting', async () => {
    const engine = engineOf(model, 1);
    const controllers = Array.from({ length: 40 }, () => new AbortController());
    const pending = controllers.map((c, i) =>
      engine.submit({
        prompt: Array.from({ length: 10 + i }, (_, t) => t % 90),
        maxTokens: 50,
        sampling: { greedy: true },
        seed: 0,
        eos: new Set(),
        adapter: null,
        signal: c.signal,
        onToken: (_, __) => {
          if (i % 3 === 0) c.abort();
        },
      }),
    );
    await new Promise((r) => setTimeout(r, 5));
    for (const [i, c] of controllers.entries()) if (i % 3 === 1) c.abort();
    const results = await Promise.all(pending);
    assert.ok(results.some((r) => r.finishReason === 'cancelled'));
    assert.equal(engine.kv.usedBlocks, 0);
    assert.equal(engine.stats.running + engine.stats.waiting, 0);
  });
});
