/**
 * LoRA's low-rank kernels (native/kernels/lora.cpp): the fused backward u = g·sB, dB = gᵀ·t, dA = uᵀ·h
 * and matmulAccumulate's two low-rank paths (the down projection x·Aᵀ, an output ≤ 32 wide; the up
 * projection t·Bᵀ, an inner size ≤ 32). Each against an f64 reference; the same bits at 1, 2 and 3
 * threads; and the same bits from the portable loops (KNOBS_LORA_NO_AVX2=1, in a child process) as
 * from the AVX2 ones.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { KernelView } from '../src/backends/backend.js';
import { addon, native, skip } from './harness/native.js';
import {
  ACCUMULATE_SHAPES,
  ALPHA,
  BACKWARD_SHAPES,
  accumulateInputs,
  accumulateName,
  biasOf,
  backwardInputs,
  loraKernelHashes,
  loraKernelOutputs,
} from './harness/lora-kernel-outputs.js';
import { wave } from './harness/wave.js';

/** |got − want| ≤ 1e-5 · (1 + Σ|terms|) per element, the scale of an f32 sum of `terms` products. */
function close(got: Float32Array, want: Float64Array, scale: Float64Array, what: string): void {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (!(d <= 1e-5 * (1 + scale[i]!))) assert.fail(`${what} [${i}]: ${got[i]} vs ${want[i]}`);
  }
}

/** c [R, C] = Σ_k a(i, k) · b(k, j) in f64, with Σ|a·b| beside it. */
function product(
  R: number,
  C: number,
  K: number,
  a: (i: number, k: number) => number,
  b: (k: number, j: number) => number,
) {
  const value = new Float64Array(R * C);
  const scale = new Float64Array(R * C);
  for (let i = 0; i < R; i++)
    for (let j = 0; j < C; j++)
      for (let k = 0; k < K; k++) {
        const p = a(i, k) * b(k, j);
        value[i * C + j]! += p;
        scale[i * C + j]! += Math.abs(p);
      }
  return { value, scale };
}

describe('LoRA low-rank kernels', { skip }, () => {
  const outputs = skip ? {} : loraKernelOutputs(2);

  it('the fused backward: u = g·sB, dB = gᵀ·t, dA = uᵀ·h against f64', () => {
    for (const [M, N, K, r] of BACKWARD_SHAPES) {
      const { g, sB, t, h } = backwardInputs(M, N, K, r);
      const name = `${M}x${N}x${K}x${r}`;
      const u = product(
        M,
        r,
        N,
        (i, j) => g[i * N + j]!,
        (j, p) => sB[j * r + p]!,
      );
      close(outputs[`u ${name}`]!, u.value, u.scale, `u ${name}`);
      const dB = product(
        N,
        r,
        M,
        (j, i) => g[i * N + j]!,
        (i, p) => t[i * r + p]!,
      );
      close(outputs[`dB ${name}`]!, dB.value, dB.scale, `dB ${name}`);
      // dA from the kernel's own u (its f32 rounding is u's, checked above)
      const uk = outputs[`u ${name}`]!;
      const dA = product(
        r,
        K,
        M,
        (p, i) => uk[i * r + p]!,
        (i, q) => h[i * K + q]!,
      );
      close(outputs[`dA ${name}`]!, dA.value, dA.scale, `dA ${name}`);
    }
  });

  it('matmulAccumulate on a short side: c (+ bias) + a·b/3 against f64, a row-major or transposed', () => {
    for (const [M, K, N, aT, withBias] of ACCUMULATE_SHAPES) {
      const [a, b] = accumulateInputs(M, K, N, aT);
      const [sa0, sa1] = a.strides as [number, number];
      const p = product(
        M,
        N,
        K,
        (i, k) => (a.storage[i * sa0 + k * sa1] as number) * ALPHA,
        (k, j) => b.storage[k + j * K] as number,
      );
      const c0 = wave(M * N, 7);
      const bias = biasOf(N).storage as Float32Array;
      const base = (i: number): number => c0[i]! + (withBias ? bias[i % N]! : 0);
      const want = p.value.map((v, i) => v + base(i));
      const scale = p.scale.map((s, i) => s + Math.abs(base(i)));
      const name = accumulateName(M, K, N, aT, withBias);
      close(outputs[name]!, want, scale, name);
    }
  });

  it('the same bits at 1, 2 and 3 threads', () => {
    const one = loraKernelHashes(1);
    assert.equal(Object.keys(one).length, 3 * BACKWARD_SHAPES.length + ACCUMULATE_SHAPES.length);
    assert.deepEqual(loraKernelHashes(2), one);
    assert.deepEqual(loraKernelHashes(3), one);
  });

  it('the portable loops (KNOBS_LORA_NO_AVX2=1, in a child process) give the AVX2 bits', () => {
    const script = fileURLToPath(new URL('./harness/lora-kernel-outputs.js', import.meta.url));
    const portable = JSON.parse(
      execFileSync(process.execPath, [script, '2'], {
        env: { ...process.env, KNOBS_LORA_NO_AVX2: '1' },
        encoding: 'utf8',
      }),
    ) as Record<string, string>;
    assert.deepEqual(portable, loraKernelHashes(2));
  });

  it('no rows give zero gradients; a rank above 32 and short buffers are refused', () => {
    const dB = new Float32Array(16 * 8).fill(7);
    const dA = new Float32Array(8 * 1200).fill(7); // past 4 KiB: the backend's outputs are not zeroed
    const none = new Float32Array(0);
    addon!.loraBackward(none, new Float32Array(16 * 8), none, none, 0, 16, 1200, 8, none, dB, dA);
    assert.ok(dB.every((v) => v === 0) && dA.every((v) => v === 0));
    const f = new Float32Array(64 * 33);
    assert.throws(() => addon!.loraBackward(f, f, f, f, 2, 4, 4, 33, f, f, f), /r must be/);
    const small = new Float32Array(3);
    assert.throws(() => addon!.loraBackward(small, f, f, f, 2, 4, 4, 8, f, f, f), /g/);
  });

  it('the backend takes ranks 1 to 32 and sizes from 1 (else the op runs its matmuls)', () => {
    const view = (R: number, C: number): KernelView => ({
      dtype: 'f32',
      storage: new Float32Array(R * C),
      shape: [R, C],
      strides: [C, 1],
      offset: 0,
    });
    const takes = (M: number, N: number, K: number, r: number): boolean =>
      native!.supports('loraBackward', [view(M, N), view(N, r), view(M, r), view(M, K)]);
    assert.ok(takes(5, 6, 7, 1) && takes(5, 6, 7, 32) && takes(0, 6, 7, 8));
    assert.ok(!takes(5, 6, 7, 33) && !takes(5, 6, 7, 0) && !takes(5, 0, 7, 8) && !takes(5, 6, 0, 8));
  });
});
