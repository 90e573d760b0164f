#!/usr/bin/env node
// Quantization fixtures made by ggml itself (test/fixtures/ggml/), so knobs' GGUF quantizers and
// dequantizers are checked against the library llama.cpp runs, not against our reading of it.
//
//   1. rows.f32: 16,384 seeded f32 values (64 super-blocks of 256), edge cases first (all-zero blocks,
//      ±max of equal magnitude, tiny and subnormal values, exact .5 ties, constant and one-sign
//      blocks), then random values of several distributions. No NaN or infinity.
//   2. scripts/ggml_quant_fixtures.c, compiled with gcc against node-llama-cpp's prebuilt
//      libggml-base.so and libllama.v0.4.0.so (declarations in scripts/ggml-abi/ggml_abi.h),
//      quantizes them with ggml's quantize_row_{q8_0,q4_0,q4_1,q5_0,q5_1,q4_K,q5_K,q6_K}_ref and dequantizes the
//      blocks with dequantize_row_*: <TYPE>.blocks and <TYPE>.dequant.f32.
//   3. A tiny Llama (2 layers, width 256, feed-forward 160, 4 query heads sharing 1 key/value head,
//      vocabulary 32, seeded weights) written as F32 GGUF by knobs' writer, turned into Q4_K_M,
//      Q5_K_M and Q6_K by llama_model_quantize; every tensor of those files dequantized by ggml,
//      recorded as a SHA-256 of its f32 bytes in manifest.json. ffn_down's rows (160 values) are not
//      whole super-blocks, so llama.cpp falls back as it does for real models (Q4_K → Q5_0,
//      Q5_K → Q5_1, Q6_K → Q8_0): the files hold those types too.
//
// Needs gcc and `npm install` (node-llama-cpp is a devDependency); the tests need neither.
// Run after `npx tsc -p tsconfig.json`: `node scripts/gen_ggml_fixtures.mjs`.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeGguf } from '../dist/src/formats/gguf-write.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'test/fixtures/ggml');
const libs = join(root, 'node_modules/@node-llama-cpp/linux-x64/bins/linux-x64');
const bundle = join(root, 'node_modules/node-llama-cpp/llama/gitRelease.bundle');
const SEED = 20261130;
const MODEL_FTYPES = ['Q4_K_M', 'Q5_K_M', 'Q6_K'];

/** mulberry32: a small seeded generator, so the inputs are reproducible without committing a seed library. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = rng(SEED);
const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());

/** 64 super-blocks of 256 values: edge cases, then random ones. */
function rowValues() {
  const blocks = []; // 32-value blocks
  const block = (f) => blocks.push(Array.from({ length: 32 }, (_, j) => f(j)));
  // Super-block 0: eight Q8_0/Q4_0 edge cases.
  block(() => 0); // all zero
  block(() => (random() - 0.5) * 1e-6); // tiny: an f16-subnormal scale
  block((j) => (j - 16) * 1e-40); // f32 subnormals: the scale flushes to f16 zero
  block((j) => (j === 0 ? 127 : ((j % 2 === 0 ? 1 : -1) * (j * 4 + 0.5)) % 127)); // Q8_0 d = 1: x·id = k + 0.5 ties
  block((j) => (j === 0 ? -8 : -8 + j * 0.5)); // Q4_0 d = 1: x·id + 8.5 lands on integers and halves
  block((j) => (j === 3 ? 2.5 : j === 9 ? -2.5 : Math.sin(j))); // equal ±max: Q4_0 takes the first (positive)
  block((j) => (j === 3 ? -2.5 : j === 9 ? 2.5 : Math.sin(j))); // the same, negative first
  block((j) => (j === 5 ? 500000 : (random() - 0.5) * 1e-3)); // one huge value among tiny ones
  // Super-blocks 1..6: K-quant edge cases over whole super-blocks.
  for (let i = 0; i < 8; i++) block(() => 0); // all zero
  for (let i = 0; i < 8; i++) block((j) => ((i + j) % 2 ? 500000 : -500000) * (j % 3 === 0 ? 1 : random())); // ±max
  for (let i = 0; i < 8; i++) block(() => 0.3); // constant positive
  for (let i = 0; i < 8; i++) block(() => -random() * 2 - 0.1); // all negative
  for (let i = 0; i < 8; i++) block((j) => (j === (i * 5) % 32 ? (i % 2 ? -3 : 3) : 0)); // sparse spikes
  for (let i = 0; i < 8; i++) block(() => gauss() * 1e-5 * (i + 1)); // tiny, f16-subnormal scales
  // The rest: random values, one distribution per super-block, some with a different scale per block.
  const dists = [
    () => gauss(),
    () => gauss() * 0.02,
    () => random() * 2 - 1,
    () => gauss() ** 3,
    () => gauss() * 0.02 + 0.05,
  ];
  for (let s = 7; s < 64; s++) {
    const d = dists[s % dists.length];
    for (let i = 0; i < 8; i++) {
      const scale = s % 3 === 0 ? 10 ** (random() * 4 - 2) : 1;
      block(() => d() * scale);
    }
  }
  return Float32Array.from(blocks.flat());
}

/** A tiny Llama with llama.cpp's tensor names and enough metadata for its loader; ggml dims are multiples of 256. */
async function writeTinyLlama(path) {
  const V = 32; // vocabulary
  const C = 256; // width
  const F = 160; // feed-forward: ffn_down's rows are 160 values, not whole super-blocks
  const H = 4; // query heads
  const KV = 1; // key/value heads
  const L = 2; // layers: llama.cpp's Q4_K_M/Q5_K_M give the layers' ffn_down different types
  const hd = C / H;
  const weights = (n, scale) => Float32Array.from({ length: n }, () => gauss() * scale);
  const ones = (n) => Float32Array.from({ length: n }, () => 1 + gauss() * 0.1);
  const layer = (i) => [
    [`blk.${i}.attn_norm.weight`, [C], ones(C)],
    [`blk.${i}.attn_q.weight`, [C, C], weights(C * C, 0.06)],
    [`blk.${i}.attn_k.weight`, [KV * hd, C], weights(KV * hd * C, 0.06)],
    [`blk.${i}.attn_v.weight`, [KV * hd, C], weights(KV * hd * C, 0.06)],
    [`blk.${i}.attn_output.weight`, [C, C], weights(C * C, 0.04)],
    [`blk.${i}.ffn_norm.weight`, [C], ones(C)],
    [`blk.${i}.ffn_gate.weight`, [F, C], weights(F * C, 0.06)],
    [`blk.${i}.ffn_up.weight`, [F, C], weights(F * C, 0.06)],
    [`blk.${i}.ffn_down.weight`, [C, F], weights(C * F, 0.04)],
  ];
  const tensors = [
    ['token_embd.weight', [V, C], weights(V * C, 1)],
    ...Array.from({ length: L }, (_, i) => layer(i)).flat(),
    ['output_norm.weight', [C], ones(C)],
    ['output.weight', [V, C], weights(V * C, 0.06)],
  ].map(([name, shape, data]) => ({ name, shape, data, type: 'F32' }));
  const u32 = (value) => ({ type: 'u32', value });
  const metadata = new Map([
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: 'knobs tiny llama (ggml fixtures)' }],
    ['general.file_type', u32(0)],
    ['llama.vocab_size', u32(V)],
    ['llama.context_length', u32(128)],
    ['llama.embedding_length', u32(C)],
    ['llama.block_count', u32(L)],
    ['llama.feed_forward_length', u32(F)],
    ['llama.attention.head_count', u32(H)],
    ['llama.attention.head_count_kv', u32(KV)],
    ['llama.rope.dimension_count', u32(hd)],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
  ]);
  await writeGguf(path, { metadata, tensors });
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

const tmp = mkdtempSync(join(tmpdir(), 'knobs-ggml-'));
try {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const exe = join(tmp, 'ggml_quant_fixtures');
  execFileSync('gcc', [
    '-O1',
    '-std=c11',
    '-Wall',
    '-Wextra',
    '-Werror',
    `-I${join(root, 'scripts')}`,
    '-o',
    exe,
    join(root, 'scripts/ggml_quant_fixtures.c'),
    `-L${libs}`,
    '-l:libggml-base.so',
    '-l:libllama.v0.4.0.so',
    `-Wl,-rpath,${libs}`,
  ]);
  const run = (...args) => execFileSync(exe, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

  const rows = rowValues();
  writeFileSync(join(out, 'rows.f32'), rows);
  run('rows', join(out, 'rows.f32'), out);

  const f32 = join(tmp, 'tiny-llama-F32.gguf');
  await writeTinyLlama(f32);
  const models = {};
  for (const ftype of MODEL_FTYPES) {
    const file = `tiny-llama-${ftype}.gguf`;
    run('quantize', f32, join(out, file), ftype);
    const dir = join(tmp, ftype);
    mkdirSync(dir);
    const tensors = run('dequant', join(out, file), dir)
      .trim()
      .split('\n')
      .map((line) => {
        const [i, name, type, elements] = line.split(' ');
        return { name, type, elements: Number(elements), dequant_sha256: sha256(readFileSync(join(dir, `${i}.f32`))) };
      });
    models[file] = { ftype, tensors };
  }

  const commit = execFileSync('git', ['bundle', 'list-heads', bundle], { encoding: 'utf8' }).split(' ')[0];
  const manifest = {
    generator: 'scripts/gen_ggml_fixtures.mjs + scripts/ggml_quant_fixtures.c',
    ggml: {
      from: 'node-llama-cpp 3.21.1 prebuilt linux-x64 (CPU) libraries',
      llama_cpp_release: JSON.parse(
        readFileSync(join(root, 'node_modules/node-llama-cpp/llama/binariesGithubRelease.json'), 'utf8'),
      ).release,
      llama_cpp_bundle_commit: commit,
      libggml_base_sha256: sha256(readFileSync(join(libs, 'libggml-base.so'))),
      libllama_sha256: sha256(readFileSync(join(libs, 'libllama.v0.4.0.so'))),
    },
    gcc: execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0],
    rows: {
      file: 'rows.f32',
      values: rows.length,
      seed: SEED,
      types: ['Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', 'Q4_K', 'Q5_K', 'Q6_K'],
    },
    models,
  };
  writeFileSync(join(out, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const total = readdirSync(out).reduce((n, f) => n + statSync(join(out, f)).size, 0);
  console.log(`wrote ${readdirSync(out).length} files, ${total} bytes, into ${out}`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
