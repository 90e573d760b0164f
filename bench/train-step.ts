/**
 * Shared driver of the training benches (mlp, gpt-block, gpt-train, gpt-generate, fashion): a knobs workload
 * (bench/workloads.ts) and the PyTorch peer doing the same work, each in its fastest thread
 * setting, timed interleaved (A B A B …), medians of per-step times → items per second.
 *
 * cores = 1: both processes pinned to core 0, one thread each. cores = 'all': each side tries 1
 * and every-core thread counts on a short probe and keeps the faster (torch.set_num_threads(1)
 * still lets its OpenBLAS use every core, and more intra-op threads than cores oversubscribe,
 * so the best setting is measured, not assumed).
 */
import { cpus } from 'node:os';
import * as k from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { TorchPeer, pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';
import type { Workload } from './workloads.js';

export interface TrainBench {
  name: string;
  unit: string;
  target: number;
  make(): Workload | Promise<Workload>;
  /** The peer request for `iters` steps (answers {seconds: number[]}). */
  peerRequest(iters: number): Record<string, unknown>;
  /** Steps per timed round, warm-up steps and rounds. */
  iters: number;
  warmup: number;
  rounds: number;
  /** Steps per thread-setting probe (default max(3, iters)). */
  probe?: number;
  /** Probe rounds per thread setting (default 2). */
  probeReps?: number;
  /**
   * The reported value from the median seconds per step (default: items per second, higher is
   * better); e.g. seconds per epoch, with `higherIsBetter: false`.
   */
  value?: (secondsPerStep: number, itemsPerStep: number) => number;
  higherIsBetter?: boolean;
}

/** Notes a bench leaves for the readable table (thread settings chosen). */
export const notes: string[] = [];

/*
 * After the peer answers, its BLAS worker threads keep spinning for a while (OpenBLAS: up to
 * ~0.1 s), and after knobs' steps V8's background GC threads still sweep; either would steal a
 * core from whatever runs next. Each side waits this long before it is timed, so neither
 * measures the other's leftovers.
 */
const SETTLE_MS = 250;
const settle = () => new Promise((resolve) => setTimeout(resolve, SETTLE_MS));

function timeSteps(w: Workload, iters: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    w.step();
    out.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return out;
}

export async function runTrainBench(b: TrainBench, opts: BenchOptions): Promise<BenchRow[]> {
  const backend = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!backend || !addon) throw new Error(`${b.name} bench needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  const all = cpus().length;
  const body = async (): Promise<BenchRow[]> => {
    const threadsBefore = addon.info().threads;
    const peer = await TorchPeer.start(opts.cores);
    try {
      return await k.withBackend('native', async () => {
        const w = await b.make();
        const choices = opts.cores === 1 || all === 1 ? [1] : [all, 1];
        // Warm-up (JIT, and the first steps fault their memory in), then a probe: each thread
        // setting twice, alternating, on each side; each side keeps its fastest.
        timeSteps(w, b.warmup);
        const probe = b.probe ?? Math.max(3, b.iters);
        const knobsBest = new Map<number, number>();
        const torchBest = new Map<number, number>();
        await peer.request(b.peerRequest(1)); // the peer builds and warms its model
        for (let rep = 0; rep < (choices.length > 1 ? (b.probeReps ?? 2) : 0); rep++) {
          for (const t of choices) {
            addon.setThreads(t);
            await settle();
            knobsBest.set(t, Math.min(knobsBest.get(t) ?? Infinity, median(timeSteps(w, probe))));
            await peer.request({ op: 'threads', threads: t });
            await settle();
            torchBest.set(
              t,
              Math.min(
                torchBest.get(t) ?? Infinity,
                median((await peer.request<{ seconds: number[] }>(b.peerRequest(probe))).seconds),
              ),
            );
          }
        }
        const fastest = (m: Map<number, number>) =>
          [...m].reduce((a, c) => (c[1] < a[1] ? c : a), [choices[0]!, Infinity])[0];
        const knobsThreads = fastest(knobsBest);
        const torchThreads = fastest(torchBest);
        addon.setThreads(knobsThreads);
        await peer.request({ op: 'threads', threads: torchThreads });
        notes.push(
          `${b.name} cores=${opts.cores}: knobs ${knobsThreads} thread(s), ${peer.version} ${torchThreads} thread(s)`,
        );
        const knobsTimes: number[] = [];
        const torchTimes: number[] = [];
        for (let r = 0; r < b.rounds; r++) {
          await settle();
          knobsTimes.push(...timeSteps(w, b.iters));
          await settle();
          torchTimes.push(...(await peer.request<{ seconds: number[] }>(b.peerRequest(b.iters))).seconds);
        }
        const value = (times: number[]) => (b.value ?? ((s, items) => items / s))(median(times), w.items);
        return [
          makeRow(
            b.name,
            opts.cores,
            b.unit,
            value(knobsTimes),
            peer.version,
            value(torchTimes),
            b.higherIsBetter ?? true,
            b.target,
          ),
        ];
      });
    } finally {
      addon.setThreads(threadsBefore);
      peer.close();
    }
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
