/**
 * Loading a Hugging Face model directory from a warm page cache: a ~300 MB f32 GPT-2 directory
 * (n_embd 768, 7 layers, vocabulary 32000; config.json + model.safetensors) is written into a
 * temporary directory at bench time and deleted after. The peer is torch.load of the same tensors
 * (saved with torch.save by the peer, from the same safetensors file).
 *
 * Each measurement is a fresh process — a knobs child (this file with --child) running
 * loadHfModel, a fresh PyTorch peer running torch.load — so that peak RSS (maxRSS / ru_maxrss)
 * belongs to that one load: each reports its RSS just before loading, the load's wall time and
 * its peak RSS. The timed region is the same on both sides: the interpreter has started and the
 * modules are imported before the clock starts; knobs times loadHfModel (config, headers, building
 * the model's parameter storage, reading the tensors), torch times torch.load (allocating its
 * storages, reading them, unpickling). Runs alternate (knobs, torch, knobs, torch, …); medians are reported. The files
 * are read once before the first run so the page cache is warm.
 *
 * Rows: GB/s (10⁹ bytes of weights per second, higher is better; the issue asks ≥ 1 GB/s) and
 * the peak RSS growth as a multiple of the weights' bytes (lower is better; the issue asks ≤ 1.2).
 */
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadHfModel } from '../src/models/hf/load.js';
import { GPT } from '../src/models/gpt.js';
import { withoutInit } from '../src/nn/init.js';
import { runBenchChild, TorchPeer } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import { notes } from './train-step.js';

const CONFIG = {
  model_type: 'gpt2',
  vocab_size: 32000,
  n_positions: 1024,
  n_embd: 768,
  n_layer: 7,
  n_head: 12,
  layer_norm_epsilon: 1e-5,
  activation_function: 'gelu_new',
  tie_word_embeddings: true,
  bos_token_id: 0,
  eos_token_id: 0,
};
const ROUNDS = 3;

interface LoadSample {
  seconds: number;
  rss_before_kib: number;
  peak_kib: number;
}

/** Writes config.json and model.safetensors (F32, patterned values) tensor by tensor; returns the weights' bytes. */
async function writeModelDir(dir: string): Promise<number> {
  const shapes = withoutInit(() => [...new GPT(CONFIG).stateDict()].map(([name, t]) => [name, t.shape] as const));
  const header: Record<string, { dtype: string; shape: readonly number[]; data_offsets: [number, number] }> = {};
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const largest = Math.max(...shapes.map(([, s]) => s.reduce((a, b) => a * b, 1)));
  const pattern = Float32Array.from({ length: largest }, (_, i) => ((i % 251) - 125) * 1e-3);
  const fh = await open(join(dir, 'model.safetensors'), 'w');
  try {
    await fh.write(prefix);
    await fh.write(Buffer.from(json));
    for (const [, shape] of shapes) {
      const n = shape.reduce((a, b) => a * b, 1);
      await fh.write(new Uint8Array(pattern.buffer, 0, 4 * n));
    }
  } finally {
    await fh.close();
  }
  await writeFile(join(dir, 'config.json'), JSON.stringify(CONFIG));
  return offset;
}

/** Reads a file through once, in chunks, so its pages are cached. */
async function warmPageCache(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const chunk = new Uint8Array(16 << 20);
    while ((await fh.read(chunk, 0, chunk.byteLength, null)).bytesRead > 0);
  } finally {
    await fh.close();
  }
}

/** The knobs side, in a fresh process: RSS before, load time, peak RSS. */
async function child(dir: string): Promise<void> {
  const before = process.memoryUsage().rss;
  const t0 = process.hrtime.bigint();
  const loaded = await loadHfModel(dir);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const sample: LoadSample = { seconds, rss_before_kib: before / 1024, peak_kib: process.resourceUsage().maxRSS };
  if (loaded.model.numParameters() === 0) throw new Error('empty model');
  process.stdout.write(JSON.stringify(sample) + '\n');
}

function knobsSample(dir: string, cores: 1 | 'all'): LoadSample {
  const self = fileURLToPath(import.meta.url);
  const out = runBenchChild('hf-load child', [self, '--child', dir], cores);
  return JSON.parse(out.trim().split('\n').pop()!) as LoadSample;
}

async function torchSample(path: string, cores: 1 | 'all'): Promise<{ sample: LoadSample; version: string }> {
  const peer = await TorchPeer.start(cores);
  try {
    return { sample: await peer.request<LoadSample>({ op: 'torch_load', path }), version: peer.version };
  } finally {
    peer.close();
  }
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const dir = await mkdtemp(join(tmpdir(), 'knobs-bench-hf-load-'));
  try {
    const bytes = await writeModelDir(dir);
    const pt = join(dir, 'weights.pt');
    const saver = await TorchPeer.start('all');
    try {
      await saver.request({ op: 'save_pt', safetensors: join(dir, 'model.safetensors'), out: pt });
    } finally {
      saver.close();
    }
    await warmPageCache(join(dir, 'model.safetensors'));
    await warmPageCache(pt);
    const knobs: LoadSample[] = [];
    const torch: LoadSample[] = [];
    let version = '';
    for (let i = 0; i < ROUNDS; i++) {
      knobs.push(knobsSample(dir, opts.cores));
      const t = await torchSample(pt, opts.cores);
      torch.push(t.sample);
      version = t.version;
    }
    const gbps = (s: LoadSample): number => bytes / s.seconds / 1e9;
    const growth = (s: LoadSample): number => ((s.peak_kib - s.rss_before_kib) * 1024) / bytes;
    notes.push(
      `hf_load cores=${opts.cores}: ${(bytes / 1e6).toFixed(0)} MB f32 GPT-2 directory, warm page cache, fresh process per load; issue bars: ≥ 1 GB/s and peak RSS growth ≤ 1.2× the weights`,
    );
    return [
      makeRow(
        `hf_load_gpt2_${Math.round(bytes / 1e6)}mb_f32`,
        opts.cores,
        'GB/s',
        median(knobs.map(gbps)),
        version,
        median(torch.map(gbps)),
        true,
      ),
      makeRow(
        `hf_load_gpt2_${Math.round(bytes / 1e6)}mb_f32_rss_growth`,
        opts.cores,
        'x weights',
        median(knobs.map(growth)),
        version,
        median(torch.map(growth)),
        false,
      ),
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') await child(process.argv[3]!);
