/**
 * The inspect memory check: a model of many MiB — safetensors (F32, F16, BF16) or a llama GGUF
 * (Q8_0 matrices, F32 norms) — written a repeated chunk at a time (the writer never holds the
 * model, so ~1 GiB fits a test machine and takes seconds), then read by the real command line,
 * `knobs inspect PATH --stats --json`, in a child process whose peak resident set (VmHWM, from
 * peak-rss-hook.ts) is compared with the same command's on a tiny model of the same kind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { encodeSafetensorsHeader } from '../../src/formats/safetensors-header.js';
import { GgufBytes } from './gguf-bytes.js';

const HOOK = pathToFileURL(fileURLToPath(new URL('./peak-rss-hook.js', import.meta.url))).href;
const MAIN = fileURLToPath(new URL('../../src/cli/bin.js', import.meta.url));

export type ModelKind = 'safetensors' | 'gguf';

/** Bytes of the repeated pattern each tensor is written from. */
const PATTERN_BYTES = 1 << 20;

/** What a writer made: the largest tensor's and all tensors' bytes in the file. */
export interface Written {
  largest: number;
  total: number;
}

/** Writes `bytes` repeated (the last copy cut short) until `length` bytes, at the file's end. */
async function writeRepeated(file: Awaited<ReturnType<typeof open>>, bytes: Uint8Array, length: number) {
  for (let done = 0; done < length; done += bytes.length)
    await file.write(bytes, 0, Math.min(bytes.length, length - done));
}

/** PATTERN_BYTES of varied, finite values of `dtype`, as little-endian bytes. */
function pattern(dtype: 'F32' | 'F16' | 'BF16', seed: number): Uint8Array {
  if (dtype === 'F32') {
    const v = new Float32Array(PATTERN_BYTES / 4);
    for (let i = 0; i < v.length; i++) v[i] = Math.sin(i * 0.001 + seed);
    return new Uint8Array(v.buffer);
  }
  // 16-bit patterns that are finite in both F16 and BF16: sign, a mid exponent, any mantissa.
  const v = new Uint16Array(PATTERN_BYTES / 2);
  for (let i = 0; i < v.length; i++) v[i] = ((i & 1) << 15) | 0x3800 | ((i * 7 + seed) & 0x3ff);
  return new Uint8Array(v.buffer);
}

/**
 * A safetensors model whose largest tensor is `largestMiB` (F32) among others a quarter to all of
 * its size (F16, BF16, F32): 3× the largest in all.
 */
async function writeSafetensorsModel(path: string, largestMiB: number): Promise<Written> {
  const n = (largestMiB * 2 ** 20) / 4;
  const plan: Array<[string, 'F32' | 'F16' | 'BF16', number]> = [
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
  const file = await open(path, 'w');
  try {
    await file.write(encodeSafetensorsHeader(entries, null));
    for (const [i, e] of entries.entries()) await writeRepeated(file, pattern(e.dtype, i), e.byteLength);
  } finally {
    await file.close();
  }
  return { largest: n * 4, total: entries.reduce((s, e) => s + e.byteLength, 0) };
}

const GGML_F32 = 0;
const GGML_Q8_0 = 8;
/** Q8_0: 32 values in 34 bytes (f16 scale, 32 int8). */
const Q8_BLOCK_BYTES = 34;
const HIDDEN = 4096;
const Q8_ROW_BYTES = (HIDDEN / 32) * Q8_BLOCK_BYTES;

/** Q8_0 blocks with varied scales and every int8 value, PATTERN_BYTES rounded down to whole blocks. */
function q8Pattern(): Uint8Array {
  const blocks = Math.floor(PATTERN_BYTES / Q8_BLOCK_BYTES);
  const out = new Uint8Array(blocks * Q8_BLOCK_BYTES);
  const view = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const p = b * Q8_BLOCK_BYTES;
    view.setUint16(p, 0x1c00 + (b % 512), true); // f16 scales from 2^-8 up
    for (let j = 0; j < 32; j++) view.setInt8(p + 2 + j, ((b * 7 + j * 13) % 255) - 127);
  }
  return out;
}

/**
 * A llama GGUF whose largest tensors are about `largestMiB` of Q8_0 (rows of HIDDEN values): an
 * embedding, q (which llama.cpp permutes), the MLP, and F32 norms; about 3.25× the largest in all.
 */
async function writeGgufModel(path: string, largestMiB: number): Promise<Written> {
  const rows = Math.round((largestMiB * 2 ** 20) / Q8_ROW_BYTES);
  const plan: Array<[string, number, number[]]> = [
    ['token_embd.weight', GGML_Q8_0, [HIDDEN, rows]],
    ['blk.0.attn_norm.weight', GGML_F32, [HIDDEN]],
    ['blk.0.attn_q.weight', GGML_Q8_0, [HIDDEN, Math.ceil(rows / 4)]],
    ['blk.0.ffn_up.weight', GGML_Q8_0, [HIDDEN, rows]],
    ['blk.0.ffn_down.weight', GGML_Q8_0, [HIDDEN, rows]],
    ['output_norm.weight', GGML_F32, [HIDDEN]],
  ];
  const sizes = plan.map(([, type, dims]) => (type === GGML_F32 ? 4 * HIDDEN : Q8_ROW_BYTES * dims[1]!));
  const g = new GgufBytes()
    .header(plan.length, 3)
    .kvString('general.architecture', 'llama')
    .kvU32('llama.attention.head_count', 32)
    .kvU32('llama.attention.head_count_kv', 32);
  let offset = 0;
  plan.forEach(([name, type, dims], i) => {
    g.tensorInfo(name, dims, type, offset);
    offset += sizes[i]!; // every size is a multiple of the 32-byte alignment
  });
  const file = await open(path, 'w');
  try {
    await file.write(g.pad(32).bytes());
    const q8 = q8Pattern();
    for (const [i, [, type]] of plan.entries())
      await writeRepeated(file, type === GGML_F32 ? pattern('F32', i) : q8, sizes[i]!);
  } finally {
    await file.close();
  }
  return { largest: Math.max(...sizes), total: sizes.reduce((a, b) => a + b, 0) };
}

/** Writes a model of `kind` whose largest tensor is about `largestMiB` in the file. */
export function writeInspectModel(kind: ModelKind, path: string, largestMiB: number): Promise<Written> {
  return kind === 'gguf' ? writeGgufModel(path, largestMiB) : writeSafetensorsModel(path, largestMiB);
}

/** `knobs inspect PATH --stats --json` in a child: its report, its stderr and its peak RSS. */
async function inspectInChild(path: string, dir: string): Promise<{ report: Report; stderr: string; peak: number }> {
  const peakFile = join(dir, 'peak-rss');
  const { stdout, stderr } = await promisify(execFile)(
    process.execPath,
    ['--import', HOOK, MAIN, 'inspect', path, '--stats', '--json'],
    { env: { ...process.env, KNOBS_PEAK_RSS_FILE: peakFile }, maxBuffer: 64 << 20 },
  );
  return { report: JSON.parse(stdout) as Report, stderr, peak: Number(await readFile(peakFile, 'utf8')) };
}

interface Report {
  format: string;
  tensorBytes: number;
  tensors: Array<{ name: string; stats: { nonfinite: number; min: number | null } | null }>;
}

export interface InspectMemory {
  /** Peak resident set of the command on a tiny model and on the large one, the largest tensor and all tensors, in bytes. */
  baseline: number;
  peak: number;
  largest: number;
  total: number;
  /** What the command wrote on stderr for the large model (progress). */
  progress: string;
}

/**
 * Writes a model of `kind` with its largest tensor about `largestMiB` (bytes in the file), runs
 * `knobs inspect --stats --json` on it and on a tiny one of the same kind, and asserts the issue's
 * bound: the peak grows by at most 1.2 × the largest tensor over the tiny model's peak.
 */
export async function checkInspectMemory(kind: ModelKind, largestMiB: number): Promise<InspectMemory> {
  const dir = await mkdtemp(join(tmpdir(), 'knobs-inspect-rss-'));
  try {
    const tiny = join(dir, `tiny.${kind}`);
    await writeInspectModel(kind, tiny, 1);
    const baseline = (await inspectInChild(tiny, dir)).peak;
    const path = join(dir, `model.${kind}`);
    const { largest, total } = await writeInspectModel(kind, path, largestMiB);
    const { report, stderr, peak } = await inspectInChild(path, dir);
    assert.equal(report.format, kind);
    assert.equal(report.tensorBytes, total);
    for (const t of report.tensors) assert.ok(t.stats && t.stats.min !== null && t.stats.nonfinite === 0, t.name);
    const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
    assert.ok(
      peak - baseline <= 1.2 * largest,
      `peak RSS grew ${mib(peak - baseline)} MiB over the tiny model's; the bound is 1.2 × the largest tensor = ${mib(1.2 * largest)} MiB (model ${mib(total)} MiB)`,
    );
    return { baseline, peak, largest, total, progress: stderr };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
