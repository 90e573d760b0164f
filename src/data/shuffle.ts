/**
 * Seeded shuffling that depends only on (seed, epoch), so a run resumed at epoch e sees exactly
 * the order it would have seen without the interruption.
 */
import { Generator } from '../random.js';

/** Mixes two integers into one 32-bit seed (murmur3's finaliser on each, then combined). */
export function mixSeed(seed: number, stream: number): number {
  const fmix = (h: number): number => {
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  };
  const lo = (x: number): number => Number(BigInt.asUintN(32, BigInt(Math.trunc(x))));
  const hi = (x: number): number => Number(BigInt.asUintN(32, BigInt(Math.trunc(x)) >> 32n));
  let h = fmix(lo(seed) ^ 0x9e3779b9);
  h = fmix(h ^ hi(seed));
  h = fmix((h + Math.imul(lo(stream), 0x27d4eb2f)) >>> 0);
  return fmix(h ^ hi(stream) ^ 0x165667b1);
}

/** A permutation of 0..n−1 (Fisher–Yates), determined by (seed, epoch). */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  const gen = new Generator(mixSeed(seed, epoch));
  for (let i = n - 1; i > 0; i--) {
    const j = gen.integer(i + 1);
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm;
}
