/**
 * llama.cpp judges knobs' GGUF files (node-llama-cpp 3.21.1's prebuilt CPU llama.cpp, one
 * thread, F32 KV cache, no flash attention):
 *
 * - The PyTorch fixtures of test/fixtures/hf/ (GPT-2, Llama with GQA and llama3 rope, Llama tied
 *   with linear rope, Mistral, Qwen2 with biases; scripts/gen_hf_fixtures.py, with a tiny
 *   tokenizer added) converted by `knobs convert` to F32, Q8_0 and Q4_0, which knobs loads with
 *   the quantized matrices kept quantized: llama.cpp's greedy tokens equal knobs' from the same
 *   file (and, for F32, PyTorch's; quantized, they may part only at a near tie), and its
 *   next-token probabilities equal knobs' within 1e-3 (F32) and 1.5e-2 (Q8_0, Q4_0; see TOLERANCE).
 * - Tokenizers: a byte-level BPE under the GPT-2, Llama 3 and Qwen2 pre-tokenizers and a
 *   SentencePiece BPE, each in a GGUF written by `knobs convert`: llama.cpp's tokens for a varied
 *   text equal knobs' from the same GGUF, and knobs' from the original tokenizer.json.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Llama as LlamaCpp, LlamaLogLevel, getLlama } from 'node-llama-cpp';
import { noGrad } from '../src/autograd/tape.js';
import { saveSafetensors } from '../src/formats/safetensors.js';
import { convertModel } from '../src/load/convert.js';
import { GPT } from '../src/models/gpt.js';
import { loadGgufModel } from '../src/models/gguf/load.js';
import { Llama } from '../src/models/llama.js';
import { fromArray } from '../src/ops/creation.js';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { trainByteLevelBpe } from '../src/tokenizer/train-bpe.js';
import { repoRoot } from './harness/fixtures.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';
import { llamaCppGreedy, softmaxRow, withLlamaCpp } from './harness/llama-cpp.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
const CASES = [
  'gpt2-tiny',
  'gpt2-prefix-f16-shards',
  'llama-gqa-bf16-llama3',
  'llama-tied-f16-linear',
  'mistral-gqa-shards',
  'qwen2-bias-tied',
];
/**
 * Measured worst differences (knobs loads the quantized files quantized: q8_0 / q4_0 blocks as
 * they are, activations rounded to q8_0 blocks as ggml does): F32 3e-7 (Llama family) and 9e-5
 * (GPT-2: ggml's GELU is a table of f16 values). Q8_0 and Q4_0 differ by design, each side exact to
 * its own arithmetic: an f64 model of the same quantized steps puts knobs within 2e-7 of its own
 * (Qwen2 Q8_0 / Q4_0, Mistral Q8_0) and llama.cpp within 3e-7 of ggml's (Qwen2), where ggml
 * multiplies a tied head's Q8_0 blocks by q8_0 activations (knobs: the f32 embedding) and, on an
 * AVX2 CPU, rounds the input of an F16 matrix (ffn_down of these fixtures: 48 columns do not
 * quantize) to f16 (knobs: f32). On an AVX2 EPYC: 0.0016–0.0081, and 0.0106 for Qwen2 Q4_0 (its f16
 * input rounding alone 0.0092, its head alone 0.0039); on an AVX-512 CPU, whose llama.cpp kept f32
 * inputs for F16 matrices, 1e-7 untied (Mistral; Llama-GQA Q4_0) and up to 0.0099 tied.
 */
const TOLERANCE = { f32: 1e-3, q8_0: 1.5e-2, q4_0: 1.5e-2 } as const;

interface Expected {
  prompt: number[];
  greedy: number[];
}

let llama: LlamaCpp;
let tmp: string;

before(async () => {
  llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  tmp = await mkdtemp(join(tmpdir(), 'knobs-gguf-judge-'));
});
after(async () => {
  await llama.dispose();
  await rm(tmp, { recursive: true, force: true });
});

describe('llama.cpp runs the GGUF files knobs convert writes', () => {
  for (const name of CASES) {
    const expected = JSON.parse(readFileSync(join(HF_DIR, name, 'expected.json'), 'utf8')) as Expected;
    for (const dtype of ['f32', 'q8_0', 'q4_0'] as const) {
      it(`${name} ${dtype}: greedy tokens and next-token probabilities`, async () => {
        const dir = await fixtureWithTokenizer(join(HF_DIR, name), join(tmp, `${name}-${dtype}`));
        const path = join(tmp, `${name}.${dtype}.gguf`);
        await convertModel({ input: dir, format: 'gguf', dtype, out: path });
        const loaded = await loadGgufModel(path);
        const n = expected.greedy.length;
        const ours = loaded.model.generate(expected.prompt, { maxNewTokens: n, temperature: 0 }).tokens;
        const theirs = await llamaCppGreedy(llama, path, expected.prompt, n);
        // llama.cpp stops at the file's eos id; knobs' list ends there too. Quantized, the two may part at a
        // near tie (llama.cpp's top two closer than the tolerance): compared up to that step, not after.
        const parted = theirs.tokens.findIndex((t, i) => t !== ours[i]);
        const steps = parted < 0 ? theirs.tokens.length : parted + 1;
        if (parted >= 0) {
          const [first, second] = [...theirs.probabilities[parted]!.values()].sort((a, b) => b - a);
          assert.ok(
            dtype !== 'f32' && first! - second! <= TOLERANCE[dtype],
            `${name} ${dtype}: llama.cpp ${JSON.stringify(theirs.tokens)} vs knobs ${JSON.stringify(ours)} part at step ${parted}, where llama.cpp's top two differ by ${first! - second!}`,
          );
        }
        if (dtype === 'f32') assert.deepEqual(ours, expected.greedy, `${name}: knobs from GGUF vs PyTorch`);
        const ids = [...expected.prompt, ...ours];
        const logits = noGrad(() => loaded.model.forward(fromArray(ids, [1, ids.length], { dtype: 'i32' })));
        const V = logits.shape[2]!;
        const all = logits.contiguousStorage() as Float32Array;
        let worst = 0;
        theirs.probabilities.slice(0, steps).forEach((probs, step) => {
          const p = softmaxRow(all, expected.prompt.length - 1 + step, V);
          for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs((probs.get(v) ?? 0) - p[v]!));
        });
        assert.ok(worst <= TOLERANCE[dtype], `${name} ${dtype}: probabilities differ by up to ${worst}`);
      });
    }
  }
});

const TEXT = [
  'In the beginning God created the heaven and the earth.\n\nAnd the earth was without form, and void;',
  "It's 2024: WE'LL test 12345678 numbers, can't won't DON'T.   Spaces\tand\ttabs\r\n",
  'naïve café — “quotes” … 😀 日本語のテキスト Привет мир  trailing  ',
].join(' ');

/** A random-weight model of vocabulary `vocab` written as a Hugging Face directory with `tokenizer`. */
async function modelDir(
  dir: string,
  kind: 'gpt2' | 'llama' | 'qwen2',
  vocab: number,
  tokenizer: unknown,
): Promise<string> {
  const model =
    kind === 'gpt2'
      ? new GPT({ vocab_size: vocab, n_positions: 64, n_embd: 32, n_layer: 1, n_head: 2 })
      : new Llama({
          model_type: kind,
          vocab_size: vocab,
          hidden_size: 32,
          intermediate_size: 64,
          num_hidden_layers: 1,
          num_attention_heads: 2,
          num_key_value_heads: 1,
          max_position_embeddings: 64,
          bos_token_id: 1,
          eos_token_id: 2,
        });
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(model.toHFConfig()));
  await saveSafetensors(join(dir, 'model.safetensors'), model.stateDict());
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  return dir;
}

describe('llama.cpp tokenizes as knobs does, from the same GGUF', () => {
  const genesis = readFileSync(join(repoRoot(), 'test', 'fixtures', 'text', 'genesis-1-4.txt'), 'utf8');
  const bpe = trainByteLevelBpe(genesis, { vocabSize: 600 });
  const split = (regex: string) => ({
    ...bpe,
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: regex }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
  });
  const LLAMA3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const QWEN2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const spFile = (variant: string) =>
    JSON.parse(
      readFileSync(join(repoRoot(), 'test', 'fixtures', 'tokenizers', `sp-bpe.${variant}.tokenizer.json`), 'utf8'),
    ) as unknown;
  const cases: [string, 'gpt2' | 'llama' | 'qwen2', unknown][] = [
    ['gpt-2', 'gpt2', bpe],
    ['llama-bpe', 'llama', { ...split(LLAMA3), model: { ...(bpe.model as object), ignore_merges: true } }],
    ['qwen2', 'qwen2', split(QWEN2)],
    ['sentencepiece (normalizers)', 'llama', spFile('legacy')],
    ['sentencepiece (Metaspace)', 'llama', spFile('metaspace')],
  ];
  for (const [label, kind, tokenizerJson] of cases) {
    it(`${label}: llama.cpp's tokens equal knobs'`, async () => {
      const original = Tokenizer.fromJSON(tokenizerJson);
      const dir = await modelDir(join(tmp, `tok-${label}`), kind, original.vocabSize, tokenizerJson);
      const path = join(tmp, `tok-${label}.gguf`);
      await convertModel({ input: dir, format: 'gguf', dtype: 'f32', out: path });
      const fromGguf = (await loadGgufModel(path)).tokenizer!;
      await withLlamaCpp(llama, path, async ({ model }) => {
        const theirs = model.tokenize(TEXT) as unknown as number[];
        const ours = fromGguf.encode(TEXT, { addSpecialTokens: false }).ids;
        assert.ok(ours.length > 40, `${label}: a real tokenization`);
        assert.deepEqual(theirs, ours, `${label}: llama.cpp vs knobs (from the GGUF)`);
        assert.deepEqual(
          original.encode(TEXT, { addSpecialTokens: false }).ids,
          ours,
          `${label}: tokenizer.json vs GGUF`,
        );
      });
    });
  }
});
