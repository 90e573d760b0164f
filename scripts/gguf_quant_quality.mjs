#!/usr/bin/env node
// Quantization quality of knobs' GGUF Q8_0 and Q4_0 (docs/gguf.md, "Quantization quality").
//
// For each run directory made by `knobs train` (a KJV language model): every matrix (2-D tensor whose
// rows are a multiple of 32 values) is stored as Q8_0 or Q4_0 in a GGUF file written by
// src/formats/gguf-write.ts (other tensors stay F32), the file is read back with src/formats/gguf.ts,
// the dequantized weights go into a copy of the run, and `knobs eval COPY --json` scores it on the
// run's whole validation split. F32 (the same path, unquantized) is the reference.
//
// With --llama-quantize EXE (scripts/ggml_quant_fixtures.c compiled as scripts/gen_ggml_fixtures.mjs
// compiles it), also llama.cpp's K-quant mixes: `knobs convert RUN --format gguf --dtype f32`, then
// llama_model_quantize to Q4_K_M, Q5_K_M and Q6_K, then `knobs convert` back to safetensors (knobs
// decodes the K-quants) and the same `knobs eval`. Their GGUF bytes include the tokenizer metadata.
//
// Usage, after `npx tsc -p tsconfig.json`:
//   node scripts/gguf_quant_quality.mjs RUN_DIR... [--json] [--llama-quantize EXE] [--types T,T…]
// --types picks rows (default F32,Q8_0,Q4_0 and, with --llama-quantize, Q4_K_M,Q5_K_M,Q6_K); the
// "vs f32" column needs F32 among them.
// e.g. knobs train recipes/kjv-gpt.json --out runs/kjv-gpt --steps 300; then this script on runs/kjv-gpt.
// Prints a Markdown table (or one JSON object per line with --json). Set KNOBS_THREADS to pin threads.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tensor, loadSafetensors, saveSafetensors } from '../dist/src/index.js';
import { readGguf, readGgufTensor } from '../dist/src/formats/gguf.js';
import { writeGguf } from '../dist/src/formats/gguf-write.js';
import { openFileSource } from '../dist/src/io/byte-source.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'dist/src/cli/bin.js');
const TYPES = ['F32', 'Q8_0', 'Q4_0'];
const K_MIXES = ['Q4_K_M', 'Q5_K_M', 'Q6_K'];
const args = process.argv.slice(2);
const json = args.includes('--json');
const exeAt = args.indexOf('--llama-quantize');
const llamaQuantize = exeAt >= 0 ? args[exeAt + 1] : undefined;
const typesAt = args.indexOf('--types');
const chosen = typesAt >= 0 ? args[typesAt + 1].split(',') : undefined;
const flagged = [exeAt, typesAt].filter((i) => i >= 0).flatMap((i) => [i, i + 1]);
const runs = args.filter((a, i) => a !== '--json' && !flagged.includes(i));
if (runs.length === 0) {
  console.error('usage: node scripts/gguf_quant_quality.mjs RUN_DIR... [--json]');
  process.exit(2);
}

/** The run's weights stored as `type` in a GGUF file, read back: the values and the file's size. */
async function roundTrip(weights, type, dir) {
  const path = join(dir, `model-${type}.gguf`);
  const tensors = [...weights].map(([name, t]) => {
    const quantize = t.shape.length === 2 && t.shape[1] % 32 === 0;
    return { name, shape: t.shape, data: t.contiguousStorage(), type: quantize ? type : 'F32' };
  });
  const quantized = tensors.filter((t) => t.type !== 'F32').length;
  await writeGguf(path, { metadata: new Map([['general.name', { type: 'string', value: type }]]), tensors });
  const source = await openFileSource(path);
  const back = new Map();
  try {
    const file = await readGguf(source);
    for (const t of tensors)
      back.set(t.name, Tensor.fromStorage(await readGgufTensor(source, file, t.name), t.shape, 'f32'));
  } finally {
    await source.close();
  }
  return { values: back, bytes: statSync(path).size, quantized, tensors: tensors.length };
}

const knobs = (...argv) => execFileSync(process.execPath, [bin, ...argv], { encoding: 'utf8' });

/** llama.cpp's `mix` of the run, decoded back by knobs: the values and the GGUF's size. */
async function llamaCppRoundTrip(run, mix, dir) {
  const f32 = join(dir, 'f32.gguf');
  const quantized = join(dir, `${mix}.gguf`);
  knobs('convert', run, '--format', 'gguf', '--dtype', 'f32', '--out', f32);
  execFileSync(llamaQuantize, ['quantize', f32, quantized, mix], { stdio: 'ignore' });
  knobs('convert', quantized, '--format', 'safetensors', '--dtype', 'f32', '--out', join(dir, 'back'));
  const { tensors } = await loadSafetensors(join(dir, 'back', 'model.safetensors'));
  return { values: tensors, bytes: statSync(quantized).size, quantized: 'mix', tensors: tensors.size };
}

const rows = [];
for (const run of runs) {
  const { tensors: weights } = await loadSafetensors(join(run, 'model.safetensors'));
  const params = [...weights.values()].reduce((n, t) => n + t.size, 0);
  let reference = null;
  for (const type of chosen ?? (llamaQuantize ? [...TYPES, ...K_MIXES] : TYPES)) {
    const copy = mkdtempSync(join(tmpdir(), 'knobs-quality-'));
    try {
      for (const f of readdirSync(run)) if (statSync(join(run, f)).isFile()) copyFileSync(join(run, f), join(copy, f));
      const { values, bytes, quantized, tensors } = K_MIXES.includes(type)
        ? await llamaCppRoundTrip(run, type, copy)
        : await roundTrip(weights, type, copy);
      await saveSafetensors(join(copy, 'model.safetensors'), values);
      const result = JSON.parse(knobs('eval', copy, '--json'));
      if (type === 'F32') reference = result.bits_per_byte;
      const row = {
        model: basename(run),
        params,
        type,
        matrices: `${quantized}/${tensors}`,
        gguf_bytes: bytes,
        bits_per_byte: result.bits_per_byte,
        vs_f32_percent: reference === null ? null : (100 * (result.bits_per_byte - reference)) / reference,
      };
      rows.push(row);
      if (json) console.log(JSON.stringify(row));
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  }
}
if (!json) {
  console.log('| model | params | type | quantized tensors | GGUF bytes | bits/byte | vs f32 |');
  console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: |');
  for (const r of rows)
    console.log(
      `| ${r.model} | ${r.params} | ${r.type} | ${r.matrices} | ${r.gguf_bytes} | ${r.bits_per_byte.toFixed(4)} | ${r.type === 'F32' || r.vs_f32_percent === null ? '—' : `${r.vs_f32_percent >= 0 ? '+' : ''}${r.vs_f32_percent.toFixed(2)} %`} |`,
    );
}
