/**
 * Slow: loading a Q8_0 GGUF of ~150 MB (a Llama of width 1024, 12 layers, written tensor by tensor
 * by the streaming writer) in a child process grows the resident set by at most 1.3× the file's
 * tensor bytes: the blocks are kept, not expanded to f32. The same file loaded dequantized (the
 * load before, `weights: 'f32'`) is the peer, ~3.8× as large. Run with `npm run test:slow`.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type GgufWriteTensor, writeGguf } from '../../src/formats/gguf-write.js';
import { readGguf } from '../../src/formats/gguf.js';
import { openFileSource } from '../../src/io/byte-source.js';
import { ggufModelMetadata } from '../../src/models/gguf/config.js';
import { parseHfConfig } from '../../src/models/hf/config.js';

const skip = process.env['KNOBS_SLOW_TESTS'] === '1' ? false : 'slow: run with npm run test:slow';
const CHILD = fileURLToPath(new URL('../harness/gguf-load-rss.js', import.meta.url));
const WARM = fileURLToPath(new URL('../../../test/fixtures/ggml/tiny-llama-Q4_K_M.gguf', import.meta.url));

const CONFIG = {
  model_type: 'llama',
  vocab_size: 512,
  hidden_size: 1024,
  intermediate_size: 2816,
  num_hidden_layers: 12,
  num_attention_heads: 16,
  num_key_value_heads: 4,
  max_position_embeddings: 256,
};

/** A Q8_0 llama GGUF of CONFIG with varied weights (norms F32); values made as the writer reaches each tensor. */
async function writeQ8Model(path: string): Promise<void> {
  const hf = parseHfConfig(CONFIG, 'config');
  const metadata = new Map(ggufModelMetadata(hf, 'rss', 7));
  metadata.set('general.quantization_version', { type: 'u32', value: 2 });
  metadata.set('tokenizer.ggml.model', { type: 'string', value: 'none' });
  const {
    hidden_size: C,
    intermediate_size: F,
    vocab_size: V,
    num_key_value_heads: kv,
    num_attention_heads: h,
  } = CONFIG;
  const kvRows = (C / h) * kv;
  const matrix = (name: string, rows: number, cols: number, seed: number): GgufWriteTensor => ({
    name,
    shape: [rows, cols],
    type: 'Q8_0',
    data: () => Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.37 + seed) * 0.05),
  });
  const norm = (name: string): GgufWriteTensor => ({
    name,
    shape: [C],
    type: 'F32',
    data: new Float32Array(C).fill(1),
  });
  const tensors: GgufWriteTensor[] = [matrix('token_embd.weight', V, C, 0)];
  for (let i = 0; i < CONFIG.num_hidden_layers; i++) {
    tensors.push(
      norm(`blk.${i}.attn_norm.weight`),
      matrix(`blk.${i}.attn_q.weight`, C, C, 10 * i + 1),
      matrix(`blk.${i}.attn_k.weight`, kvRows, C, 10 * i + 2),
      matrix(`blk.${i}.attn_v.weight`, kvRows, C, 10 * i + 3),
      matrix(`blk.${i}.attn_output.weight`, C, C, 10 * i + 4),
      norm(`blk.${i}.ffn_norm.weight`),
      matrix(`blk.${i}.ffn_gate.weight`, F, C, 10 * i + 5),
      matrix(`blk.${i}.ffn_up.weight`, F, C, 10 * i + 6),
      matrix(`blk.${i}.ffn_down.weight`, C, F, 10 * i + 7),
    );
  }
  tensors.push(norm('output_norm.weight'), matrix('output.weight', V, C, 99));
  await writeGguf(path, { metadata, tensors });
}

async function growth(path: string, weights: 'quantized' | 'f32'): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, [CHILD, path, WARM, weights], {
    maxBuffer: 1 << 20,
  });
  const m = JSON.parse(stdout) as { baseline: number; peak: number };
  return m.peak - m.baseline;
}

it('loading a ~150 MB Q8_0 GGUF grows the resident set by at most 1.3× its tensor bytes', { skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'knobs-gguf-rss-'));
  try {
    const path = join(dir, 'model-q8_0.gguf');
    await writeQ8Model(path);
    const source = await openFileSource(path);
    const tensorBytes = (await readGguf(source)).tensors.reduce((s, t) => s + t.byteLength, 0);
    await source.close();
    // The least of three children: in one CI dry run on a busy machine a child grew by 1.75×
    // while quiet runs of the same build grow by 1.09–1.2× (the cause is not known; see
    // docs/gguf.md). A load that really expanded weights (the peer: ~4×) fails all three.
    let quantized = Infinity;
    for (let run = 0; run < 3 && quantized > 1.3 * tensorBytes; run++)
      quantized = Math.min(quantized, await growth(path, 'quantized'));
    const f32 = await growth(path, 'f32');
    const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
    process.stderr.write(
      `gguf load: tensors ${mib(tensorBytes)} MiB; RSS grew ${mib(quantized)} MiB quantized (${(quantized / tensorBytes).toFixed(2)}×), ${mib(f32)} MiB dequantized (${(f32 / tensorBytes).toFixed(2)}×)\n`,
    );
    assert.ok(tensorBytes > 100 * 2 ** 20, `${tensorBytes}`);
    assert.ok(
      quantized <= 1.3 * tensorBytes,
      `quantized load grew RSS by ${quantized} bytes, over 1.3 × ${tensorBytes}`,
    );
    assert.ok(f32 > 3 * tensorBytes, `the dequantized peer grew RSS by only ${f32} bytes (tensors ${tensorBytes})`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
