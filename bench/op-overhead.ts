/**
 * Per-op overhead: a + b on 16 floats through the public API (tensor → dispatch → native kernel →
 * new tensor), in µs per op, against torch.add on the same sizes, interleaved, medians.
 * The aim is absolute (≤ 5 µs per op), not a ratio to torch, so the row carries no ratio target.
 */
import { cpus } from 'node:os';
import * as k from '../src/index.js';
import { loadNativeBackend, loadNativeAddon, nativeLoadError } from '../src/backends/native/index.js';
import { TorchPeer, pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const N = 16;
const ITERS = 100_000;
const ROUNDS = 5;

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const backend = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!backend || !addon) throw new Error(`op-overhead bench needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(backend);
  const body = async (): Promise<BenchRow[]> => {
    const threadsBefore = addon.info().threads;
    addon.setThreads(opts.cores === 1 ? 1 : cpus().length);
    const peer = await TorchPeer.start(opts.cores);
    const a = k.rand([N]);
    const b = k.rand([N]);
    const knobsTimes: number[] = [];
    const torchTimes: number[] = [];
    try {
      k.withBackend('native', () => {
        for (let i = 0; i < 10_000; i++) k.add(a, b); // warm-up (JIT, allocation)
      });
      for (let r = 0; r < ROUNDS; r++) {
        k.withBackend('native', () => {
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < ITERS; i++) k.add(a, b);
          knobsTimes.push(Number(process.hrtime.bigint() - t0) / 1e9 / ITERS);
        });
        torchTimes.push(...(await peer.request<{ seconds: number[] }>({ op: 'add', n: N, iters: ITERS })).seconds);
      }
    } finally {
      addon.setThreads(threadsBefore);
      peer.close();
    }
    return [
      makeRow(
        `add_f32_${N}_overhead`,
        opts.cores,
        'µs/op',
        median(knobsTimes) * 1e6,
        peer.version,
        median(torchTimes) * 1e6,
        false,
        null,
      ),
    ];
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
