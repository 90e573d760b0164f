/**
 * Peak memory of kjv-gpt training (the gpt-train workload, bench/workloads.ts): a fresh knobs
 * process (this file with --child) runs STEPS training steps and reports its peak resident set
 * size (process.resourceUsage().maxRSS); a fresh PyTorch peer runs the same steps and reports
 * ru_maxrss. Both numbers include the runtime itself (Node + addon + oneDNN; Python + torch).
 *
 * Unit MiB, lower is better: `ratio` = torch / knobs (docs/design.md: > 1 means knobs is better), so
 * the "knobs ≤ 1.5 × torch" is ratio ≥ 1/1.5 ≈ 0.67 (the row's target).
 */
import { fileURLToPath } from 'node:url';
import * as k from '../src/index.js';
import { loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { runBenchChild, TorchPeer } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow } from './row.js';
import { notes } from './train-step.js';
import { gptTrainWorkload, KJV_BATCH } from './workloads.js';

const STEPS = 3;
const MIB = 1024; // maxRSS / ru_maxrss are KiB

function child(steps: number): void {
  const backend = loadNativeBackend();
  if (!backend) throw new Error(`gpt-memory needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  k.setBackend('native');
  const w = gptTrainWorkload(KJV_BATCH);
  for (let i = 0; i < steps; i++) w.step();
  process.stdout.write(JSON.stringify({ kib: process.resourceUsage().maxRSS }) + '\n');
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const self = fileURLToPath(import.meta.url);
  const out = runBenchChild('gpt-memory child', [self, '--child', String(STEPS)], opts.cores);
  const knobsMiB = (JSON.parse(out.trim().split('\n').pop()!) as { kib: number }).kib / MIB;
  const peer = await TorchPeer.start(opts.cores);
  let torchMiB: number;
  try {
    await peer.request({ op: 'gpt_train', batch: KJV_BATCH, iters: STEPS });
    torchMiB = (await peer.request<{ kib: number }>({ op: 'maxrss' })).kib / MIB;
  } finally {
    peer.close();
  }
  notes.push(
    `gpt_train_peak_rss cores=${opts.cores}: peak RSS of a fresh process over ${STEPS} kjv-gpt training steps, runtime included; lower is better, ratio = torch/knobs, target 0.67 = knobs ≤ 1.5× torch`,
  );
  return [
    makeRow(`gpt_train_peak_rss_kjv_b${KJV_BATCH}`, opts.cores, 'MiB', knobsMiB, peer.version, torchMiB, false, 0.67),
  ];
}

if (process.argv[2] === '--child') child(Number(process.argv[3]));
