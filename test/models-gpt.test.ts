/**
 * GPT (GPT-2 architecture) against PyTorch: test/fixtures/train/gpt_tiny.json, written by
 * scripts/gen_train_fixtures.py (see its docstring; torch version recorded in the file).
 *
 * Tolerances: loss rtol 1e-4 / atol 1e-6; logits atol 1e-5; gradients |Δ| ≤ 1e-6 + 1e-3·|torch|
 * elementwise; AdamW losses rtol 1e-4 / atol 1e-6; gradient norms rtol 1e-4.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as k from '../src/index.js';
import { GPT, gptConfig, gptConfigFromHF } from '../src/models/index.js';
import { AdamW, clipGradNorm } from '../src/optim/index.js';

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('repository root not found');
    dir = up;
  }
  return dir;
}

interface GptFixture {
  torch_version: string;
  config: Record<string, number>;
  B: number;
  T: number;
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
    key_bias_checksums: Record<string, [number, number]>;
  };
  greedy: { prompt: number[]; tokens: number[] };
}

const fixture = JSON.parse(readFileSync(join(repoRoot(), 'test/fixtures/train/gpt_tiny.json'), 'utf8')) as GptFixture;

function decodeF32(b64: string): Float32Array {
  const bytes = Buffer.from(b64, 'base64');
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = bytes.readFloatLE(i * 4);
  return out;
}

function close(actual: number, expected: number, rtol: number, atol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= atol + rtol * Math.abs(expected),
    `${what}: ${actual} vs torch ${expected} (rtol ${rtol}, atol ${atol})`,
  );
}

function fixtureModel(): GPT {
  const model = new GPT({ ...fixture.config, dropout: 0 } as never);
  const state = new Map<string, k.Tensor>();
  for (const [name, w] of Object.entries(fixture.weights))
    state.set(name, k.Tensor.fromStorage(decodeF32(w.f32_b64), w.shape, 'f32'));
  model.loadStateDict(state);
  return model;
}

function batch(s: number): { x: k.Tensor; y: k.Tensor } {
  const ids = k.tensor(fixture.batches[s]!, { dtype: 'i32' });
  return { x: ids.slice(1, 0, -1), y: ids.slice(1, 1) };
}

const GPT2_NAMES_PER_LAYER = [
  'ln_1.weight',
  'ln_1.bias',
  'attn.c_attn.weight',
  'attn.c_attn.bias',
  'attn.c_proj.weight',
  'attn.c_proj.bias',
  'ln_2.weight',
  'ln_2.bias',
  'mlp.c_fc.weight',
  'mlp.c_fc.bias',
  'mlp.c_proj.weight',
  'mlp.c_proj.bias',
];

describe('GPT: GPT-2 names, layouts and config', () => {
  it('has exactly GPT-2 parameter names, order and shapes (Conv1D [in, out])', () => {
    const m = new GPT({ vocab_size: 64, n_positions: 16, n_embd: 32, n_layer: 2, n_head: 2 });
    const names = m.namedParameters().map(([n, p]) => `${n} ${JSON.stringify(p.shape)}`);
    const expected = ['wte.weight [64,32]', 'wpe.weight [16,32]'];
    for (let i = 0; i < 2; i++) {
      const shapes: Record<string, number[]> = {
        'ln_1.weight': [32],
        'ln_1.bias': [32],
        'attn.c_attn.weight': [32, 96],
        'attn.c_attn.bias': [96],
        'attn.c_proj.weight': [32, 32],
        'attn.c_proj.bias': [32],
        'ln_2.weight': [32],
        'ln_2.bias': [32],
        'mlp.c_fc.weight': [32, 128],
        'mlp.c_fc.bias': [128],
        'mlp.c_proj.weight': [128, 32],
        'mlp.c_proj.bias': [32],
      };
      for (const n of GPT2_NAMES_PER_LAYER) expected.push(`h.${i}.${n} ${JSON.stringify(shapes[n])}`);
    }
    expected.push('ln_f.weight [32]', 'ln_f.bias [32]');
    assert.deepEqual(names, expected);
    assert.deepEqual(
      [...m.stateDict().keys()],
      expected.map((e) => e.split(' ')[0]),
    );
    // nanoGPT's count: 2·(12·C² + 13·C) + V·C + P·C + 2C
    assert.equal(m.numParameters(), 2 * (12 * 32 * 32 + 13 * 32) + 64 * 32 + 16 * 32 + 64);
    assert.equal(m.numParameters({ nonEmbedding: true }), m.numParameters() - 16 * 32);
  });

  it('writes and reads Hugging Face config.json fields', () => {
    const m = new GPT({ vocab_size: 50257, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2, dropout: 0 });
    const hf = m.toHFConfig();
    assert.equal(hf.model_type, 'gpt2');
    assert.deepEqual(hf.architectures, ['GPT2LMHeadModel']);
    assert.equal(hf.activation_function, 'gelu_new');
    assert.equal(hf.n_embd, 16);
    assert.equal(hf.layer_norm_epsilon, 1e-5);
    assert.equal(hf.eos_token_id, 50256);
    assert.equal(hf.resid_pdrop, 0);
    assert.deepEqual(gptConfigFromHF(JSON.parse(JSON.stringify(hf))), m.config);
    assert.equal(
      gptConfig({ n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2 }).attn_pdrop,
      0.1,
      'HF default dropout',
    );
    assert.throws(() => gptConfig({ n_positions: 8, n_embd: 10, n_layer: 1, n_head: 3 }), /divisible by n_head/);
    assert.throws(() => gptConfigFromHF({ model_type: 'llama' }), /expected 'gpt2'/);
  });

  it('initialises as GPT-2: N(0, 0.02), residual projections N(0, 0.02/√(2L)), biases 0, norms 1', () => {
    const m = new GPT({ vocab_size: 128, n_positions: 32, n_embd: 64, n_layer: 4, n_head: 4 }, { seed: 3 });
    const std = (t: k.Tensor): number => {
      const v = t.toFlatArray();
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    };
    const sd = m.stateDict();
    close(std(sd.get('wte.weight')!), 0.02, 0.05, 0, 'wte std');
    close(std(sd.get('h.0.mlp.c_fc.weight')!), 0.02, 0.05, 0, 'c_fc std');
    close(std(sd.get('h.1.attn.c_proj.weight')!), 0.02 / Math.sqrt(8), 0.05, 0, 'attn.c_proj std');
    close(std(sd.get('h.2.mlp.c_proj.weight')!), 0.02 / Math.sqrt(8), 0.05, 0, 'mlp.c_proj std');
    assert.ok(
      sd
        .get('h.0.attn.c_attn.bias')!
        .toFlatArray()
        .every((v) => v === 0),
    );
    assert.ok(
      sd
        .get('ln_f.weight')!
        .toFlatArray()
        .every((v) => v === 1),
    );
    const again = new GPT({ vocab_size: 128, n_positions: 32, n_embd: 64, n_layer: 4, n_head: 4 }, { seed: 3 });
    assert.deepEqual(
      again.stateDict().get('h.3.mlp.c_fc.weight')!.toFlatArray(),
      sd.get('h.3.mlp.c_fc.weight')!.toFlatArray(),
      'seeded init',
    );
  });

  it('loads GPT2LMHeadModel-style state dicts (transformer. prefix, lm_head, attn.bias buffers)', () => {
    const src = new GPT({ vocab_size: 32, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2 }, { seed: 1 });
    const hf = new Map<string, k.Tensor>();
    for (const [n, t] of src.stateDict()) hf.set(`transformer.${n}`, t);
    hf.set('lm_head.weight', src.stateDict().get('wte.weight')!);
    hf.set('h.0.attn.bias', k.ones([1, 1, 8, 8]));
    hf.set('h.0.attn.masked_bias', k.tensor(-1e4));
    const dst = new GPT({ vocab_size: 32, n_positions: 8, n_embd: 16, n_layer: 1, n_head: 2 }, { seed: 2 });
    dst.loadStateDict(hf);
    assert.deepEqual(
      dst.stateDict().get('h.0.mlp.c_fc.weight')!.toFlatArray(),
      src.stateDict().get('h.0.mlp.c_fc.weight')!.toFlatArray(),
    );
  });
});

describe('GPT vs PyTorch (torch ' + fixture.torch_version + ')', () => {
  it('one training step: loss, logits and every gradient by GPT-2 name', () => {
    const model = fixtureModel();
    const { x, y } = batch(0);
    const logits = model.forward(x);
    assert.deepEqual(logits.shape, [fixture.B, fixture.T, fixture.config.vocab_size]);
    const lf = logits.toFlatArray();
    fixture.step0.logits.forEach((v, i) => close(lf[i]!, Math.fround(v), 0, 1e-5, `logits[${i}]`));
    const loss = model.loss(x, y);
    close(loss.item(), fixture.step0.loss, 1e-4, 1e-6, 'loss');
    loss.backward();
    const params = new Map(model.namedParameters());
    assert.deepEqual([...params.keys()], Object.keys(fixture.step0.grads_f32_b64));
    let worst = { name: '', err: 0 };
    for (const [name, b64] of Object.entries(fixture.step0.grads_f32_b64)) {
      const expected = decodeF32(b64);
      const g = params.get(name)!.grad;
      assert.ok(g, `${name} has a gradient`);
      const actual = g.toFlatArray();
      for (let i = 0; i < expected.length; i++) {
        const err = Math.abs(actual[i]! - expected[i]!) / (1e-6 + 1e-3 * Math.abs(expected[i]!));
        if (err > worst.err) worst = { name: `${name}[${i}] ${actual[i]} vs ${expected[i]}`, err };
      }
    }
    assert.ok(worst.err <= 1, `worst gradient mismatch ${worst.name} (${worst.err.toFixed(2)}× the tolerance)`);
  });

  it('10 AdamW steps (betas 0.9/0.95, wd 0.1 on rank ≥ 2, clip 1.0) follow torch', () => {
    const model = fixtureModel();
    const a = fixture.adamw;
    const opt = new AdamW(model, { lr: a.lr, betas: a.betas, eps: a.eps, weightDecay: a.weight_decay });
    // nanoGPT grouping: decayed = matrices and embeddings, not decayed = biases and norm weights
    assert.equal(opt.groups.length, 2);
    assert.ok(opt.groups[0]!.names.every((n) => n.endsWith('.weight') && !/ln_/.test(n)));
    assert.equal(opt.groups[1]!.options.weightDecay, 0);
    for (let s = 0; s < 10; s++) {
      opt.zeroGrad();
      const { x, y } = batch(s);
      const loss = model.loss(x, y);
      loss.backward();
      const norm = clipGradNorm(model, a.clip);
      opt.step();
      close(loss.item(), a.losses[s]!, 1e-4, 1e-6, `loss at step ${s}`);
      close(norm, a.grad_norms[s]!, 1e-4, 1e-6, `grad norm at step ${s}`);
    }
    const { x, y } = batch(0);
    close(k.noGrad(() => model.loss(x, y)).item(), a.final_loss, 1e-4, 1e-6, 'loss after 10 steps');
    for (const [name, p] of model.namedParameters()) {
      const v = p.toFlatArray();
      const [sum, sumsq] = a.final_checksums[name]!;
      close(
        v.reduce((acc, e) => acc + e * e, 0),
        sumsq,
        1e-4,
        1e-5,
        `${name} Σw²`,
      );
      /* A c_attn bias's key third has a zero gradient in exact arithmetic (q·b shifts a whole row of
         scores, which softmax ignores), so AdamW steps it by rounding noise, up to lr a step: its sum
         is checked apart, within that noise (~1e-3 between kernels' summation orders), and the
         other two thirds as tightly as every other tensor. */
      const key = a.key_bias_checksums[name];
      const C = fixture.config.n_embd;
      const keySum = key ? v.slice(C, 2 * C).reduce((acc, e) => acc + e, 0) : 0;
      if (key) close(keySum, key[0], 0, 5e-3, `${name} Σw of the key third`);
      close(
        v.reduce((acc, e) => acc + e, 0) - keySum,
        sum - (key ? key[0] : 0),
        1e-3,
        1e-4,
        `${name} Σw${key ? ' of the query and value thirds' : ''}`,
      );
    }
  });

  it('greedy generation with the KV cache (and the crop past n_positions) matches full recomputation in torch', () => {
    const model = fixtureModel();
    const out = model.generate(fixture.greedy.prompt, {
      greedy: true,
      maxNewTokens: fixture.greedy.tokens.length,
      eosTokenId: null,
    });
    assert.deepEqual(out.tokens, fixture.greedy.tokens);
    assert.equal(out.finishReason, 'length');
  });
});

describe('GPT inference', () => {
  const model = new GPT(
    { vocab_size: 40, n_positions: 12, n_embd: 16, n_layer: 2, n_head: 4, dropout: 0 },
    { seed: 5 },
  );
  const ids = [3, 17, 5, 9, 30, 1, 22, 8];

  it('forwardWithCache (prefill + one token at a time) equals the full forward', () => {
    const full = k.noGrad(() => model.forward(k.tensor([ids], { dtype: 'i32' }))).toFlatArray();
    const cache = model.createCache(1);
    const parts = [model.forwardWithCache(k.tensor([ids.slice(0, 3)], { dtype: 'i32' }), cache)];
    parts.push(model.forwardWithCache(k.tensor([ids.slice(3, 5)], { dtype: 'i32' }), cache)); // T > 1 with a past
    for (let t = 5; t < ids.length; t++)
      parts.push(model.forwardWithCache(k.tensor([[ids[t]!]], { dtype: 'i32' }), cache));
    assert.equal(cache.length, ids.length);
    const cached = k.concat(parts, 1).toFlatArray();
    full.forEach((v, i) => close(cached[i]!, v, 0, 1e-5, `logit ${i}`));
    assert.throws(
      () => model.forwardWithCache(k.tensor([[1, 2, 3, 4, 5]], { dtype: 'i32' }), cache),
      /exceed n_positions 12/,
    );
  });

  it('generate: seeded sampling is reproducible, stops at eos, honours onToken', () => {
    const a = model.generate([1, 2], {
      temperature: 0.9,
      topK: 10,
      topP: 0.9,
      seed: 7,
      maxNewTokens: 10,
      eosTokenId: null,
    });
    const b = model.generate([1, 2], {
      temperature: 0.9,
      topK: 10,
      topP: 0.9,
      seed: 7,
      maxNewTokens: 10,
      eosTokenId: null,
    });
    assert.deepEqual(a.tokens, b.tokens);
    assert.equal(a.tokens.length, 10);
    const eos = a.tokens[3]!;
    const stopped = model.generate([1, 2], {
      temperature: 0.9,
      topK: 10,
      topP: 0.9,
      seed: 7,
      maxNewTokens: 10,
      eosTokenId: eos,
    });
    assert.equal(stopped.finishReason, 'eos');
    assert.equal(stopped.tokens[stopped.tokens.length - 1], eos);
    assert.ok(stopped.tokens.length <= 4);
    const ignored = model.generate([1, 2], {
      temperature: 0.9,
      topK: 10,
      topP: 0.9,
      seed: 7,
      maxNewTokens: 10,
      eosTokenId: eos,
      ignoreEos: true,
    });
    assert.deepEqual(ignored.tokens, a.tokens);
    const seen: number[] = [];
    const cb = model.generate([1, 2], {
      greedy: true,
      maxNewTokens: 10,
      eosTokenId: null,
      onToken: (t) => {
        seen.push(t);
        return seen.length < 3;
      },
    });
    assert.equal(cb.finishReason, 'stop');
    assert.deepEqual(cb.tokens, seen);
    assert.equal(seen.length, 3);
    const topK1 = model.generate([1, 2], { temperature: 1, topK: 1, seed: 3, maxNewTokens: 5, eosTokenId: null });
    assert.deepEqual(
      topK1.tokens,
      model.generate([1, 2], { greedy: true, maxNewTokens: 5, eosTokenId: null }).tokens,
      'top-k 1 is greedy',
    );
    assert.throws(() => model.generate([99]), /outside the vocabulary/);
    assert.throws(() => model.generate([1], { topP: 0 }), /topP/);
  });

  it('dropout is active in training mode only, and generate restores the mode', () => {
    const m = new GPT({ vocab_size: 16, n_positions: 8, n_embd: 8, n_layer: 1, n_head: 2, dropout: 0.5 }, { seed: 1 });
    const x = k.tensor([[1, 2, 3]], { dtype: 'i32' });
    const a = k.noGrad(() => m.forward(x)).toFlatArray();
    const b = k.noGrad(() => m.forward(x)).toFlatArray();
    assert.notDeepEqual(a, b);
    m.eval();
    assert.deepEqual(k.noGrad(() => m.forward(x)).toFlatArray(), k.noGrad(() => m.forward(x)).toFlatArray());
    m.train();
    m.generate([1], { maxNewTokens: 2 });
    assert.equal(m.training, true);
    assert.equal(m.h.at(0).attn.attn_dropout.training, true);
  });
});
