/**
 * Freezing by name (trainable / frozen globs over stateDict() names) on a real GPT-2 fixture:
 * which parameters train, the errors for a pattern that matches nothing or a spec that freezes
 * everything, and that frozen parameters get neither gradients nor optimizer state.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import { applyFreeze } from '../src/finetune/freeze.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { repoRoot } from './harness/fixtures.js';

const GPT2 = join(repoRoot(), 'test', 'fixtures', 'hf', 'gpt2-tiny');

describe('applyFreeze', () => {
  it('trainable selects, frozen carves out afterwards; * stays in a segment, ** spans segments', async () => {
    const { model } = await loadHfModel(GPT2);
    const r = applyFreeze(model, { trainable: ['h.*.attn.**', 'ln_f.*'], frozen: ['h.0.**'] });
    assert.deepEqual(r.trainable, [
      'h.1.attn.c_attn.weight',
      'h.1.attn.c_attn.bias',
      'h.1.attn.c_proj.weight',
      'h.1.attn.c_proj.bias',
      'ln_f.weight',
      'ln_f.bias',
    ]);
    assert.equal(r.trainable.length + r.frozen.length, model.namedParameters().length);
    for (const [n, p] of model.namedParameters()) assert.equal(p.requiresGrad, r.trainable.includes(n), n);
    // `*` does not cross a dot: h.* alone names no parameter.
    assert.throws(
      () => applyFreeze(model, { trainable: ['h.*'] }),
      (e: k.KnobsError) => e.code === 'E_ARGUMENT' && e.details.pattern === 'h.*' && e.message.includes('"h.*"'),
    );
  });

  it('without trainable everything trains except the frozen list', async () => {
    const { model } = await loadHfModel(GPT2);
    const r = applyFreeze(model, { frozen: ['wte.weight', 'wpe.weight', 'h.0.**'] });
    assert.ok(r.frozen.includes('wte.weight') && r.frozen.includes('h.0.mlp.c_fc.weight'));
    assert.ok(r.trainable.includes('h.1.mlp.c_fc.weight'));
  });

  it('a pattern that matches nothing, or freezing everything, is an error naming the pattern', async () => {
    const { model } = await loadHfModel(GPT2);
    assert.throws(
      () => applyFreeze(model, { frozen: ['h.*.attn.q_proj.weight'] }),
      (e: k.KnobsError) => e.details.field === 'frozen' && e.details.pattern === 'h.*.attn.q_proj.weight',
    );
    assert.throws(
      () => applyFreeze(model, { trainable: ['h.1.**'], frozen: ['h.*.**'] }),
      (e: k.KnobsError) => e.code === 'E_ARGUMENT' && e.message.includes('h.*.**'),
    );
    assert.throws(
      () => applyFreeze(model, { trainable: [] }),
      (e: k.KnobsError) => e.details.field === 'trainable',
    );
  });

  it('frozen parameters get no gradient and no optimizer state (Adam and SGD)', async () => {
    const { model } = await loadHfModel(GPT2);
    const before = new Map(
      [...model.stateDict()].map(([n, t]) => [n, Float32Array.from(t.contiguousStorage() as Float32Array)]),
    );
    const { trainable } = applyFreeze(model, { trainable: ['h.1.mlp.**'] });
    const text = [3, 8, 13, 21, 34, 55, 3, 8, 13, 21];
    const ids = k.fromArray(text.slice(0, -1), [1, text.length - 1], { dtype: 'i32' });
    const targets = k.fromArray(text.slice(1), [1, text.length - 1], { dtype: 'i32' });
    for (const opt of [
      new k.AdamW(model, { lr: 1e-3, weightDecay: 0.1 }),
      new k.SGD(model, { lr: 1e-2, momentum: 0.9 }),
    ]) {
      for (let step = 0; step < 2; step++) {
        opt.zeroGrad();
        model.loss(ids, targets).backward();
        for (const [n, p] of model.namedParameters())
          assert.equal(p.grad !== null, trainable.includes(n), `${n} gradient`);
        opt.step();
      }
      const names = new Set([...opt.stateDict().tensors.keys()].map((s) => s.slice(0, s.lastIndexOf('.'))));
      assert.deepEqual(
        [...names].sort(),
        [...trainable].sort(),
        `${opt.type} keeps state for exactly the trainable parameters`,
      );
    }
    for (const [n, w] of before) {
      const same = (model.stateDict().get(n)!.contiguousStorage() as Float32Array).every((v, i) => v === w[i]);
      assert.equal(same, !trainable.includes(n), `${n}: ${trainable.includes(n) ? 'trained' : 'frozen'}`);
    }
  });
});
