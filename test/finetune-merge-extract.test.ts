/**
 * `knobs merge` and `knobs extract-lora`, and the SVD behind extraction:
 *  - svd.ts against numpy's LAPACK SVD (scripts/gen_svd_fixtures.py): singular values, the
 *    Eckart–Young error of the rank-r cut, the energy share, orthonormal factors;
 *  - on a byte-level GPT base trained here with a LoRA adapter tuned here: merged logits equal
 *    base + adapter logits (|a − b| ≤ 1e-5 + 1e-5·|b|), unmerge restores max|W′ − W| ≤ 1e-6·max|W|,
 *    `diff BASE MERGED` moves exactly the targeted weights, and extract-lora at the adapter's rank
 *    keeps all the difference's energy and reproduces the merged logits;
 *  - bad input: an existing --out, models of different sizes.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { type Matrix, exactSvd, matmulMatrix, matrix, truncatedSvd } from '../src/finetune/svd.js';
import { diff } from '../src/inspect/diff.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { fromArray } from '../src/ops/creation.js';
import type { Tensor } from '../src/tensor.js';
import { cliInProcess } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';

interface SvdCase {
  name: string;
  rows: number;
  cols: number;
  r: number;
  matrix: number[];
  singular_values: number[];
  best_error: number;
  energy_share: number;
}
const GOLDENS = JSON.parse(readFileSync(join(repoRoot(), 'test/fixtures/svd/svd.json'), 'utf8')) as {
  cases: SvdCase[];
};

function orthonormalError(m: Matrix, byColumns: boolean): number {
  const g = byColumns ? matmulMatrix(m, m, true) : matmulMatrix(m, { rows: m.cols, cols: m.rows, data: transpose(m) });
  let e = 0;
  for (let i = 0; i < g.rows; i++)
    for (let j = 0; j < g.cols; j++) e = Math.max(e, Math.abs(g.data[i * g.cols + j]! - (i === j ? 1 : 0)));
  return e;
}
function transpose(m: Matrix): Float64Array {
  const out = new Float64Array(m.data.length);
  for (let i = 0; i < m.rows; i++) for (let j = 0; j < m.cols; j++) out[j * m.rows + i] = m.data[i * m.cols + j]!;
  return out;
}

describe('truncated SVD against numpy', () => {
  for (const c of GOLDENS.cases) {
    it(`${c.name} (${c.rows}×${c.cols}, rank ${c.r})`, () => {
      const m = matrix(c.rows, c.cols, Float64Array.from(c.matrix));
      const top = c.singular_values[0]!;
      const full = exactSvd(m);
      c.singular_values.forEach((s, i) =>
        assert.ok(Math.abs(full.S[i]! - s) <= 1e-12 * top, `S[${i}] ${full.S[i]} vs ${s}`),
      );
      const t = truncatedSvd(m, c.r);
      assert.equal(t.S.length, c.r);
      for (let i = 0; i < c.r; i++)
        assert.ok(Math.abs(t.S[i]! - c.singular_values[i]!) <= 1e-9 * top, `truncated S[${i}]`);
      assert.ok(orthonormalError(t.U, true) < 1e-10, 'U has orthonormal columns');
      assert.ok(orthonormalError(t.Vt, false) < 1e-10, 'Vt has orthonormal rows');
      // The rank-r cut is the best one: its error is numpy's √(Σ_{i≥r} S²).
      const us = matrix(
        t.U.rows,
        t.U.cols,
        t.U.data.map((x, k) => x * t.S[k % t.U.cols]!),
      );
      const rec = matmulMatrix(us, t.Vt);
      const err = Math.sqrt(rec.data.reduce((s, x, k) => s + (x - m.data[k]!) ** 2, 0));
      assert.ok(Math.abs(err - c.best_error) <= 1e-9 * top, `error ${err} vs best ${c.best_error}`);
      assert.ok(Math.abs(t.capturedEnergy / t.totalEnergy - c.energy_share) < 1e-12);
    });
  }
});

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const data = { type: 'text', path: TEXT, validation_fraction: 0.1 };
const IDS = fromArray([65, 110, 100, 32, 71, 111, 100, 32, 115, 97, 105, 100], [1, 12], { dtype: 'i32' });
const logits = (m: { forward(x: Tensor): Tensor }): Float32Array => m.forward(IDS).contiguousStorage() as Float32Array;

describe('merge and extract-lora on a tuned base', () => {
  let dir: string;
  const path = (n: string): string => join(dir, n);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-merge-'));
    const base = {
      name: 'merge-base',
      model: { type: 'gpt', n_positions: 32, n_embd: 32, n_layer: 2, n_head: 2 },
      data,
      optimizer: { type: 'adamw', lr: 0.003 },
      batch_size: 8,
      steps: 20,
      log_every: 10,
      eval_batches: 2,
    };
    const lora = {
      name: 'merge-lora',
      lora: { r: 4, lora_alpha: 16, target_modules: ['c_attn', 'c_fc'] },
      data,
      optimizer: { type: 'adamw', lr: 0.02 },
      batch_size: 8,
      steps: 8,
      log_every: 4,
      eval_batches: 1,
    };
    await writeFile(path('base.json'), JSON.stringify(base));
    await writeFile(path('lora.json'), JSON.stringify(lora));
    for (const args of [
      ['train', path('base.json'), '--out', path('base')],
      ['tune', path('base'), path('lora.json'), '--out', path('lora')],
      ['merge', path('base'), path('lora'), '--out', path('merged')],
    ]) {
      const r = await cliInProcess(args);
      assert.equal(r.code, 0, `${args[0]}: ${r.stderr}`);
    }
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('merged logits equal base + adapter logits; unmerge restores the base', async () => {
    const withAdapter = await openLanguageModel(path('base'), { adapters: [path('lora')] });
    const expected = logits(withAdapter.model);
    const merged = logits((await openLanguageModel(path('merged'))).model);
    expected.forEach((b, i) => assert.ok(Math.abs(merged[i]! - b) <= 1e-5 + 1e-5 * Math.abs(b), `logit ${i}`));

    const before = new Map(
      [...withAdapter.model.stateDict()].map(([n, t]) => [n, Float32Array.from(t.contiguousStorage() as Float32Array)]),
    );
    const adapter = withAdapter.adapters[0]!;
    adapter.merge();
    adapter.unmerge();
    for (const [name, t] of withAdapter.model.stateDict()) {
      const w = before.get(name)!;
      const now = t.contiguousStorage() as Float32Array;
      const scale = w.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      const moved = w.reduce((m, x, i) => Math.max(m, Math.abs(now[i]! - x)), 0);
      assert.ok(moved <= 1e-6 * scale, `${name}: ${moved} > 1e-6 · ${scale}`);
    }
  });

  it('diff BASE MERGED shows exactly the targeted weights moved', async () => {
    const d = await diff(join(path('base'), 'model.safetensors'), join(path('merged'), 'model.safetensors'));
    const changed = d.tensors
      .filter((t) => t.status !== 'same')
      .map((t) => t.name)
      .sort();
    assert.deepEqual(changed, [
      'h.0.attn.c_attn.weight',
      'h.0.mlp.c_fc.weight',
      'h.1.attn.c_attn.weight',
      'h.1.mlp.c_fc.weight',
    ]);
  });

  it('inspect ADAPTER and diff BASE ADAPTER report each module; the effect equals what merging moves', async () => {
    const ins = await cliInProcess(['inspect', path('lora'), '--json']);
    assert.equal(ins.code, 0, ins.stderr);
    const info = JSON.parse(ins.stdout);
    assert.equal(info.modules.length, 4);
    assert.ok(info.modules.every((m: { r: number; scaling: number }) => m.r === 4 && m.scaling === 4));
    assert.match(info.base_digest, /^sha256:/);
    const eff = await cliInProcess(['diff', path('base'), path('lora'), '--json']);
    assert.equal(eff.code, 0, eff.stderr);
    const d = await diff(join(path('base'), 'model.safetensors'), join(path('merged'), 'model.safetensors'));
    for (const m of JSON.parse(eff.stdout).modules as { module: string; rel_change: number }[]) {
      const moved = d.tensors.find((t) => `transformer.${t.name}` === `${m.module}.weight`)!;
      assert.ok(
        Math.abs(moved.rel_l2! - m.rel_change) <= 1e-5 * m.rel_change,
        `${m.module}: ${moved.rel_l2} vs ${m.rel_change}`,
      );
    }
    const text = await cliInProcess(['inspect', path('lora')]);
    assert.match(text.stdout, /PEFT LoRA adapter, 4 modules/);
  });

  it('extract-lora at the adapter rank keeps all the energy and reproduces the merged model', async () => {
    const r = await cliInProcess([
      'extract-lora',
      path('base'),
      path('merged'),
      '--rank',
      '4',
      '--out',
      path('extracted'),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.ok(result.energy_share > 1 - 1e-9, `energy ${result.energy_share}`);
    assert.deepEqual(result.layers.map((l: { module: string }) => l.module).sort(), [
      'transformer.h.0.attn.c_attn',
      'transformer.h.0.mlp.c_fc',
      'transformer.h.1.attn.c_attn',
      'transformer.h.1.mlp.c_fc',
    ]);
    assert.deepEqual(result.uncaptured, []);
    const merged = logits((await openLanguageModel(path('merged'))).model);
    const extracted = logits((await openLanguageModel(path('base'), { adapters: [path('extracted')] })).model);
    merged.forEach((b, i) => assert.ok(Math.abs(extracted[i]! - b) <= 1e-4 + 1e-4 * Math.abs(b), `logit ${i}`));

    const low = await cliInProcess([
      'extract-lora',
      path('base'),
      path('merged'),
      '--rank',
      '1',
      '--out',
      path('rank1'),
      '--json',
    ]);
    assert.equal(low.code, 0, low.stderr);
    const share = JSON.parse(low.stdout).energy_share;
    assert.ok(share > 0.2 && share < 1 - 1e-6, `rank 1 keeps part of the energy, got ${share}`);
  });

  it('refuses an existing --out and models of different sizes', async () => {
    const again = await cliInProcess(['merge', path('base'), path('lora'), '--out', path('merged')]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists/);
    const other = {
      name: 'other',
      model: { type: 'gpt', n_positions: 32, n_embd: 16, n_layer: 2, n_head: 2 },
      data,
      optimizer: { type: 'adamw', lr: 0.003 },
      batch_size: 4,
      steps: 1,
    };
    await writeFile(path('other.json'), JSON.stringify(other));
    assert.equal((await cliInProcess(['train', path('other.json'), '--out', path('other')])).code, 0);
    const bad = await cliInProcess(['extract-lora', path('base'), path('other'), '--rank', '2', '--out', path('x')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /E_FORMAT.*same architecture and size/);
    assert.ok(!existsSync(path('x')));
    const wrongBase = await cliInProcess(['merge', path('other'), path('lora'), '--out', path('y')]);
    assert.equal(wrongBase.code, 1);
    assert.ok(!existsSync(path('y')));
  });
});
