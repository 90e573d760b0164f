/**
 * bf16 mixed precision (docs/performance.md): matmul operands rounded to bfloat16, products
 * accumulated and returned in f32.
 *
 * - The js reference (`jsBackend.matmul(a, b, 'bf16')`) rounds each operand to bf16 and multiplies
 *   in f64; its rounding is checked on hand-picked values.
 * - The native kernel (oneDNN, AMX or AVX512_BF16) against that reference: the products of bf16
 *   numbers are exact in f32, so the two differ only by f32 summation order: |Δ| ≤ 1e-6 · K ·
 *   max|a| · max|b|. Layouts: transposed, sliced, batched, broadcast, 1-row, K = 0, sizes that
 *   split across threads.
 * - Conformance: every matmul golden (test/fixtures/goldens/linalg.json, torch 1.13, f64 truth),
 *   forward and gradients, run in bf16 must be within the bf16 bound 2⁻⁷ · (|a|·|b|) of the truth
 *   (each operand's rounding error ≤ 2⁻⁹ relative; 2⁻⁷ leaves room for the f32 sums), where
 *   |a|·|b| is the same computation on absolute values. At least one value must differ from the
 *   f32 run (else bf16 did not run).
 * - Refusal: on a CPU without bf16 (oneDNN capped with DNNL_MAX_CPU_ISA=AVX512_CORE) `knobs train
 *   --precision bf16` fails with E_BACKEND before writing anything; the js backend refuses too.
 * - A short GPT run in bf16 and in f32 (real text) end within 2% of each other's validation loss.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import type { KernelView } from '../src/backends/backend.js';
import { jsBackend } from '../src/backends/js/index.js';
import { roundToBf16 } from '../src/backends/js/math.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { type GoldenCase, decodeAll, loadCases } from './harness/fixtures.js';
import { applyView, buildInputs, callOp, weightedLoss } from './harness/run.js';
import { cli } from './harness/cli.js';

const native = loadNativeBackend();
const bf16Here = native !== null && loadNativeAddon()!.info().bf16;
const skip = bf16Here ? false : `no bf16 here: ${native ? 'the CPU or oneDNN lacks bf16' : nativeLoadError()}`;
if (native && !k.backends().includes('native')) k.registerBackend(native);

function view(t: Tensor): KernelView {
  return t as unknown as KernelView;
}

describe('bf16 rounding (js reference)', () => {
  it('rounds to nearest, ties to even; keeps NaN, Inf, zero sign', () => {
    assert.equal(roundToBf16(1), 1);
    assert.equal(roundToBf16(1 + 2 ** -8), 1); // tie between 1 and 1 + 2⁻⁷: even (1)
    assert.equal(roundToBf16(1 + 3 * 2 ** -8), 1 + 2 ** -6); // tie: even is 1 + 2⁻⁶
    assert.equal(roundToBf16(1 + 2 ** -8 + 2 ** -12), 1 + 2 ** -7); // above the tie
    assert.equal(roundToBf16(Math.fround(3.14159)), 3.140625);
    assert.ok(Number.isNaN(roundToBf16(NaN)));
    assert.equal(roundToBf16(Infinity), Infinity);
    assert.ok(Object.is(roundToBf16(-0), -0));
    assert.equal(roundToBf16(3.4e38), Infinity); // beyond bf16's largest finite value (≈ 3.39e38)
  });

  it('js matmul in bf16 is the f64 product of the rounded operands', () => {
    const a = k.fromArray([1 + 2 ** -8 + 2 ** -12, 3], [1, 2]);
    const b = k.fromArray([1, 1 + 2 ** -10], [2, 1]);
    const out = jsBackend.matmul(view(a), view(b), 'bf16') as Float32Array;
    assert.equal(out[0], Math.fround(1 + 2 ** -7 + 3));
    const f32 = jsBackend.matmul(view(a), view(b)) as Float32Array;
    assert.notEqual(out[0], f32[0]);
  });
});

describe('bf16 matmul: native against the js reference', { skip }, () => {
  const g = new k.Generator(7);
  const cases: [string, () => [Tensor, Tensor]][] = [
    ['plain 64×48·48×40', () => [k.randn([64, 48], { generator: g }), k.randn([48, 40], { generator: g })]],
    ['a transposed', () => [k.randn([48, 64], { generator: g }).transpose(0, 1), k.randn([48, 40], { generator: g })]],
    ['b transposed', () => [k.randn([64, 48], { generator: g }), k.randn([40, 48], { generator: g }).transpose(0, 1)]],
    [
      'a sliced (step 2)',
      () => [k.randn([128, 48], { generator: g }).slice(0, 0, 128, 2), k.randn([48, 40], { generator: g })],
    ],
    ['batched, small products', () => [k.randn([6, 5, 7], { generator: g }), k.randn([6, 7, 3], { generator: g })]],
    [
      'batch broadcast (stride 0)',
      () => [k.randn([1, 9, 16], { generator: g }).expand([4, 9, 16]), k.randn([4, 16, 8], { generator: g })],
    ],
    ['one row', () => [k.randn([1, 300], { generator: g }), k.randn([300, 70], { generator: g })]],
    ['K = 0', () => [k.zeros([5, 0]), k.zeros([0, 6])]],
    [
      'split across threads 300×200·200×260',
      () => [k.randn([300, 200], { generator: g }), k.randn([200, 260], { generator: g })],
    ],
    [
      'a and b transposed, split across threads',
      () => [
        k.randn([200, 300], { generator: g }).transpose(0, 1),
        k.randn([260, 200], { generator: g }).transpose(0, 1),
      ],
    ],
    [
      'large values',
      () => [k.mul(k.randn([40, 30], { generator: g }), 1e4), k.mul(k.randn([30, 20], { generator: g }), 1e4)],
    ],
  ];
  for (const [name, make] of cases) {
    it(name, () => {
      const [a, b] = make();
      const r = a.rank;
      const K = a.shape[r - 1]!;
      const nat = k.withBackend('native', () => k.withMatmulPrecision('bf16', () => k.matmul(a, b)));
      const ref = k.fromArray(
        jsBackend.matmul(view(a.contiguous()), view(b.contiguous()), 'bf16') as Float32Array,
        nat.shape,
      );
      const maxAbs = (t: Tensor) => t.toFlatArray().reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      const tol = 1e-6 * Math.max(K, 1) * maxAbs(a) * maxAbs(b);
      const got = nat.toFlatArray(),
        want = ref.toFlatArray();
      assert.equal(got.length, want.length);
      for (let i = 0; i < got.length; i++)
        assert.ok(Math.abs(got[i]! - want[i]!) <= tol, `[${i}] ${got[i]} vs ${want[i]} (tol ${tol})`);
    });
  }

  it('the native backend advertises bf16 and profiles it as matmul:bf16', () => {
    assert.deepEqual(native!.matmulPrecisions?.(), ['f32', 'bf16']);
    const d = native!.describe();
    assert.match(String(d.bf16), /bf16/, 'oneDNN implementation name');
  });
});

describe('bf16 conformance: the matmul goldens within the bf16 bound', { skip }, () => {
  const cases = loadCases().filter((c) => c.op === 'matmul');
  let differs = 0;
  const run = (c: GoldenCase, abs: boolean) => {
    const built = buildInputs(c, abs ? 'f64' : 'f32');
    // The envelope's leaves are |x| themselves (so their gradients are |g|·|other operand|).
    const absLeaf = new Map(
      built.leaves.map((l) => [
        l,
        k.fromArray(l.toFlatArray().map(Math.abs), l.shape, { dtype: 'f64', requiresGrad: l.requiresGrad }),
      ]),
    );
    const leaves = abs ? built.leaves.map((l) => absLeaf.get(l)!) : built.leaves;
    const args = abs ? leaves.map((l, i) => applyView(l, c.inputs[i]!.view)) : built.args;
    const outs = callOp(c, args);
    const upstream = c.upstream.map((u) => (u ? decodeAll(u).map((x) => (abs ? Math.abs(x) : x)) : null));
    const loss = weightedLoss(outs, upstream, abs ? 'f64' : 'f32');
    loss?.backward();
    return { outs: outs.map((o) => o.toFlatArray()), grads: leaves.map((l) => l.grad?.toFlatArray() ?? null) };
  };
  for (const c of cases) {
    it(c.id, () => {
      const got = k.withBackend('native', () => k.withMatmulPrecision('bf16', () => run(c, false)));
      const f32 = k.withBackend('native', () => run(c, false));
      const envelope = k.withBackend('js', () => run(c, true)); // |a|·|b| and its gradients, in f64
      const check = (what: string, g: number[], truth: number[], env: number[], plain: number[]) => {
        assert.equal(g.length, truth.length, `${what}: length`);
        for (let i = 0; i < g.length; i++) {
          const bound = 2 ** -7 * env[i]! + 1e-6;
          assert.ok(Math.abs(g[i]! - truth[i]!) <= bound, `${what}[${i}]: ${g[i]} vs ${truth[i]} (bound ${bound})`);
          if (g[i] !== plain[i]) differs++;
        }
      };
      c.outputs.forEach((o, i) =>
        check(`output ${i}`, got.outs[i]!, decodeAll(o.data64!), envelope.outs[i]!, f32.outs[i]!),
      );
      c.grads64.forEach((g, i) => {
        if (!g || !got.grads[i]) return;
        check(`grad ${i}`, got.grads[i]!, decodeAll(g), envelope.grads[i]!, f32.grads[i]!);
      });
    });
  }
  it('bf16 really ran (some values differ from f32)', () => {
    assert.ok(differs > 0);
  });
});

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const RECIPE = {
  name: 'bf16-gpt',
  model: { type: 'gpt', n_positions: 32, n_embd: 64, n_layer: 2, n_head: 2, dropout: 0 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adamw', lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.1 },
  batch_size: 8,
  steps: 40,
  clip_grad_norm: 1.0,
  log_every: 40,
  eval_batches: 4,
};

describe('knobs train --precision bf16', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-bf16-'));
    await writeFile(join(dir, 'recipe.json'), JSON.stringify(RECIPE));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('a short GPT run in bf16 ends within 2% of f32 (validation loss), and not bitwise equal', { skip }, async () => {
    const loss = async (precision: string) => {
      const r = await cli([
        'train',
        join(dir, 'recipe.json'),
        '--out',
        join(dir, precision),
        '--precision',
        precision,
        '--json',
      ]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout).lastEval.eval_loss as number;
    };
    const f32 = await loss('f32');
    const bf16 = await loss('bf16');
    assert.ok(Math.abs(bf16 - f32) / f32 <= 0.02, `bf16 ${bf16} vs f32 ${f32}`);
    assert.notEqual(bf16, f32);
  });

  it(
    'refused with E_BACKEND on a CPU without bf16, before anything is written',
    { skip: native ? false : `${nativeLoadError()}` },
    async () => {
      const out = join(dir, 'refused');
      const r = await cli(['train', join(dir, 'recipe.json'), '--out', out, '--precision', 'bf16'], {
        env: { ...process.env, DNNL_MAX_CPU_ISA: 'AVX512_CORE' },
      });
      assert.equal(r.code, 1);
      assert.equal(r.stdout, '');
      assert.match(
        r.stderr,
        /error \[E_BACKEND\]: bf16 precision needs bf16 matrix instructions \(AVX512_BF16 or AMX\)/,
      );
      // capped at AVX512_CORE: that ISA, or a lesser one on a CPU without AVX-512
      assert.match(r.stderr, /oneDNN's ISA is (avx512_core|avx2|avx|sse41)\. /);
      assert.equal(existsSync(out), false);
    },
  );

  it('--precision takes f32 or bf16 only', async () => {
    const r = await cli(['train', join(dir, 'recipe.json'), '--out', join(dir, 'x'), '--precision', 'f16']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--precision must be f32 or bf16, got 'f16'/);
  });

  it('the js backend refuses bf16 precision', () => {
    k.withBackend('js', () =>
      assert.throws(
        () => k.setMatmulPrecision('bf16'),
        (e: Error & { code?: string }) => e.code === 'E_BACKEND',
      ),
    );
    assert.equal(k.getMatmulPrecision(), 'f32');
  });
});
