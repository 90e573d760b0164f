/**
 * GGUF models without llama.cpp (test/gguf-llama-cpp.test.ts has llama.cpp as the judge): the
 * name and layout mapping, metadata ↔ config, `knobs convert` in every direction it allows, the
 * tensor types llama.cpp's rules give, and the typed errors for what knobs does not run.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { noGrad } from '../src/autograd/tape.js';
import { KnobsError } from '../src/errors.js';
import { readGguf } from '../src/formats/gguf.js';
import { writeGguf } from '../src/formats/gguf-write.js';
import { loadSafetensors, saveSafetensors } from '../src/formats/safetensors.js';
import { openFileSource } from '../src/io/byte-source.js';
import { convertModel } from '../src/load/convert.js';
import { loadGgufModel } from '../src/models/gguf/load.js';
import { ggufTensorName, hfTensorName, relayout } from '../src/models/gguf/names.js';
import { loadHfModel } from '../src/models/hf/load.js';
import { fromArray } from '../src/ops/creation.js';
import { cliInProcess } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'knobs-gguf-models-'));
});
after(() => rm(tmp, { recursive: true, force: true }));

interface Expected {
  prompt: number[];
  greedy: number[];
  logits_ids: number[];
  logits: number[][];
}
const expectedOf = (name: string): Expected =>
  JSON.parse(readFileSync(join(HF_DIR, name, 'expected.json'), 'utf8')) as Expected;

async function converted(name: string, dtype: string): Promise<string> {
  const dir = join(tmp, `${name}-src`);
  if (!existsSync(dir)) await fixtureWithTokenizer(join(HF_DIR, name), dir);
  const path = join(tmp, `${name}.${dtype}.gguf`);
  if (!existsSync(path)) await convertModel({ input: dir, format: 'gguf', dtype, out: path });
  return path;
}

async function fails(p: Promise<unknown>, code: string, rule: string | null, text: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof KnobsError, String(err));
    assert.equal(err.code, code, err.message);
    if (rule !== null) assert.equal((err as unknown as { rule: string }).rule, rule, err.message);
    assert.match(err.message, text);
    return true;
  });
}

describe('names and layouts', () => {
  it('every Hugging Face name maps to a GGUF name and back', () => {
    const llama = [
      'model.embed_tokens.weight',
      'model.layers.3.self_attn.k_proj.bias',
      'model.layers.0.mlp.down_proj.weight',
      'lm_head.weight',
    ];
    for (const n of llama) assert.equal(hfTensorName('llama', ggufTensorName('llama', n)!), n);
    assert.equal(ggufTensorName('llama', 'model.layers.3.self_attn.o_proj.weight'), 'blk.3.attn_output.weight');
    assert.equal(ggufTensorName('gpt2', 'h.1.attn.c_attn.weight'), 'blk.1.attn_qkv.weight');
    assert.equal(ggufTensorName('gpt2', 'wpe.weight'), 'position_embd.weight');
    assert.equal(ggufTensorName('gpt2', 'model.layers.0.mlp.up_proj.weight'), null);
    assert.equal(hfTensorName('llama', 'rope_freqs.weight'), null);
  });

  it("llama.cpp's q/k permutation interleaves the two halves of each head, and back", () => {
    // 2 heads of D = 4 rows, 1 column: rows [h0: a0 a1 b0 b1, h1: …] → [a0 b0 a1 b1, …].
    const rows = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
    const to = relayout({ kind: 'permute', heads: 2 }, rows, [8, 1], true);
    assert.deepEqual([...to.data], [0, 2, 1, 3, 10, 12, 11, 13]);
    assert.deepEqual([...relayout({ kind: 'permute', heads: 2 }, to.data, [8, 1], false).data], [...rows]);
    const t = relayout({ kind: 'transpose' }, Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3], true);
    assert.deepEqual(t.shape, [3, 2]);
    assert.deepEqual([...t.data], [1, 4, 2, 5, 3, 6]);
  });
});

describe('Hugging Face → GGUF → knobs', () => {
  for (const name of [
    'gpt2-tiny',
    'llama-gqa-bf16-llama3',
    'llama-tied-f16-linear',
    'mistral-gqa-shards',
    'qwen2-bias-tied',
  ]) {
    it(`${name}: F32 GGUF gives PyTorch's logits and greedy tokens`, async () => {
      const loaded = await loadGgufModel(await converted(name, 'f32'));
      const e = expectedOf(name);
      const ids = fromArray(e.logits_ids, [1, e.logits_ids.length], { dtype: 'i32' });
      const got = noGrad(() => loaded.model.forward(ids)).contiguousStorage() as Float32Array;
      const V = e.logits[0]!.length;
      e.logits.forEach((row, t) =>
        row.forEach((b, v) =>
          assert.ok(Math.abs(got[t * V + v]! - b) <= 1e-4 + 1e-4 * Math.abs(b), `${name} [${t}, ${v}]`),
        ),
      );
      assert.deepEqual(
        loaded.model.generate(e.prompt, { maxNewTokens: e.greedy.length, temperature: 0 }).tokens,
        e.greedy,
      );
    });
  }

  it("tensor types follow llama.cpp's rules (q4_0: 1-D F32, rows not a multiple of 32 F16, output head Q8_0)", async () => {
    const file = await readGguf(await openFileSource(await converted('gpt2-tiny', 'q4_0')));
    const type = (n: string) => file.tensors.find((t) => t.name === n)!.type.name;
    assert.equal(type('blk.0.attn_norm.weight'), 'F32');
    assert.equal(type('blk.0.attn_qkv.bias'), 'F32');
    assert.equal(type('position_embd.weight'), 'F32');
    assert.equal(type('token_embd.weight'), 'Q8_0'); // the tied output head
    assert.equal(type('blk.0.attn_qkv.weight'), 'Q4_0');
    const qwen = await readGguf(await openFileSource(await converted('qwen2-bias-tied', 'q8_0')));
    const q = (n: string) => qwen.tensors.find((t) => t.name === n)!;
    assert.equal(q('blk.0.ffn_down.weight').type.name, 'F16'); // rows of 48
    assert.deepEqual(q('blk.0.ffn_down.weight').dims, [48, 32]);
    assert.equal(q('blk.0.ffn_up.weight').type.name, 'Q8_0');
    assert.equal(readMeta(qwen, 'general.architecture'), 'qwen2');
    assert.equal(readMeta(qwen, 'qwen2.attention.head_count_kv'), 2);
    assert.equal(readMeta(qwen, 'general.file_type'), 7);
  });

  it('llama3 rope scaling travels as rope_freqs.weight; linear as metadata', async () => {
    const l3 = await readGguf(await openFileSource(await converted('llama-gqa-bf16-llama3', 'f32')));
    assert.deepEqual(l3.tensors.find((t) => t.name === 'rope_freqs.weight')!.shape, [4]);
    const lin = await readGguf(await openFileSource(await converted('llama-tied-f16-linear', 'f32')));
    assert.equal(readMeta(lin, 'llama.rope.scaling.type'), 'linear');
    assert.equal(readMeta(lin, 'llama.rope.scaling.factor'), 2);
    assert.equal(
      lin.tensors.some((t) => t.name === 'output.weight'),
      false,
    ); // tied
  });
});

function readMeta(file: Awaited<ReturnType<typeof readGguf>>, key: string): unknown {
  return (file.metadata.get(key) as { value: unknown } | undefined)?.value;
}

describe('GGUF → Hugging Face directory, and safetensors dtypes', () => {
  it('a Q8_0 GGUF back to an f32 directory loads with the same weights', async () => {
    const path = await converted('qwen2-bias-tied', 'q8_0');
    const out = join(tmp, 'qwen2-back');
    await convertModel({ input: path, format: 'safetensors', dtype: 'f32', out });
    assert.deepEqual((await readdir(out)).sort(), [
      'config.json',
      'generation_config.json',
      'model.safetensors',
      'tokenizer.json',
      'tokenizer_config.json',
    ]);
    const back = await loadHfModel(out);
    const direct = await loadGgufModel(path);
    for (const [name, t] of direct.model.stateDict())
      assert.deepEqual(back.model.stateDict().get(name)!.contiguousStorage(), t.contiguousStorage(), name);
  });

  it('a .safetensors file changes dtype, float tensors only', async () => {
    const src = join(tmp, 'mixed.safetensors');
    await saveSafetensors(src, { w: fromArray([1.5, -2.25, 3.1], [3]), ids: fromArray([1, 2], [2], { dtype: 'i32' }) });
    const out = join(tmp, 'mixed-bf16.safetensors');
    await convertModel({ input: src, format: 'safetensors', dtype: 'bf16', out });
    const { tensors } = await loadSafetensors(out);
    assert.equal((tensors.get('w') as { dtype: string }).dtype, 'bf16');
    assert.equal((tensors.get('ids') as { dtype: string }).dtype, 'i32');
  });
});

describe('tokenizer metadata both ways', () => {
  it('chat template, special tokens and add_bos travel from tokenizer_config.json to GGUF and back', async () => {
    const dir = await fixtureWithTokenizer(join(HF_DIR, 'llama-tied-f16-linear'), join(tmp, 'chat-src'));
    const template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}";
    await writeFile(
      join(dir, 'tokenizer_config.json'),
      JSON.stringify({ bos_token: 'a', eos_token: 'b', add_bos_token: true, chat_template: template }),
    );
    const path = join(tmp, 'chat.gguf');
    await convertModel({ input: dir, format: 'gguf', dtype: 'f16', out: path });
    const file = await readGguf(await openFileSource(path));
    assert.equal(readMeta(file, 'tokenizer.chat_template'), template);
    assert.equal(readMeta(file, 'tokenizer.ggml.bos_token_id'), 2); // 'a' is the third tiny token
    assert.equal(readMeta(file, 'tokenizer.ggml.eos_token_id'), 3);
    assert.equal(readMeta(file, 'tokenizer.ggml.add_bos_token'), true);
    assert.equal(readMeta(file, 'tokenizer.ggml.pre'), 'gpt-2');
    const loaded = await loadGgufModel(path);
    assert.deepEqual(loaded.tokenizer!.encode('ab').ids, [2, 2, 3]); // BOS, then a, b
    const back = join(tmp, 'chat-back');
    await convertModel({ input: path, format: 'safetensors', dtype: 'f32', out: back });
    const config = JSON.parse(readFileSync(join(back, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.chat_template, template);
    assert.equal(config.bos_token, 'a');
    assert.equal(config.add_bos_token, true);
  });
});

describe('bad input is a typed error', () => {
  it('invalid convert combinations list the valid ones; the output is never replaced', async () => {
    const path = await converted('gpt2-tiny', 'f32');
    await fails(
      convertModel({ input: path, format: 'gguf', dtype: 'q8_0', out: join(tmp, 'x.gguf') }),
      'E_USAGE',
      null,
      /from a model directory.*--format gguf --dtype f32\|f16\|bf16\|q8_0\|q4_0/,
    );
    await fails(
      convertModel({ input: join(tmp, 'gpt2-tiny-src'), format: 'gguf', dtype: 'q5_1', out: join(tmp, 'x.gguf') }),
      'E_USAGE',
      null,
      /--dtype q5_1 cannot be written as GGUF/,
    );
    await fails(
      convertModel({ input: path, format: 'safetensors', dtype: 'q8_0', out: join(tmp, 'x') }),
      'E_USAGE',
      null,
      /cannot be written as safetensors/,
    );
    await fails(
      convertModel({ input: join(tmp, 'gpt2-tiny-src'), format: 'gguf', dtype: 'f32', out: path }),
      'E_USAGE',
      null,
      /already exists/,
    );
    await fails(
      convertModel({ input: join(HF_DIR, 'gpt2-tiny'), format: 'gguf', dtype: 'f32', out: join(tmp, 'y.gguf') }),
      'E_FORMAT',
      'hf_no_tokenizer',
      /no tokenizer\.json/,
    );
    assert.equal(existsSync(join(tmp, 'y.gguf')), false);
  });

  it('a tensor of a ggml type knobs does not decode is named, with the supported types', async () => {
    const bytes = new Uint8Array(readFileSync(await converted('gpt2-tiny', 'f32')));
    // The info of output_norm.weight: name, n_dims 1, dims[0], then its type: F32 (0) → I32 (26), same size.
    const name = new TextEncoder().encode('output_norm.weight');
    const at = Buffer.from(bytes).indexOf(Buffer.from(name)) + name.length + 4 + 8;
    new DataView(bytes.buffer).setUint32(at, 26, true);
    const path = join(tmp, 'i32.gguf');
    await writeFile(path, bytes);
    await fails(loadGgufModel(path), 'E_FORMAT', 'gguf_unsupported_type', /output_norm\.weight' is I32.*Q8_0/);
  });

  it('an unsupported architecture, a pre-tokenizer llama.cpp has no name for, a model too large', async () => {
    const path = await converted('gpt2-tiny', 'f32');
    const source = await openFileSource(path);
    const file = await readGguf(source);
    await source.close();
    const tensors = [
      { name: 'token_embd.weight', shape: [64, 32], data: new Float32Array(64 * 32), type: 'F32' as const },
    ];
    const falcon = join(tmp, 'falcon.gguf');
    await writeGguf(falcon, {
      metadata: new Map([['general.architecture', { type: 'string', value: 'falcon' }]]),
      tensors,
    });
    await fails(loadGgufModel(falcon), 'E_FORMAT', 'gguf_model_unsupported_arch', /'falcon'.*llama, qwen2, gpt2/);
    const meta = new Map(file.metadata);
    meta.set('tokenizer.ggml.pre', { type: 'string', value: 'deepseek-llm' });
    const deepseek = join(tmp, 'pre.gguf');
    await writeGguf(deepseek, { metadata: meta, tensors: [] });
    await fails(
      loadGgufModel(deepseek),
      'E_FORMAT',
      'gguf_tokenizer_unknown_pre',
      /'deepseek-llm'.*gpt-2, llama-bpe, qwen2/,
    );
    await fails(
      loadGgufModel(path, { memoryLimit: 1000 }),
      'E_FORMAT',
      'gguf_model_too_large',
      /gpt2-tiny\.f32\.gguf: loading it needs .*\{"f32":\d+\}.*than the 0\.00 GiB \(1000 bytes\)/,
    );
    // A tokenizer.json whose regex llama.cpp knows by no name knobs maps.
    const dir = await fixtureWithTokenizer(join(HF_DIR, 'gpt2-tiny'), join(tmp, 'odd-pre'));
    const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    tj.pre_tokenizer = {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: '\\d+' }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    };
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tj));
    await fails(
      convertModel({ input: dir, format: 'gguf', dtype: 'f32', out: join(tmp, 'odd.gguf') }),
      'E_FORMAT',
      'gguf_tokenizer_unknown_pre',
      /"\\\\d\+"/,
    );
  });
});

describe('the CLI runs .gguf files', () => {
  it('knobs generate, eval, inspect, tokenize and convert', async () => {
    const path = await converted('qwen2-bias-tied', 'q8_0');
    const gen = await cliInProcess(['generate', path, '--prompt', 'abc', '--max-tokens', '4', '--temperature', '0']);
    assert.equal(gen.code, 0, gen.stderr);
    assert.match(gen.stdout, /^abc/);
    const text = join(tmp, 'eval.txt');
    await writeFile(text, 'the quick brown fox jumps over the lazy dog\n'.repeat(4));
    const ev = await cliInProcess(['eval', path, '--data', text, '--context', '32', '--json']);
    assert.equal(ev.code, 0, ev.stderr);
    assert.equal(JSON.parse(ev.stdout).tokens, 175);
    const listed = await cliInProcess(['inspect', path, '--json']);
    assert.equal(JSON.parse(listed.stdout).format, 'gguf');
    // What inspect says loading holds (from the header) is what generate --json reports having loaded.
    // 2 layers × 6 Q8_0 matrices; f32: the tied embedding, ffn_down (F16: rows of 48), 2 norms and 3 biases a layer, the final norm
    const weights = { q8_0: 12, f32: 14 };
    assert.deepEqual(JSON.parse(listed.stdout).loaded.weights, weights);
    const genJson = await cliInProcess(['generate', path, '--prompt', 'abc', '--max-tokens', '2', '--json']);
    assert.equal(genJson.code, 0, genJson.stderr);
    assert.deepEqual(JSON.parse(genJson.stdout).weights, weights);
    const human = await cliInProcess(['inspect', path]);
    assert.match(human.stdout, /^loaded as: f32 14, q8_0 12 {2}in memory: 33.9 KiB$/m);
    const tok = await cliInProcess(['tokenize', path, '--text', 'hi there', '--json']);
    assert.deepEqual(JSON.parse(tok.stdout).ids, [9, 10, 1, 21, 9, 6, 19, 6]);
    const bad = await cliInProcess(['convert', path, '--format', 'gguf', '--out', join(tmp, 'z.gguf')]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^knobs: error \[E_USAGE\]/);
    const ok = await cliInProcess([
      'convert',
      join(tmp, 'gpt2-tiny-src'),
      '--format',
      'gguf',
      '--dtype',
      'q4_0',
      '--out',
      join(tmp, 'cli.gguf'),
      '--json',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse(ok.stdout).tensors, { F32: 19, Q8_0: 1, Q4_0: 8 });
  });
});
