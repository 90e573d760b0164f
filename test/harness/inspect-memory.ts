/**
 * The inspect memory check: a safetensors model of many MB, written tensor by tensor (the writer
 * never holds the model, so a 1 GiB one fits a test machine), read by `inspect --stats` in a child
 * process (inspect-rss.ts) whose peak resident set is compared with its largest tensor.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { encodeSafetensorsHeader } from '../../src/formats/safetensors-header.js';

const CHILD = fileURLToPath(new URL('./inspect-rss.js', import.meta.url));
const MAIN = fileURLToPath(new URL('../../src/cli/bin.js', import.meta.url));
const WARM = fileURLToPath(new URL('../../../test/fixtures/inspect/nonfinite.safetensors', import.meta.url));

type Dtype = 'F32' | 'F16' | 'BF16';

/** `elements` values of `dtype` with a cheap varied pattern, as little-endian bytes. */
function patterned(dtype: Dtype, elements: number, seed: number): Uint8Array {
  if (dtype === 'F32') {
    const v = new Float32Array(elements);
    for (let i = 0; i < elements; i++) v[i] = Math.sin(i * 0.001 + seed);
    return new Uint8Array(v.buffer);
  }
  // 16-bit patterns that are finite in both F16 and BF16: sign, a mid exponent, any mantissa.
  const v = new Uint16Array(elements);
  for (let i = 0; i < elements; i++) v[i] = ((i & 1) << 15) | 0x3800 | ((i * 7 + seed) & 0x3ff);
  return new Uint8Array(v.buffer);
}

/**
 * A model whose largest tensor is `largestMiB` (F32) among others a quarter to half its size
 * (F16, BF16, F32): 3× the largest in all. Returns the largest tensor's bytes.
 */
export async function writeLargeModel(path: string, largestMiB: number): Promise<number> {
  const n = (largestMiB * 2 ** 20) / 4;
  const plan: Array<[string, Dtype, number]> = [
    ['model.embed_tokens.weight', 'F32', n],
    ['model.layers.0.mlp.up_proj.weight', 'F16', n],
    ['model.layers.0.mlp.down_proj.weight', 'BF16', n],
    ['model.layers.1.self_attn.q_proj.weight', 'F32', n / 4],
    ['model.layers.1.self_attn.k_proj.weight', 'F32', n / 4],
    ['model.layers.1.mlp.up_proj.weight', 'F16', n],
  ];
  const entries = plan.map(([name, dtype, elements]) => ({
    name,
    dtype,
    shape: [elements / 1024, 1024],
    byteLength: elements * (dtype === 'F32' ? 4 : 2),
  }));
  await writeFile(path, encodeSafetensorsHeader(entries, null));
  for (const [i, [, dtype, elements]] of plan.entries()) await appendFile(path, patterned(dtype, elements, i));
  return n * 4;
}

export interface InspectMemory {
  /** Resident set before the model is read, its peak, the largest tensor and all tensors, in bytes. */
  baseline: number;
  peak: number;
  largest: number;
  total: number;
}

/**
 * Writes a model of `largestMiB`, inspects it in a child and asserts growth ≤ 1.2 × largest; then
 * runs `knobs inspect --stats --json` on it and returns what it wrote on stderr (progress).
 */
export async function checkInspectMemory(largestMiB: number): Promise<InspectMemory & { progress: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'knobs-inspect-rss-'));
  try {
    const path = join(dir, 'model.safetensors');
    await writeLargeModel(path, largestMiB);
    const { stdout } = await promisify(execFile)(process.execPath, [CHILD, path, WARM]);
    const m = JSON.parse(stdout) as InspectMemory;
    assert.equal(m.largest, largestMiB * 2 ** 20);
    const growth = m.peak - m.baseline;
    const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
    assert.ok(
      growth <= 1.2 * m.largest,
      `peak RSS grew ${mib(growth)} MiB over the baseline; the bound is 1.2 × the largest tensor = ${mib(1.2 * m.largest)} MiB (model ${mib(m.total)} MiB)`,
    );
    // The command line on the same model: one JSON object on stdout, progress lines on stderr.
    const cli = await promisify(execFile)(process.execPath, [MAIN, 'inspect', path, '--stats', '--json']);
    assert.equal((JSON.parse(cli.stdout) as { tensorBytes: number }).tensorBytes, m.total);
    return { ...m, progress: cli.stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
