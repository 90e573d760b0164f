/**
 * Kernel profiling (src/backends/profile.ts, `knobs train --profile`): ops are counted with exact
 * FLOPs where the count is standard, nothing is recorded once the profile is stopped, and a run
 * reports every step but the first. Also: a cast the native addon cannot do (to f16) is
 * dispatched to js by the dispatcher, where traces see it (it used to run js inside native's cast).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { startProfile, stopProfile } from '../src/backends/profile.js';
import { traceKernels } from '../src/backends/dispatch.js';
import { loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { cli } from './harness/cli.js';

const native = loadNativeBackend();
if (native && !k.backends().includes('native')) k.registerBackend(native);

describe('kernel profile', () => {
  for (const backend of native ? ['js', 'native'] : ['js']) {
    it(`${backend}: calls and matmul FLOPs per op; nothing after stop`, () => {
      k.withBackend(backend, () => {
        const a = k.randn([2, 3, 4], { generator: new k.Generator(1) });
        const b = k.randn([2, 4, 5], { generator: new k.Generator(2) });
        startProfile();
        const c = k.matmul(a, b);
        k.add(c, c);
        k.add(c, 1);
        const ops = new Map(stopProfile().map((o) => [o.op, o]));
        k.matmul(a, b); // not counted
        assert.equal(ops.get('matmul')?.calls, 1);
        assert.equal(ops.get('matmul')?.flops, 2 * 2 * 3 * 4 * 5);
        assert.equal(ops.get('binary:add')?.calls, 2);
        assert.equal(ops.get('binary:add')?.flops, 0);
        for (const o of ops.values()) assert.ok(o.seconds >= 0 && Number.isFinite(o.seconds), o.op);
        assert.deepEqual(stopProfile(), []);
      });
    });
  }

  it('profiles do not nest', () => {
    startProfile();
    try {
      assert.throws(() => startProfile(), /already open/);
    } finally {
      stopProfile();
    }
  });

  it(
    'a cast native cannot do is dispatched (and traced) as js',
    { skip: native ? false : `${nativeLoadError()}` },
    () => {
      k.withBackend('native', () => {
        const x = k.fromArray([1.5, -2, 3], [3]);
        const half = traceKernels(() => x.to('f16')).runs.filter((r) => r.kernel === 'cast');
        assert.deepEqual(
          half.map((r) => r.ran),
          ['js'],
        );
        const int = traceKernels(() => x.to('i32')).runs.filter((r) => r.kernel === 'cast');
        assert.deepEqual(
          int.map((r) => r.ran),
          ['native'],
        );
      });
    },
  );
});

const TEXT = fileURLToPath(new URL('../../test/fixtures/text/genesis-1-4.txt', import.meta.url));
const RECIPE = {
  name: 'profile-gpt',
  model: { type: 'gpt', n_positions: 16, n_embd: 16, n_layer: 1, n_head: 2, dropout: 0 },
  data: { type: 'text', path: TEXT, validation_fraction: 0.1 },
  optimizer: { type: 'adamw', lr: 0.003 },
  batch_size: 4,
  steps: 3,
  log_every: 3,
  eval_batches: 1,
};

describe('knobs train --profile', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-profile-'));
    await writeFile(join(dir, 'recipe.json'), JSON.stringify(RECIPE));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('--json: the profile of every step but the first', async () => {
    const r = await cli(['train', join(dir, 'recipe.json'), '--out', join(dir, 'a'), '--profile', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const { profile } = JSON.parse(r.stdout);
    assert.equal(profile.steps, 2);
    assert.ok(profile.seconds > 0);
    const names = profile.ops.map((o: { op: string }) => o.op);
    for (const op of ['matmul', 'binary:add']) assert.ok(names.includes(op), `${op} in ${names.join(', ')}`);
    const matmul = profile.ops.find((o: { op: string }) => o.op === 'matmul');
    assert.ok(matmul.flops > 0 && matmul.calls > 0);
    const seconds = profile.ops.map((o: { seconds: number }) => o.seconds);
    assert.deepEqual(
      seconds,
      [...seconds].sort((x: number, y: number) => y - x),
      'slowest first',
    );
  });

  it('KNOBS_PROFILE=1 prints the table after the run', async () => {
    const r = await cli(['train', join(dir, 'recipe.json'), '--out', join(dir, 'b')], {
      env: { ...process.env, KNOBS_PROFILE: '1' },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /profile of 2 step\(s\)/);
    assert.match(r.stdout, /^matmul +\d+ +[\d.]+ +[\d.]+ +[\d.]+$/m);
    assert.match(r.stdout, /^step +[\d.]+ +100\.0/m);
  });
});

describe('model FLOPs per token (bench/gpt-share.ts)', () => {
  it('6·(parameters − position embeddings) + 12·L·C·T, counted from a real GPT', async () => {
    const { gptFlopsPerToken } = await import('../bench/gpt-share.js');
    for (const cfg of [
      { vocab_size: 256, n_positions: 128, n_embd: 256, n_layer: 4, n_head: 4 },
      { vocab_size: 300, n_positions: 40, n_embd: 48, n_layer: 3, n_head: 6 },
    ]) {
      const model = new k.GPT(cfg, { seed: 0 });
      let n = 0;
      for (const [name, p] of model.namedParameters()) if (!name.endsWith('wpe.weight')) n += p.size;
      assert.equal(gptFlopsPerToken(cfg), 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.n_positions);
    }
  });
});
