/**
 * Llama's batch-1 decode step (src/models/llama-decode.ts, native/kernels/decode.cpp): one token
 * of one sequence through the backend's decode kernels gives the logits of the full forward pass
 * (f32 and q8_0/q4_0 weights; GQA, Qwen2's q/k/v biases, a tied head, linear rope scaling), writes
 * the same KV cache, is bit-identical across thread counts, and steps aside — the ops run — where
 * it would not compute what the modules say (an adapter on a layer). Each case checks from the
 * profile which path ran, so a step that silently declined fails. Native only (skipped when the
 * addon is not built, unless KNOBS_REQUIRE_NATIVE=1).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import { startProfile, stopProfile } from '../src/backends/profile.js';
import { Llama, type LlamaConfigInput } from '../src/models/llama.js';
import { normal_ } from '../src/nn/init.js';
import { addon, skip } from './harness/native.js';

const small: LlamaConfigInput = {
  vocab_size: 50,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 16,
  initializer_range: 0.2, // weights large enough that a wrong score or rotation moves the logits
};
const ids = [3, 17, 5, 9, 30, 1, 22, 8, 41, 12];
const PREFILL = 4;

/** Logits of a prefill then one token at a time, with how many decode-attention calls ran. */
function cachedLogits(model: Llama, tokens: readonly number[]): { logits: Float32Array; decodeCalls: number } {
  const cache = model.createCache(1);
  const parts = [model.forwardWithCache(k.tensor([tokens.slice(0, PREFILL)], { dtype: 'i32' }), cache)];
  startProfile();
  let ops;
  try {
    for (let t = PREFILL; t < tokens.length; t++)
      parts.push(model.forwardWithCache(k.tensor([[tokens[t]!]], { dtype: 'i32' }), cache));
  } finally {
    ops = stopProfile();
  }
  const decodeCalls = ops.find((o) => o.op === 'decodeAttention')?.calls ?? 0;
  return { logits: Float32Array.from(k.concat(parts, 1).toFlatArray()), decodeCalls };
}

function assertClose(actual: Float32Array, expected: ArrayLike<number>, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!);
    if (!(err <= worst)) [worst, at] = [err, i];
  }
  assert.ok(worst <= atol, `${what}: logit ${at} is ${actual[at]} vs ${expected[at]} (atol ${atol})`);
}

describe('Llama batch-1 decode step', { skip }, () => {
  const on = <T>(fn: () => T): T => k.withBackend('native', fn);
  const steps = ids.length - PREFILL;

  for (const [name, config] of [
    ['llama, GQA, linear rope scaling', { ...small, rope_scaling: { rope_type: 'linear' as const, factor: 2 } }],
    ['qwen2 (q/k/v biases)', { ...small, model_type: 'qwen2' as const }],
    ['tied head', { ...small, tie_word_embeddings: true }],
  ] as const) {
    it(`${name}: each step's logits are the full forward's`, () =>
      on(() => {
        const model = new Llama(config, { seed: 7 });
        for (const [pname, p] of model.namedParameters()) if (pname.endsWith('.bias')) normal_(p, 0, 0.1);
        const full = k.noGrad(() => model.forward(k.tensor([ids], { dtype: 'i32' }))).toFlatArray();
        const { logits, decodeCalls } = cachedLogits(model, ids);
        assert.equal(decodeCalls, steps * 2, 'the decode step ran for every token and layer');
        assertClose(logits, full, 2e-5, name);
      }));
  }

  for (const type of ['q8_0', 'q4_0'] as const) {
    it(`${type} weights: the step's logits are the quantized model's full forward`, () =>
      on(() => {
        const model = new Llama(small, { seed: 3 });
        k.quantizeModel(model, type);
        const full = k.noGrad(() => model.forward(k.tensor([ids], { dtype: 'i32' }))).toFlatArray();
        const { logits, decodeCalls } = cachedLogits(model, ids);
        assert.equal(decodeCalls, steps * 2);
        assertClose(logits, full, 2e-5, type);
      }));
  }

  it('a layer with an adapter makes the step decline; the ops include the adapter', () =>
    on(() => {
      const model = new Llama(small, { seed: 11 });
      const shift = k.full([small.hidden_size], 0.25);
      model.model.layers.at(1).self_attn.o_proj.adapter = (x) => k.add(k.mul(x, 0), shift);
      const full = k.noGrad(() => model.forward(k.tensor([ids], { dtype: 'i32' }))).toFlatArray();
      const { logits, decodeCalls } = cachedLogits(model, ids);
      assert.equal(decodeCalls, 0, 'the ops ran, not the decode step');
      assertClose(logits, full, 2e-5, 'with adapter');
    }));

  it('gives the same bits on 1 and 2 threads (threads split rows only)', () =>
    on(() => {
      const wide = { ...small, hidden_size: 512, intermediate_size: 1024, num_attention_heads: 8 };
      const model = new Llama(wide, { seed: 1 });
      const before = addon!.setThreads(1);
      try {
        const one = cachedLogits(model, ids).logits;
        addon!.setThreads(2);
        const two = cachedLogits(model, ids).logits;
        assert.deepEqual(two, one);
        k.quantizeModel(model, 'q8_0');
        addon!.setThreads(1);
        const q1 = cachedLogits(model, ids).logits;
        addon!.setThreads(2);
        assert.deepEqual(cachedLogits(model, ids).logits, q1);
      } finally {
        addon!.setThreads(before);
      }
    }));
});
