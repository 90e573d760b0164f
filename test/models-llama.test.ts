/**
 * Llama / Qwen2 against PyTorch: test/fixtures/train/llama_tiny.json, written by
 * scripts/gen_llama_fixtures.py (LlamaForCausalLM's math in torch; torch version in the file),
 * on every backend knobs has here (js, and native when the addon is built).
 *
 * Tolerances as test/models-gpt.test.ts: loss rtol 1e-4 / atol 1e-6; logits atol 1e-5;
 * gradients |Δ| ≤ 1e-6 + 1e-3·|torch|; AdamW losses rtol 1e-4; gradient norms rtol 1e-4.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import {
  Llama,
  llamaConfig,
  llamaConfigFromHF,
  ropeInverseFrequencies,
  type LlamaConfig,
} from '../src/models/llama.js';
import { AdamW, clipGradNorm } from '../src/optim/index.js';
import { repoRoot } from './harness/fixtures.js';

interface Case {
  config: LlamaConfig;
  seed: number;
  weights: Record<string, { shape: number[]; f32_b64: string }>;
  batches: number[][][];
  step0: { loss: number; logits: number[]; grads_f32_b64: Record<string, string> };
  adamw: {
    lr: number;
    betas: [number, number];
    eps: number;
    weight_decay: number;
    clip: number;
    losses: number[];
    grad_norms: number[];
    final_loss: number;
    final_checksums: Record<string, [number, number]>;
  };
  greedy: { prompt: number[]; tokens: number[]; min_margin: number };
}

const fixture = JSON.parse(readFileSync(join(repoRoot(), 'test/fixtures/train/llama_tiny.json'), 'utf8')) as {
  torch_version: string;
  cases: Record<string, Case>;
};

function decodeB64(b64: string): Float32Array {
  const bytes = Buffer.from(b64, 'base64');
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
}

function close(actual: number, expected: number, rtol: number, atol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= atol + rtol * Math.abs(expected),
    `${what}: ${actual} vs torch ${expected} (rtol ${rtol}, atol ${atol})`,
  );
}

function fixtureModel(c: Case): Llama {
  const model = new Llama(c.config);
  const state = new Map<string, k.Tensor>();
  for (const [name, w] of Object.entries(c.weights))
    state.set(name, k.Tensor.fromStorage(decodeB64(w.f32_b64), w.shape, 'f32'));
  model.loadStateDict(state);
  return model;
}

function batch(c: Case, s: number): { x: k.Tensor; y: k.Tensor } {
  const ids = k.tensor(c.batches[s]!, { dtype: 'i32' });
  return { x: ids.slice(1, 0, -1), y: ids.slice(1, 1) };
}

for (const backend of k.backends()) {
  for (const [name, c] of Object.entries(fixture.cases)) {
    describe(`${name} vs PyTorch ${fixture.torch_version} on ${backend}`, () => {
      const on = <T>(fn: () => T): T => k.withBackend(backend, fn);

      it('one training step: logits, loss and every gradient by Hugging Face name', () =>
        on(() => {
          const model = fixtureModel(c);
          const { x, y } = batch(c, 0);
          const lf = model.forward(x).toFlatArray();
          c.step0.logits.forEach((v, i) => close(lf[i]!, Math.fround(v), 0, 1e-5, `logits[${i}]`));
          const loss = model.loss(x, y);
          close(loss.item(), c.step0.loss, 1e-4, 1e-6, 'loss');
          loss.backward();
          const params = new Map(model.namedParameters());
          assert.deepEqual([...params.keys()], Object.keys(c.step0.grads_f32_b64), 'parameter names and order');
          let worst = { what: '', err: 0 };
          for (const [pname, b64] of Object.entries(c.step0.grads_f32_b64)) {
            const expected = decodeB64(b64);
            const actual = params.get(pname)!.grad!.toFlatArray();
            for (let i = 0; i < expected.length; i++) {
              const err = Math.abs(actual[i]! - expected[i]!) / (1e-6 + 1e-3 * Math.abs(expected[i]!));
              if (err > worst.err) worst = { what: `${pname}[${i}] ${actual[i]} vs ${expected[i]}`, err };
            }
          }
          assert.ok(worst.err <= 1, `worst gradient mismatch ${worst.what} (${worst.err.toFixed(2)}× the tolerance)`);
        }));

      it(`${c.adamw.losses.length} AdamW steps (wd on rank ≥ 2, clip ${c.adamw.clip}) follow torch`, () =>
        on(() => {
          const model = fixtureModel(c);
          const a = c.adamw;
          const opt = new AdamW(model, { lr: a.lr, betas: a.betas, eps: a.eps, weightDecay: a.weight_decay });
          a.losses.forEach((expected, s) => {
            opt.zeroGrad();
            const { x, y } = batch(c, s);
            const loss = model.loss(x, y);
            loss.backward();
            close(clipGradNorm(model, a.clip), a.grad_norms[s]!, 1e-4, 1e-6, `grad norm at step ${s}`);
            opt.step();
            close(loss.item(), expected, 1e-4, 1e-6, `loss at step ${s}`);
          });
          const { x, y } = batch(c, 0);
          close(k.noGrad(() => model.loss(x, y)).item(), a.final_loss, 1e-4, 1e-6, 'loss after the steps');
          for (const [pname, p] of model.namedParameters()) {
            const v = p.toFlatArray();
            const [sum, sumsq] = a.final_checksums[pname]!;
            close(
              v.reduce((acc, e) => acc + e * e, 0),
              sumsq,
              1e-4,
              1e-5,
              `${pname} Σw²`,
            );
            close(
              v.reduce((acc, e) => acc + e, 0),
              sum,
              1e-3,
              1e-4,
              `${pname} Σw`,
            );
          }
        }));

      it(`greedy generation with the KV cache equals torch's full recomputation (margins ≥ ${c.greedy.min_margin.toFixed(3)})`, () =>
        on(() => {
          const out = fixtureModel(c).generate(c.greedy.prompt, {
            greedy: true,
            maxNewTokens: c.greedy.tokens.length,
            eosTokenId: null,
          });
          assert.deepEqual(out.tokens, c.greedy.tokens);
          assert.equal(out.finishReason, 'length');
        }));
    });
  }
}

describe('Llama: names, config and cache', () => {
  const tiny = {
    vocab_size: 40,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 12,
  };

  it('has exactly Hugging Face parameter names and shapes (qwen2: q/k/v biases; tied: no lm_head)', () => {
    const llama = new Llama(tiny);
    const names = llama.namedParameters().map(([n, p]) => `${n} ${JSON.stringify(p.shape)}`);
    assert.deepEqual(names.slice(0, 11), [
      'model.embed_tokens.weight [40,16]',
      'model.layers.0.self_attn.q_proj.weight [16,16]',
      'model.layers.0.self_attn.k_proj.weight [8,16]',
      'model.layers.0.self_attn.v_proj.weight [8,16]',
      'model.layers.0.self_attn.o_proj.weight [16,16]',
      'model.layers.0.mlp.gate_proj.weight [24,16]',
      'model.layers.0.mlp.up_proj.weight [24,16]',
      'model.layers.0.mlp.down_proj.weight [16,24]',
      'model.layers.0.input_layernorm.weight [16]',
      'model.layers.0.post_attention_layernorm.weight [16]',
      'model.layers.1.self_attn.q_proj.weight [16,16]',
    ]);
    assert.deepEqual(names.slice(-2), ['model.norm.weight [16]', 'lm_head.weight [40,16]']);
    const qwen = new Llama({ ...tiny, model_type: 'qwen2', tie_word_embeddings: true });
    const qnames = qwen.namedParameters().map(([n]) => n);
    assert.ok(qnames.includes('model.layers.0.self_attn.k_proj.bias'));
    assert.ok(!qnames.includes('model.layers.0.self_attn.o_proj.bias'));
    assert.ok(!qnames.includes('lm_head.weight'));
    // A tied checkpoint that still carries lm_head.weight loads.
    const state = qwen.stateDict();
    state.set('lm_head.weight', state.get('model.embed_tokens.weight')!);
    new Llama({ ...tiny, model_type: 'qwen2', tie_word_embeddings: true }, { seed: 9 }).loadStateDict(state);
  });

  it('initialises as LlamaPreTrainedModel: N(0, initializer_range), norms 1, biases 0', () => {
    const m = new Llama(
      { ...tiny, model_type: 'qwen2', hidden_size: 64, intermediate_size: 128, num_attention_heads: 4 },
      { seed: 3 },
    );
    const sd = m.stateDict();
    const v = sd.get('model.layers.0.mlp.up_proj.weight')!.toFlatArray();
    const std = Math.sqrt(v.reduce((a, b) => a + b * b, 0) / v.length);
    close(std, 0.02, 0.05, 0, 'up_proj std');
    assert.ok(
      sd
        .get('model.layers.1.self_attn.q_proj.bias')!
        .toFlatArray()
        .every((x) => x === 0),
    );
    assert.ok(
      sd
        .get('model.norm.weight')!
        .toFlatArray()
        .every((x) => x === 1),
    );
  });

  it('forwardWithCache (prefill, a chunk with a past, single tokens) equals the full forward', () => {
    const model = new Llama({ ...tiny, rope_scaling: { rope_type: 'linear', factor: 2 } }, { seed: 5 });
    const ids = [3, 17, 5, 9, 30, 1, 22, 8];
    const full = k.noGrad(() => model.forward(k.tensor([ids], { dtype: 'i32' }))).toFlatArray();
    const cache = model.createCache(1);
    const parts = [model.forwardWithCache(k.tensor([ids.slice(0, 3)], { dtype: 'i32' }), cache)];
    parts.push(model.forwardWithCache(k.tensor([ids.slice(3, 5)], { dtype: 'i32' }), cache));
    for (let t = 5; t < ids.length; t++)
      parts.push(model.forwardWithCache(k.tensor([[ids[t]!]], { dtype: 'i32' }), cache));
    const cached = k.concat(parts, 1).toFlatArray();
    full.forEach((v, i) => close(cached[i]!, v, 0, 1e-5, `logit ${i}`));
    assert.throws(
      () => model.forwardWithCache(k.tensor([[1, 2, 3, 4, 5]], { dtype: 'i32' }), cache),
      /exceed max_position_embeddings 12/,
    );
  });

  it('generation stops at any id of an eos_token_id list, and crops past the context', () => {
    const model = new Llama({ ...tiny, eos_token_id: null }, { seed: 5 });
    const free = model.generate([1, 2], { greedy: true, maxNewTokens: 20 });
    assert.equal(free.tokens.length, 20, 'runs past max_position_embeddings (12) by cropping');
    const eos = [free.tokens[4]!, 39];
    const m2 = new Llama({ ...tiny, eos_token_id: eos }, { seed: 5 });
    const stopped = m2.generate([1, 2], { greedy: true, maxNewTokens: 20 });
    assert.equal(stopped.finishReason, 'eos');
    assert.ok(eos.includes(stopped.tokens.at(-1)!));
    assert.ok(stopped.tokens.length <= 5);
  });

  it('writes config.json with Hugging Face fields and reads it back', () => {
    const m = new Llama({
      ...tiny,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8,
      },
    });
    const hf = m.toHFConfig();
    assert.deepEqual(hf.architectures, ['LlamaForCausalLM']);
    assert.equal(hf.model_type, 'llama');
    assert.deepEqual(
      llamaConfigFromHF(JSON.parse(JSON.stringify({ ...hf, torch_dtype: 'bfloat16', transformers_version: '4.44' }))),
      m.config,
    );
    assert.deepEqual(new Llama({ ...tiny, model_type: 'qwen2' }).toHFConfig().architectures, ['Qwen2ForCausalLM']);
    // The rope_scaling 'type' spelling of older configs reads the same.
    assert.deepEqual(llamaConfig({ ...tiny, rope_scaling: { type: 'linear', factor: 4 } } as never).rope_scaling, {
      rope_type: 'linear',
      factor: 4,
    });
  });

  it('llama3 rope scaling keeps high frequencies, stretches low ones and blends between', () => {
    const inv = ropeInverseFrequencies({
      head_dim: 8,
      rope_theta: 10000,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
    });
    close(inv[0]!, 1, 1e-6, 0, 'high frequency kept');
    close(inv[2]!, 0.01 / 8, 1e-6, 0, 'low frequency stretched');
    assert.ok(inv[1]! < 0.1 && inv[1]! > 0.1 / 8, `middle band blended: ${inv[1]}`);
  });

  it('rejects configs whose math knobs does not implement, naming the field', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ num_key_value_heads: 3 }, /num_key_value_heads \(3\) must divide num_attention_heads \(4\)/],
      [{ head_dim: 8 }, /head_dim \(8\) must equal hidden_size \/ num_attention_heads/],
      [{ hidden_act: 'gelu' }, /hidden_act 'gelu' is not supported/],
      [{ rope_scaling: { rope_type: 'yarn', factor: 4 } }, /rope_scaling.rope_type 'yarn' is not supported/],
      [{ rope_scaling: { rope_type: 'linear' } }, /rope_scaling.factor must be a positive number/],
      [{ model_type: 'mistral', sliding_window: 4 }, /sliding_window \(4\) is shorter than the context/],
      [{ attention_bias: true }, /attention_bias true is not supported/],
      [{ mlp_bias: true }, /mlp_bias true is not supported/],
      [{ eos_token_id: [2, 99] }, /eos_token_id \[2,99\] must be an id in \[0, 40\)/],
      [{ model_type: 'gemma' }, /model_type 'gemma' is not one of/],
      [{ num_hidden_layers: 0 }, /num_hidden_layers must be a positive integer/],
    ];
    for (const [change, message] of bad) {
      assert.throws(
        () => llamaConfig({ ...tiny, ...change } as never),
        (err: unknown) => err instanceof k.ArgumentError && err.code === 'E_ARGUMENT' && message.test(err.message),
        JSON.stringify(change),
      );
    }
    assert.equal(
      llamaConfig({ ...tiny, model_type: 'mistral', sliding_window: 12 }).sliding_window,
      12,
      'a window as long as the context never applies',
    );
    assert.equal(
      llamaConfig({ ...tiny, model_type: 'qwen2', sliding_window: 4 }).sliding_window,
      null,
      "Qwen2's window is off unless use_sliding_window",
    );
    assert.throws(
      () => llamaConfig({ ...tiny, model_type: 'qwen2', sliding_window: 4, use_sliding_window: true }),
      /sliding_window \(4\) is shorter/,
    );
    assert.throws(() => llamaConfigFromHF({ model_type: 'llama', hidden_size: 16 }), /intermediate_size is missing/);
  });
});
