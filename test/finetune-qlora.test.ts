/**
 * LoRA on quantized bases (QLoRA-style, src/finetune/quantized-base.ts): the targets are
 * QuantizedLinear layers whose q8_0 / q4_0 blocks stay as they are; only lora_A / lora_B (f32)
 * train. The reference is the same LoRA on the dequantized base (every quantized layer decoded to
 * f32 exactly): the adapter's gradients agree within the error of the kernels' q8_0 rounding of
 * the activations (stated below), the blocks never change, no f32 copy of a quantized weight
 * exists, the base digest records the blocks, and merging needs the layers dequantized.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as k from '../src/index.js';
import { baseDigest, loadLoraAdapter, readAdapterConfig, saveLoraAdapter } from '../src/finetune/adapter.js';
import { applyLora, parseLoraConfig } from '../src/finetune/lora.js';
import {
  dequantizeLayers,
  dequantizeMatrix,
  quantizeBase,
  quantizedElements,
  quantizedLayers,
} from '../src/finetune/quantized-base.js';
import { QuantizedLinear } from '../src/nn/quantized-linear.js';
import { writeGguf } from '../src/formats/gguf-write.js';
import { ggufTokenizerOf, openModelDir } from '../src/load/convert.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { ggufFromModel } from '../src/models/gguf/export.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';
import { trainEightSteps } from './harness/lora-adapter.js';
import { repoRoot } from './harness/fixtures.js';

const tmpDirs: string[] = [];
after(async () => {
  for (const d of tmpDirs) await rm(d, { recursive: true, force: true });
});

const GPT_CFG = { vocab_size: 40, n_positions: 16, n_embd: 64, n_layer: 2, n_head: 2, dropout: 0 };
const LLAMA_CFG = {
  vocab_size: 50,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 32,
  tie_word_embeddings: false,
};
type Lm = k.Module & { loss(x: k.Tensor, y: k.Tensor): k.Tensor; forward(ids: k.Tensor): k.Tensor };
const makers: [string, () => Lm, string[] | string][] = [
  ['GPT-2 (Conv1D)', () => new k.GPT(GPT_CFG, { seed: 1 }), 'all-linear'],
  ['Llama (Linear, GQA)', () => new k.Llama(LLAMA_CFG, { seed: 2 }), ['q_proj', 'k_proj', 'v_proj', 'down_proj']],
];

function batch(vocab: number): { x: k.Tensor; y: k.Tensor } {
  const ids = k.randint(0, vocab, [2, 13], { generator: new k.Generator(5) });
  return { x: k.slice(ids, 1, 0, 12).contiguous(), y: k.slice(ids, 1, 1, 13).contiguous() };
}

function relL2(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** The adapter's gradients after one backward of `model` with a LoRA whose B is random (so A gets a gradient too). */
function loraGrads(model: Lm, targets: string[] | string, vocab: number): Map<string, Float32Array> {
  const config = parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: targets, init_lora_weights: false });
  const adapter = applyLora(model, config, { generator: new k.Generator(9) });
  const { x, y } = batch(vocab);
  model.loss(x, y).backward();
  return new Map(
    adapter.namedParameters().map(([n, p]) => [n, Float32Array.from(p.grad!.contiguousStorage() as Float32Array)]),
  );
}

describe('LoRA on a quantized base', () => {
  for (const [name, make, targets] of makers) {
    const vocab = name.startsWith('GPT') ? GPT_CFG.vocab_size : LLAMA_CFG.vocab_size;
    for (const type of ['q8_0', 'q4_0'] as const) {
      it(`${name}, ${type}: the adapter's gradients match the same LoRA on the dequantized base`, () => {
        const q = make();
        quantizeBase(q, type);
        const f = make();
        quantizeBase(f, type);
        const decoded = dequantizeLayers(f); // the same blocks, decoded exactly to f32
        assert.ok(decoded.length > 0 && quantizedLayers(f).length === 0);
        const gq = loraGrads(q, targets, vocab);
        const gf = loraGrads(f, targets, vocab);
        assert.deepEqual([...gq.keys()], [...gf.keys()]);
        // The quantized kernels round each activation row to q8_0 (8 bits per value, one scale per
        // 32) before the product, as ggml does: that, not the weights, is the whole difference.
        // Measured worst relative L2 error: 1.1e-2 to 1.6e-2 (q8_0 and q4_0 alike); bound 3e-2.
        let worst = 0;
        for (const [n, g] of gq) {
          const e = relL2(g, gf.get(n)!);
          worst = Math.max(worst, e);
          assert.ok(e < 3e-2, `${n}: relative L2 ${e}`);
        }
        if (process.env.KNOBS_TEST_VERBOSE) console.log(`${name} ${type}: worst relative L2 ${worst}`);
        assert.ok(worst > 0, 'the two paths are not the same computation');
      });
    }
  }

  it('training moves only lora_A / lora_B: the blocks stay byte-identical, no gradient or optimizer state for the base', () => {
    const model = new k.Llama(LLAMA_CFG, { seed: 2 });
    const { quantized } = quantizeBase(model, 'q8_0');
    const blocks = new Map(quantizedLayers(model).map(([p, q]) => [p, Uint8Array.from(q.weight.blocks)]));
    const params = new Map(
      model.namedParameters().map(([n, p]) => [n, Float32Array.from(p.contiguousStorage() as Float32Array)]),
    );
    const adapter = applyLora(model, parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: 'all-linear' }), {
      generator: new k.Generator(3),
    });
    assert.equal(adapter.layers.size, quantized.length - 1, 'every quantized layer but the head');
    model.train();
    const { losses, opt } = trainEightSteps(model, (n) => /\.lora_[AB]\.weight$/.test(n));
    assert.ok(losses.at(-1)! < losses[0]! - 0.1, `loss ${losses[0]} → ${losses.at(-1)}`);
    const state = [...opt.stateDict().tensors.keys()];
    assert.ok(state.length > 0 && state.every((n) => n.includes('.lora_')), state.join(', '));
    for (const [p, b] of blocks)
      assert.deepEqual((model.getModule(p) as QuantizedLinear).weight.blocks, b, `${p} blocks unchanged`);
    for (const [n, v] of params) assert.deepEqual(model.stateDict().get(n)!.contiguousStorage(), v, `${n} unchanged`);
  });

  it('memory: no f32 copy of a quantized weight — the model holds blocks, the adapter and the float leftovers only', () => {
    const f32 = new k.Llama(LLAMA_CFG, { seed: 2 });
    const f32Bytes = f32.numParameters() * 4;
    const model = new k.Llama(LLAMA_CFG, { seed: 2 });
    const { quantized } = quantizeBase(model, 'q8_0');
    const adapter = applyLora(model, parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: 'all-linear' }));
    const names = new Set(model.namedParameters().map(([n]) => n));
    for (const path of quantized) assert.ok(!names.has(`${path}.weight`), `${path}.weight is not an f32 parameter`);
    for (const [path, l] of adapter.layers) {
      assert.ok(l.layer instanceof QuantizedLinear, `${path} trains on its blocks`);
      assert.equal(l.lora_A.weight.dtype, 'f32');
    }
    const floatBytes = model.numParameters() * 4;
    const blockBytes = quantizedLayers(model).reduce((n, [, q]) => n + q.weight.blocks.byteLength, 0);
    const linearElements = quantizedElements(model);
    // f32 leftovers (embeddings, norms) + the adapter: exactly the f32 model minus its linear weights, plus A and B.
    assert.equal(floatBytes, f32Bytes - linearElements * 4 + adapter.numParameters() * 4);
    assert.equal(blockBytes, (linearElements / 32) * 34, 'q8_0: 34 bytes per 32 weights');
  });

  it('the base digest records the blocks: stable, different from the f32 base and from another type', () => {
    const digest = (type: 'q8_0' | 'q4_0' | null): string => {
      const m = new k.GPT(GPT_CFG, { seed: 1 });
      if (type) quantizeBase(m, type);
      return baseDigest(m);
    };
    assert.equal(digest('q8_0'), digest('q8_0'));
    assert.notEqual(digest('q8_0'), digest(null));
    assert.notEqual(digest('q8_0'), digest('q4_0'));
    const m = new k.GPT(GPT_CFG, { seed: 1 });
    quantizeBase(m, 'q8_0');
    const before = baseDigest(m);
    const q = quantizedLayers(m)[0]![1];
    q.weight.blocks[5] = q.weight.blocks[5]! ^ 1;
    assert.notEqual(baseDigest(m), before, 'one changed block byte changes the digest');
  });

  it('an adapter tuned on a q8_0 base: PEFT layout (GPT-2 fan_in_fan_out), reloads onto that base, refused on the f32 base unless allowed', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'knobs-qlora-'));
    tmpDirs.push(dir);
    const model = new k.GPT(GPT_CFG, { seed: 1 });
    quantizeBase(model, 'q8_0');
    const adapter = applyLora(
      model,
      parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: ['c_attn'], init_lora_weights: false }),
      {
        generator: new k.Generator(4),
      },
    );
    model.eval();
    const { x } = batch(GPT_CFG.vocab_size);
    const want = k.noGrad(() => model.forward(x)).toFlatArray();
    await saveLoraAdapter(join(dir, 'a'), model, adapter);
    const config = await readAdapterConfig(join(dir, 'a'));
    assert.equal(config.fan_in_fan_out, true, "GPT-2's layers are Conv1D in Hugging Face");

    const again = new k.GPT(GPT_CFG, { seed: 1 });
    quantizeBase(again, 'q8_0');
    await loadLoraAdapter(join(dir, 'a'), again);
    again.eval();
    assert.deepEqual(k.noGrad(() => again.forward(x)).toFlatArray(), want);

    const f32 = new k.GPT(GPT_CFG, { seed: 1 });
    await assert.rejects(
      loadLoraAdapter(join(dir, 'a'), f32),
      (e: k.KnobsError) => e.details.rule === 'lora_base_mismatch',
    );
    const { adapter: onF32 } = await loadLoraAdapter(join(dir, 'a'), f32, { allowBaseMismatch: true });
    assert.equal(onF32.layers.size, 2);
  });

  it('merging into a quantized layer is refused with the fix; after dequantizeLayers it merges as on a float base', async () => {
    const model = new k.GPT(GPT_CFG, { seed: 1 });
    quantizeBase(model, 'q8_0');
    const config = parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: ['c_attn'], init_lora_weights: false });
    const adapter = applyLora(model, config, { generator: new k.Generator(4) });
    assert.throws(
      () => adapter.merge(),
      (e: k.KnobsError) => e.details.rule === 'lora_merge_quantized' && /dequantize/.test(e.message),
    );
    const plain = new k.GPT(GPT_CFG, { seed: 1 });
    quantizeBase(plain, 'q8_0');
    const layers = dequantizeLayers(plain, ['h.0.attn.c_attn', 'h.1.attn.c_attn']);
    assert.deepEqual(
      layers.map((l) => l.type),
      ['q8_0', 'q8_0'],
    );
    assert.ok(plain.getModule('h.0.attn.c_attn') instanceof k.Conv1D, 'GPT-2 keeps its Conv1D layout');
    assert.ok(plain.getModule('h.0.mlp.c_fc') instanceof QuantizedLinear, 'untargeted layers stay quantized');
    const a2 = applyLora(plain, config, { generator: new k.Generator(4) });
    plain.eval();
    const { x } = batch(GPT_CFG.vocab_size);
    const before = k.noGrad(() => plain.forward(x)).toFlatArray();
    a2.merge();
    const merged = k.noGrad(() => plain.forward(x)).toFlatArray();
    for (let i = 0; i < before.length; i++) {
      const [a, b] = [merged[i]!, before[i]!];
      assert.ok(Math.abs(a - b) <= 1e-5 + 1e-5 * Math.abs(b), `logit ${i}: merged ${a} vs base + adapter ${b}`);
    }
  });

  it('dequantizeMatrix decodes the blocks the kernels multiply with', () => {
    const lin = new k.Linear(64, 3, { bias: false, generator: new k.Generator(2) });
    const q = QuantizedLinear.fromLinear(lin, 'q4_0');
    const w = dequantizeMatrix(q.weight);
    const x = k.randn([2, 64], { generator: new k.Generator(3) });
    const viaKernel = k.noGrad(() => q.forward(x)).toFlatArray();
    const viaDecoded = k.matmul(x, k.transpose(k.fromArray(w, [3, 64]), 0, 1)).toFlatArray();
    // The kernel rounds x to q8_0 first (see above), so the products agree to that rounding only.
    assert.ok(relL2(Float32Array.from(viaKernel), Float32Array.from(viaDecoded)) < 2e-2);
  });
});

describe('a quantized model written as GGUF keeps its blocks', () => {
  it("Llama with GQA: q/k blocks take llama.cpp's row permutation whole — the file loads back to the same logits", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'knobs-qgguf-'));
    tmpDirs.push(dir);
    const hf = await fixtureWithTokenizer(
      join(repoRoot(), 'test', 'fixtures', 'hf', 'mistral-gqa-shards'),
      join(dir, 'hf'),
    );
    const opened = await openModelDir(hf);
    quantizeBase(opened.model, 'q8_0');
    const file = join(dir, 'q8.gguf');
    const input = ggufFromModel({
      hf: opened.hf,
      model: opened.model,
      name: 'q',
      out: 'f32',
      tokenizer: ggufTokenizerOf(hf, opened),
    });
    assert.ok(input.tensors.some((t) => t.name === 'blk.0.attn_q.weight' && t.type === 'Q8_0'));
    await writeGguf(file, input);
    const back = await openLanguageModel(file);
    opened.model.eval();
    const ids = k.fromArray([1, 5, 9, 3, 7], [1, 5], { dtype: 'i32' });
    // Same blocks, same kernels: equal bits (a row permutation left undone would change every logit).
    assert.deepEqual(back.model.forward(ids).contiguousStorage(), opened.model.forward(ids).contiguousStorage());
  });
});
