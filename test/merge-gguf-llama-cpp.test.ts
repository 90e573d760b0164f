/**
 * llama.cpp judges a GGUF file `knobs merge` wrote from a GGUF base (issue 11, item 5): the tiny
 * Llama with GQA and the tiny GPT-2 of test/fixtures/hf/ (PyTorch's weights) as F32 and as Q8_0
 * GGUF, a seeded random LoRA adapter on attention and MLP layers made on each base as `knobs tune`
 * loads it, merged with the default --dtype f16. For a few prompts llama.cpp's greedy tokens from
 * the merged file equal knobs' own from the merged file and from base + adapter (the adapter on the
 * base's layers, Q8_0 blocks included). Two greedy runs may part only at a near tie: where the
 * reference's top two next-token probabilities are within TIE (the f16 weights, and ggml's f16 or
 * q8_0 activations, round differently from knobs' f32).
 * The Q8_0 file keeps its untargeted Q8_0 tensors while the targeted ones are F16.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Llama as LlamaCpp, LlamaLogLevel, getLlama } from 'node-llama-cpp';
import { noGrad } from '../src/autograd/tape.js';
import { readGguf } from '../src/formats/gguf.js';
import { openFileSource } from '../src/io/byte-source.js';
import { convertModel } from '../src/load/convert.js';
import { openLanguageModel } from '../src/load/language-model.js';
import type { CausalLM } from '../src/models/causal-lm.js';
import { loadGgufModel } from '../src/models/gguf/load.js';
import { fromArray } from '../src/ops/creation.js';
import { cliInProcess } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';
import { llamaCppGreedy, softmaxRow } from './harness/llama-cpp.js';
import { makeRandomAdapter } from './harness/lora-adapter.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
const PROMPTS = [
  [1, 7, 12, 3, 9, 20],
  [1, 30, 5, 22],
  [1, 50, 50, 8, 3, 14, 41],
];
const N = 8;
/** The largest top-two gap in next-token probability at which two greedy runs may part. */
const TIE = 1e-2;
/** Each base: the LoRA targets, and GGUF tensors targeted and not (the untargeted keep the base file's type). */
const CASES = [
  {
    fixture: 'mistral-gqa-shards',
    targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'down_proj'],
    targeted: ['blk.0.attn_q.weight', 'blk.1.ffn_down.weight'],
    untargeted: 'blk.0.ffn_up.weight',
  },
  {
    fixture: 'gpt2-tiny',
    targets: ['c_attn', 'c_fc'],
    targeted: ['blk.0.attn_qkv.weight', 'blk.1.ffn_up.weight'],
    untargeted: 'blk.0.ffn_down.weight',
  },
];

let llama: LlamaCpp;
let tmp: string;

before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  tmp = await mkdtemp(join(tmpdir(), 'knobs-merge-judge-'));
});
after(async () => {
  await llama.dispose();
  await rm(tmp, { recursive: true, force: true });
});

/** The fixture's end-of-sequence id: knobs' greedy tokens end with it, llama.cpp stops before it. */
const EOS = 2;

/** knobs' greedy continuation, without the end-of-sequence token llama.cpp does not report. */
function greedy(model: CausalLM, prompt: number[]): number[] {
  const tokens = noGrad(() => model.generate(prompt, { maxNewTokens: N, temperature: 0 }).tokens);
  return tokens.at(-1) === EOS ? tokens.slice(0, -1) : tokens;
}

/** Each step's next-token probabilities of `model` along prompt + tokens. */
function probabilities(model: CausalLM, prompt: number[], tokens: number[]): Float64Array[] {
  const ids = [...prompt, ...tokens];
  const logits = noGrad(() => model.forward(fromArray(ids, [1, ids.length], { dtype: 'i32' })));
  const V = logits.shape[2]!;
  const all = logits.contiguousStorage() as Float32Array;
  return tokens.map((_, step) => softmaxRow(all, prompt.length - 1 + step, V));
}

/** `got` equals `want`, or parts from it at a step where `want`'s top two probabilities are within TIE. */
function assertSameGreedy(got: number[], want: number[], wantProbs: ArrayLike<number>[], what: string): void {
  const parted = want.findIndex((t, i) => t !== got[i]);
  if (parted < 0) return assert.equal(got.length, want.length, `${what}: ${got} vs ${want}`);
  const [first, second] = Array.from(wantProbs[parted]!).sort((a, b) => b - a);
  assert.ok(
    first! - second! <= TIE,
    `${what}: ${JSON.stringify(got)} vs ${JSON.stringify(want)} part at step ${parted}, where the top two differ by ${first! - second!}`,
  );
}

describe('llama.cpp runs a GGUF that knobs merge wrote from a GGUF base', () => {
  for (const { fixture, targets, targeted, untargeted } of CASES) {
    for (const dtype of ['f32', 'q8_0'] as const) {
      it(`${fixture} ${dtype} base + LoRA merged (targeted layers f16): llama.cpp's greedy tokens = knobs' (merged, and base + adapter)`, async () => {
        const src = join(tmp, fixture);
        if (dtype === 'f32') await fixtureWithTokenizer(join(HF_DIR, fixture), src);
        const base = join(tmp, `${fixture}.${dtype}.gguf`);
        await convertModel({ input: src, format: 'gguf', dtype, out: base });
        const adapter = join(tmp, `${fixture}-lora-${dtype}`);
        await makeRandomAdapter(base, adapter, targets, 11);
        const out = join(tmp, `${fixture}-merged.${dtype}.gguf`);
        const r = await cliInProcess(['merge', base, adapter, '--out', out]);
        assert.equal(r.code, 0, r.stderr);

        const source = await openFileSource(out);
        const types = new Map((await readGguf(source)).tensors.map((t) => [t.name, t.type.name]));
        await source.close();
        for (const name of targeted) assert.equal(types.get(name), 'F16', `${name}: targeted, f16`);
        assert.equal(types.get(untargeted), dtype === 'f32' ? 'F32' : 'Q8_0', `${untargeted}: as in the base`);

        const merged = (await loadGgufModel(out)).model;
        const adapted = (await openLanguageModel(base, { adapters: [adapter] })).model;
        const bare = (await loadGgufModel(base)).model;
        let moved = 0;
        for (const prompt of PROMPTS) {
          const ours = greedy(merged, prompt);
          const theirs = await llamaCppGreedy(llama, out, prompt, N);
          assertSameGreedy(
            ours,
            theirs.tokens,
            theirs.probabilities.map((p) => Float64Array.from({ length: 64 }, (_, v) => p.get(v) ?? 0)),
            `${fixture} ${dtype} llama.cpp vs knobs (merged)`,
          );
          const viaAdapter = greedy(adapted, prompt);
          assertSameGreedy(
            viaAdapter,
            ours,
            probabilities(merged, prompt, ours),
            `${fixture} ${dtype} knobs base + adapter vs merged`,
          );
          if (greedy(bare, prompt).join() !== ours.join()) moved++;
        }
        assert.ok(moved > 0, 'the adapter changes some greedy continuation');
      });
    }
  }
});
