/**
 * SHA-256 of the batch-invariant decode kernels' outputs on fixed inputs (biMatmul over several row
 * counts, biPagedAttention over several head shapes), printed as JSON when run as a script:
 * test/bi-decode-isa.test.ts runs it in a child process with a kernel path switched off and
 * compares with the hashes computed in process.
 */
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { wave } from './wave.js';
import { loadNativeAddon } from '../../src/backends/native/index.js';

const hash = (y: Float32Array): string => createHash('sha256').update(y).digest('hex');

export function kernelHashes(): Record<string, string> {
  const addon = loadNativeAddon();
  if (!addon) throw new Error('native addon not built');
  const out: Record<string, string> = {};
  for (const [M, K, N] of [
    [1, 200, 75],
    [2, 768, 130],
    [3, 64, 9],
    [7, 200, 75],
    [16, 771, 66],
  ] as const) {
    const y = new Float32Array(M * N);
    addon.biMatmul(wave(M * K, 1, 1), M, K, wave(N * K, 2, 0.1), N, y);
    out[`biMatmul ${M}x${K}x${N}`] = hash(y);
  }
  for (const [H, KVH, D] of [
    [12, 4, 64],
    [8, 4, 72],
    [5, 1, 40],
    [4, 4, 24],
    [8, 2, 128],
  ] as const) {
    const [R, block, perRow] = [5, 16, 10];
    const blocks = R * perRow;
    const tables = Int32Array.from({ length: R * perRow }, (_, i) => (i * 37) % blocks);
    const lens = Int32Array.from({ length: R }, (_, r) => [1, 17, 100, 160, 63][r]!);
    const o = new Float32Array(R * H * D);
    const pool = blocks * KVH * block * D;
    addon.biPagedAttention(
      wave(R * H * D, 3, 1),
      R,
      H,
      D,
      wave(pool, 4, 1),
      wave(pool, 5, 1),
      KVH,
      block,
      tables,
      perRow,
      lens,
      0.2,
      o,
    );
    out[`biPagedAttention H${H} KVH${KVH} D${D}`] = hash(o);
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]!).href) console.log(JSON.stringify(kernelHashes()));
