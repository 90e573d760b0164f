/**
 * The batch-invariant decode kernels (native/kernels/bi_decode.cpp) have AVX2 tiles for CPUs without
 * AVX-512 (AVX2 has 16 registers of 8 floats; the 16-lane code spills there). They must give the
 * 16-lane code's bits, so a model's outputs do not depend on the CPU it is served on: the same
 * products with the AVX2 tiles switched off (KNOBS_BI_NO_AVX2=1, in a child process) hash the same.
 * On an AVX-512 CPU both runs take the 16-lane code.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { kernelHashes } from './harness/bi-kernel-hashes.js';
import { skip } from './harness/native.js';

describe('batch-invariant decode kernels on AVX2', { skip }, () => {
  it('the AVX2 tiles give the 16-lane code bit for bit (biMatmul, biPagedAttention)', () => {
    const script = fileURLToPath(new URL('./harness/bi-kernel-hashes.js', import.meta.url));
    const generic = JSON.parse(
      execFileSync(process.execPath, [script], { env: { ...process.env, KNOBS_BI_NO_AVX2: '1' }, encoding: 'utf8' }),
    ) as Record<string, string>;
    const mine = kernelHashes();
    assert.equal(Object.keys(mine).length, 10);
    assert.deepEqual(mine, generic);
  });
});
