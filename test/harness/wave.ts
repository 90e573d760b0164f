/** n deterministic test values, sin(0.61·i + seed)·scale: smooth, signed, different per seed. */
export function wave(n: number, seed: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.61 + seed) * scale);
}
