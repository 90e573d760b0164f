/**
 * Hugging Face model directories against PyTorch: scripts/gen_hf_fixtures.py wrote small GPT-2,
 * Llama, Mistral and Qwen2 checkpoints (GQA, tied and untied heads, two shards with an index, the
 * `transformer.` prefix, F16 and BF16 weights, linear and llama3 rope scaling) with the logits and
 * greedy tokens torch computes from each architecture's published math. knobs must load each
 * directory, match every logit (|a − b| ≤ 1e-4 + 1e-4·|b|) and produce the same greedy tokens —
 * on every backend, from disk and from memory.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import { generateHfTokens, samplingDefaults } from '../src/models/hf/generate.js';
import { memoryFiles } from '../src/models/hf/files.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { repoRoot } from './harness/fixtures.js';

interface Expected {
  seed: number;
  dtype: string;
  prompt: number[];
  greedy: number[];
  ends_in_eos: boolean;
  margins: number[];
  min_margin: number;
  logits_ids: number[];
  logits: number[][];
}

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
const cases = readdirSync(HF_DIR, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();
const ATOL = 1e-4;
const RTOL = 1e-4;

function expectedOf(name: string): Expected {
  return JSON.parse(readFileSync(join(HF_DIR, name, 'expected.json'), 'utf8')) as Expected;
}

function checkLogits(logits: k.Tensor, expected: Expected, label: string): void {
  const V = expected.logits[0]!.length;
  assert.deepEqual(logits.shape, [1, expected.logits.length, V], label);
  const got = logits.contiguousStorage() as Float32Array;
  let worst = 0;
  expected.logits.forEach((row, t) =>
    row.forEach((b, v) => {
      const a = got[t * V + v]!;
      const excess = Math.abs(a - b) - (ATOL + RTOL * Math.abs(b));
      if (excess > worst) worst = excess;
      assert.ok(excess <= 0, `${label}: logit [${t}, ${v}] is ${a}, torch ${b}`);
    }),
  );
}

describe('Hugging Face model directories against PyTorch', () => {
  it('the fixtures cover every architecture and the cases the issue names', () => {
    const configs = cases.map(
      (c) => JSON.parse(readFileSync(join(HF_DIR, c, 'config.json'), 'utf8')) as Record<string, unknown>,
    );
    const types = new Set(configs.map((c) => c.model_type));
    for (const t of ['gpt2', 'llama', 'mistral', 'qwen2']) assert.ok(types.has(t), t);
    const dtypes = new Set(cases.map((c) => expectedOf(c).dtype));
    for (const d of ['F32', 'F16', 'BF16']) assert.ok(dtypes.has(d), d);
    assert.ok(configs.some((c) => (c.rope_scaling as { rope_type?: string } | null)?.rope_type === 'llama3'));
    assert.ok(
      configs.some((c) => c.num_key_value_heads !== undefined && c.num_key_value_heads !== c.num_attention_heads),
      'GQA',
    );
    assert.ok(cases.some((c) => expectedOf(c).ends_in_eos));
    for (const c of cases) assert.ok(expectedOf(c).min_margin >= 1e-2, `${c}: top-2 margin`);
  });

  for (const name of cases) {
    const expected = expectedOf(name);
    for (const backend of k.backends()) {
      it(`${name} on ${backend}: logits and greedy tokens`, async () => {
        const loaded = await loadHfModel(join(HF_DIR, name));
        k.withBackend(backend, () => {
          const ids = k.fromArray(expected.logits_ids, [1, expected.logits_ids.length], { dtype: 'i32' });
          checkLogits(
            k.noGrad(() => loaded.model.forward(ids)),
            expected,
            `${name}/${backend}`,
          );
          const result = generateHfTokens(loaded, expected.prompt, { greedy: true, maxNewTokens: 8 });
          assert.deepEqual(result.tokens, expected.greedy);
          assert.equal(result.finishReason, expected.ends_in_eos ? 'eos' : 'length');
        });
      });
    }
  }

  it('the fixtures exercise rope scaling: without it, the logits leave the tolerance', async () => {
    for (const name of ['llama-gqa-bf16-llama3', 'llama-tied-f16-linear']) {
      const files = new Map(
        readdirSync(join(HF_DIR, name)).map((f) => [f, new Uint8Array(readFileSync(join(HF_DIR, name, f)))]),
      );
      const config = JSON.parse(new TextDecoder().decode(files.get('config.json'))) as Record<string, unknown>;
      files.set('config.json', new TextEncoder().encode(JSON.stringify({ ...config, rope_scaling: null })));
      const loaded = await loadHfModel(memoryFiles(files, name));
      const expected = expectedOf(name);
      const ids = k.fromArray(expected.logits_ids, [1, expected.logits_ids.length], { dtype: 'i32' });
      assert.throws(
        () =>
          checkLogits(
            k.noGrad(() => loaded.model.forward(ids)),
            expected,
            name,
          ),
        /logit \[/,
        name,
      );
    }
  });

  it('F64 weights load to the same parameters as F32 ones', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'knobs-hf-f64-'));
    try {
      const { tensors } = await loadSafetensors(join(HF_DIR, 'gpt2-tiny', 'model.safetensors'));
      await saveSafetensors(
        join(tmp, 'model.safetensors'),
        new Map([...tensors].map(([n, t]) => [n, (t as k.Tensor).to('f64')])),
      );
      await writeFile(join(tmp, 'config.json'), readFileSync(join(HF_DIR, 'gpt2-tiny', 'config.json')));
      const a = (await loadHfModel(tmp)).model.stateDict();
      for (const [key, t] of (await loadHfModel(join(HF_DIR, 'gpt2-tiny'))).model.stateDict())
        assert.deepEqual(a.get(key)!.toArray(), t.toArray(), key);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('sampling follows generation_config.json as transformers does: greedy unless do_sample', () => {
    assert.deepEqual(samplingDefaults({ eosTokenIds: [] }), { temperature: 0, topK: 0, topP: 1 });
    assert.deepEqual(
      samplingDefaults({ eosTokenIds: [], doSample: true, temperature: 0.6, topP: 0.9, maxNewTokens: 7 }),
      { temperature: 0.6, topK: 50, topP: 0.9, maxNewTokens: 7 },
    );
  });

  it('a directory held in memory loads the same model as from disk', async () => {
    const name = cases.find((c) => readdirSync(join(HF_DIR, c)).includes('model.safetensors.index.json'))!;
    const files = new Map(
      readdirSync(join(HF_DIR, name)).map((f) => [f, new Uint8Array(readFileSync(join(HF_DIR, name, f)))]),
    );
    const fromMemory = await loadHfModel(memoryFiles(files, name));
    const fromDisk = await loadHfModel(join(HF_DIR, name));
    const a = fromMemory.model.stateDict();
    for (const [key, t] of fromDisk.model.stateDict()) assert.deepEqual(a.get(key)!.toArray(), t.toArray(), key);
  });
});
