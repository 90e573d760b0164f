/**
 * Decode attention alone (not a bench row: a breakdown to read next to `batch`'s rows). The bench
 * Llama's heads (12 query heads over 4 KV heads of 64; `12 12` for the GPT-2's), R rows of about L cached positions each in
 * scattered 16-position blocks, one `biPagedAttention` call per layer for 12 layers: the time of a
 * decode step's attention, with LAYERS distinct pools (12: they stream from memory; 1: one layer's
 * pools, which stay in L3), for an f32 and an f16 cache.
 *
 *   node dist/bench/paged-attention.js [rows] [positions] [layers] [threads] [heads] [kv heads]
 */
import { loadNativeAddon, nativeLoadError } from '../src/backends/native/index.js';

const [rowsArg = '16', positionsArg = '130', layersArg = '12', threadsArg = '1', headsArg = '12', kvHeadsArg = '4'] =
  process.argv.slice(2);
const [R, L, layers] = [Number(rowsArg), Number(positionsArg), Number(layersArg)];
const addon = loadNativeAddon();
if (!addon) throw new Error(`paged-attention needs the native addon: ${nativeLoadError()}`);
addon.setThreads(Number(threadsArg));

const [H, KVH, D, block] = [Number(headsArg), Number(kvHeadsArg), 64, 16];
const stride = Math.ceil((L + 16) / block);
const blocks = R * stride * 2;
const size = blocks * KVH * block * D;
// A fixed shuffle of the blocks, so a row's blocks are scattered over the pool as in a busy cache.
const order = Int32Array.from({ length: blocks }, (_, i) => i);
for (let i = blocks - 1; i > 0; i--) {
  const j = ((i * 2654435761) >>> 0) % (i + 1);
  [order[i], order[j]] = [order[j]!, order[i]!];
}
const tables = Int32Array.from({ length: R * stride }, (_, i) => order[i]!);
const lens = Int32Array.from({ length: R }, (_, r) => L - 8 + (r % 16));
const q = Float32Array.from({ length: R * H * D }, (_, i) => Math.sin(i) * 0.3);
const out = new Float32Array(R * H * D);

for (const dtype of ['f32', 'f16'] as const) {
  const pool = (seed: number): Float32Array | Uint16Array =>
    dtype === 'f16'
      ? Uint16Array.from({ length: size }, (_, i) => 0x3000 + ((i * 7 + seed) & 0x3ff))
      : Float32Array.from({ length: size }, (_, i) => Math.cos(i + seed));
  const pools = Array.from({ length: layers }, (_, l) => [pool(2 * l), pool(2 * l + 1)] as const);
  const ms: number[] = [];
  for (let rep = 0; rep < 15; rep++) {
    const t0 = performance.now();
    for (let l = 0; l < 12; l++) {
      const [keys, values] = pools[l % layers]!;
      addon.biPagedAttention(q, R, H, D, keys, values, KVH, block, tables, stride, lens, 0.125, out);
    }
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  const bytes = 12 * lens.reduce((s, n) => s + n, 0) * KVH * D * 2 * (dtype === 'f16' ? 2 : 4);
  console.log(
    `${dtype} cache, ${R} rows of ~${L} positions, ${layers} distinct layer pools: ${ms[0]!.toFixed(2)} ms a step (median ${ms[7]!.toFixed(2)}), ${(bytes / ms[0]! / 1e6).toFixed(1)} GB/s of keys and values`,
  );
}
