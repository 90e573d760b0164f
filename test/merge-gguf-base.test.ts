/**
 * `knobs merge BASE.gguf ADAPTER --out x.gguf` on the PyTorch fixtures of test/fixtures/hf/ (Llama
 * with GQA, GPT-2 with Conv1D) converted by `knobs convert` to F32, F16, Q8_0 and Q4_0, each with a
 * seeded random LoRA adapter made on the base as `knobs tune` loads it: the targeted tensors become
 * --dtype, every other tensor keeps the base file's type and bytes, the metadata is the base's, and
 * the merged file's logits equal the base + adapter (every layer decoded on both sides: the
 * quantized layers' q8_0 input rounding is a step function) to |a − b| ≤ 1e-5 + 1e-5·|b|. Bad input (an adapter for another base, a corrupt GGUF, a
 * K-quant base, an existing --out) is a typed error and writes nothing.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { noGrad } from '../src/autograd/tape.js';
import { loadLoraAdapter } from '../src/finetune/adapter.js';
import { dequantizeLayers } from '../src/finetune/quantized-base.js';
import { type GgufFile, readGguf } from '../src/formats/gguf.js';
import { openFileSource } from '../src/io/byte-source.js';
import { convertModel } from '../src/load/convert.js';
import { openLanguageModel } from '../src/load/language-model.js';
import { loadGgufModel } from '../src/models/gguf/load.js';
import { fromArray } from '../src/ops/creation.js';
import { f32ToF16Bits } from '../src/dtype.js';
import { cliInProcess } from './harness/cli.js';
import { repoRoot } from './harness/fixtures.js';
import { makeRandomAdapter } from './harness/lora-adapter.js';
import { fixtureWithTokenizer } from './harness/tiny-vocab.js';

const HF_DIR = join(repoRoot(), 'test', 'fixtures', 'hf');
const IDS = [1, 7, 12, 3, 9, 20, 16, 44];

let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'knobs-merge-gguf-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function ggufBase(fixture: string, dtype: string): Promise<string> {
  const out = join(tmp, `${fixture}.${dtype}.gguf`);
  if (existsSync(out)) return out;
  const dir = join(tmp, `${fixture}-src`);
  if (!existsSync(dir)) await fixtureWithTokenizer(join(HF_DIR, fixture), dir);
  await convertModel({ input: dir, format: 'gguf', dtype, out });
  return out;
}

async function header(path: string): Promise<{ gguf: GgufFile; bytes: Map<string, Uint8Array> }> {
  const source = await openFileSource(path);
  try {
    const gguf = await readGguf(source);
    const bytes = new Map<string, Uint8Array>();
    for (const t of gguf.tensors) bytes.set(t.name, await source.read(gguf.dataOffset + t.offset, t.byteLength));
    return { gguf, bytes };
  } finally {
    await source.close();
  }
}

function logits(model: { forward(ids: ReturnType<typeof fromArray>): { contiguousStorage(): unknown } }) {
  return noGrad(() =>
    model.forward(fromArray(IDS, [1, IDS.length], { dtype: 'i32' })).contiguousStorage(),
  ) as Float32Array;
}

function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length);
  for (let i = 0; i < want.length; i++)
    assert.ok(
      Math.abs(got[i]! - want[i]!) <= 1e-5 + 1e-5 * Math.abs(want[i]!),
      `${what}: logit ${i}: ${got[i]} vs ${want[i]}`,
    );
}

const CASES = [
  { fixture: 'mistral-gqa-shards', dtype: 'f32', targets: ['q_proj', 'k_proj', 'v_proj', 'down_proj'] },
  { fixture: 'mistral-gqa-shards', dtype: 'f16', targets: ['q_proj', 'k_proj', 'o_proj'] },
  { fixture: 'mistral-gqa-shards', dtype: 'q8_0', targets: ['q_proj', 'k_proj', 'v_proj', 'down_proj'] },
  { fixture: 'mistral-gqa-shards', dtype: 'q4_0', targets: ['k_proj', 'up_proj'] },
  { fixture: 'gpt2-tiny', dtype: 'f32', targets: ['c_attn', 'c_fc'] },
  { fixture: 'gpt2-tiny', dtype: 'q8_0', targets: ['c_attn', 'mlp.c_proj'] },
] as const;

describe('knobs merge into a GGUF base', () => {
  for (const { fixture, dtype, targets } of CASES) {
    it(`${fixture} ${dtype}: targeted tensors as --dtype, the rest as in the base file, logits = base + adapter`, async () => {
      const base = await ggufBase(fixture, dtype);
      const adapter = join(tmp, `${fixture}-${dtype}-lora`);
      await makeRandomAdapter(base, adapter, targets, 7);
      const out = join(tmp, `${fixture}-${dtype}-merged.gguf`);
      const r = await cliInProcess(['merge', base, adapter, '--out', out, '--dtype', 'f32', '--json']);
      assert.equal(r.code, 0, r.stderr);
      const result = JSON.parse(r.stdout);
      const quantized = dtype === 'q8_0' || dtype === 'q4_0';
      assert.equal(result.base, 'gguf');
      assert.match(
        r.stderr,
        new RegExp(
          `targeted layers \\(${result.modules.length}\\) written as f32${quantized ? ', dequantized from \\d+ q' : ';'}.*every other tensor keeps the type it has in`,
        ),
      );

      const [was, now] = [await header(base), await header(out)];
      assert.deepEqual([...now.gguf.metadata], [...was.gguf.metadata], 'the metadata, key for key');
      let changed = 0;
      for (const info of was.gguf.tensors) {
        const mine = now.gguf.tensors.find((t) => t.name === info.name)!;
        assert.deepEqual(mine.shape, info.shape, info.name);
        if (!equalBytes(now.bytes.get(info.name)!, was.bytes.get(info.name)!)) {
          changed++;
          assert.match(
            info.name,
            /^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|attn_qkv|ffn_down|ffn_up)\.weight$/,
            `${info.name} changed`,
          );
          assert.equal(mine.type.name, 'F32', `${info.name}: --dtype f32`);
        } else assert.equal(mine.type.name, info.type.name, `${info.name}: its type`);
      }
      assert.equal(changed, result.modules.length, 'exactly the targeted tensors changed');
      assert.equal(now.gguf.tensors.length, was.gguf.tensors.length);

      // base + adapter, as the merge computes it: the base as tune loads it, every layer decoded. The
      // untargeted layers' bytes are the base's (checked above); they run decoded on both sides because
      // a q8_0 / q4_0 layer rounds its input to q8_0 blocks, a step function: the merged W + s·B·A and
      // the reference's W·x + s·B·(A·x) differ by f32 roundings, and an input block whose amax/127 sits
      // on an f16 rounding midpoint then gets scales one f16 step (5e-4) apart — which the mistral q8_0
      // case met on an AVX2 CPU (its row 0 block scale, where the f32 GEMM rounds otherwise than AVX-512).
      const reference = await openLanguageModel(base);
      dequantizeLayers(reference.model);
      await loadLoraAdapter(adapter, reference.model, { allowBaseMismatch: true }); // checked by the merge, on the blocks
      const merged = await loadGgufModel(out);
      const mergedLogits = logits(merged.model);
      dequantizeLayers(merged.model);
      assertClose(logits(merged.model), logits(reference.model), `${fixture} ${dtype}`);
      const bare = await loadGgufModel(base);
      const diff = logits(bare.model).reduce((m, v, i) => Math.max(m, Math.abs(v - mergedLogits[i]!)), 0);
      assert.ok(diff > 1e-3, `the adapter moves the logits (${diff})`);
    });
  }

  it('the default --dtype is f16: the targeted tensors are the f32 merge rounded to f16', async () => {
    const base = await ggufBase('mistral-gqa-shards', 'q8_0');
    const adapter = join(tmp, 'mistral-gqa-shards-q8_0-lora');
    assert.ok(existsSync(adapter), 'made by the q8_0 case above');
    const out = join(tmp, 'merged-f16.gguf');
    const r = await cliInProcess(['merge', base, adapter, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      /targeted layers \(8\) written as f16, dequantized from \d q8_0; untargeted quantized layers kept their blocks \(\d+ q8_0\)/,
    );
    const [f16, f32] = [await header(out), await header(join(tmp, 'mistral-gqa-shards-q8_0-merged.gguf'))];
    let targeted = 0;
    for (const info of f32.gguf.tensors) {
      if (info.type.name !== 'F32' || !/attn_q|attn_k|attn_v|ffn_down/.test(info.name)) continue;
      targeted++;
      assert.equal(f16.gguf.tensors.find((t) => t.name === info.name)!.type.name, 'F16', info.name);
      const want = new Float32Array(f32.bytes.get(info.name)!.slice().buffer);
      const got = new Uint16Array(f16.bytes.get(info.name)!.slice().buffer);
      assert.deepEqual(Array.from(got), Array.from(want, f32ToF16Bits), info.name);
    }
    assert.equal(targeted, 8);
  });
});

describe('knobs merge into a GGUF base with --quantize', () => {
  it('an adapter tuned on the f32 file quantized to q4_0: the untargeted layers are written as those blocks', async () => {
    const base = await ggufBase('mistral-gqa-shards', 'f32');
    const adapter = join(tmp, 'on-q4');
    await makeRandomAdapter(base, adapter, ['q_proj', 'v_proj'], 5, undefined, 'q4_0');
    const out = join(tmp, 'quantized.gguf');
    const plain = await cliInProcess(['merge', base, adapter, '--out', out]);
    assert.equal(plain.code, 1, 'without --quantize it is another base');
    const r = await cliInProcess(['merge', base, adapter, '--out', out, '--quantize', 'q4_0', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(r.stdout);
    assert.deepEqual(result.dequantized, { q4_0: 4 });
    const { gguf } = await header(out);
    const types = new Map(gguf.tensors.map((t) => [t.name, t.type.name]));
    assert.equal(types.get('blk.0.attn_q.weight'), 'F16');
    assert.equal(types.get('blk.0.attn_k.weight'), 'Q4_0');
    assert.equal(types.get('token_embd.weight'), 'F32');
    assert.deepEqual(result.kept, { q4_0: result.tensors.Q4_0 });
  });
});

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((v, i) => v === b[i]);
}

describe('knobs merge into a GGUF base refuses bad input and writes nothing', () => {
  it('an adapter made on another base: lora_base_mismatch, unless --allow-base-mismatch', async () => {
    const f32 = await ggufBase('mistral-gqa-shards', 'f32');
    const q8 = await ggufBase('mistral-gqa-shards', 'q8_0');
    const adapter = join(tmp, 'on-f32');
    await makeRandomAdapter(f32, adapter, ['q_proj', 'v_proj'], 3);
    const out = join(tmp, 'mismatch.gguf');
    const r = await cliInProcess(['merge', q8, adapter, '--out', out]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /E_FORMAT.*lora_base_mismatch|was trained on another base/);
    assert.ok(!existsSync(out));
    const allowed = await cliInProcess(['merge', q8, adapter, '--out', out, '--allow-base-mismatch']);
    assert.equal(allowed.code, 0, allowed.stderr);
    const again = await cliInProcess(['merge', q8, adapter, '--out', out, '--allow-base-mismatch']);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists/);
  });

  it('a corrupt GGUF base (cut short, or a bad magic) is E_FORMAT; nothing is written', async () => {
    const f32 = await ggufBase('mistral-gqa-shards', 'f32');
    const adapter = join(tmp, 'on-f32-2');
    await makeRandomAdapter(f32, adapter, ['q_proj'], 4);
    const cut = join(tmp, 'cut.gguf');
    await copyFile(f32, cut);
    await truncate(cut, (await readFile(f32)).byteLength - 100);
    const magic = join(tmp, 'magic.gguf');
    const bytes = await readFile(f32);
    bytes[0] = 0x58;
    await writeFile(magic, bytes);
    for (const bad of [cut, magic]) {
      const out = join(tmp, 'corrupt-out.gguf');
      const r = await cliInProcess(['merge', bad, adapter, '--out', out]);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /E_FORMAT/);
      assert.ok(!existsSync(out), `${bad}: no output`);
    }
  });

  it('a K-quant base cannot be written back as GGUF: a usage error naming the tensor and type, before the merge', async () => {
    const kq = join(repoRoot(), 'test', 'fixtures', 'ggml', 'tiny-llama-Q4_K_M.gguf');
    const out = join(tmp, 'kquant.gguf');
    const r = await cliInProcess(['merge', kq, join(tmp, 'on-f32'), '--out', out]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /tensor '[^']+' is Q\d_K.*--format hf/);
    assert.ok(!existsSync(out));
  });
});
