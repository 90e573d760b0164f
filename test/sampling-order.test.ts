/**
 * sampleToken's candidate order (descendingOrder): the fast key sort must give exactly the
 * permutation of the comparator it replaced — descending logit, ties by lower id — so sampled
 * tokens do not change.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Generator } from '../src/random.js';
import { descendingOrder, sampleToken } from '../src/models/sampling.js';

const reference = (logits: ArrayLike<number>): number[] =>
  Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);

function randomLogits(n: number, seed: number): Float32Array {
  const g = new Generator(seed);
  const out = new Float32Array(n);
  // Few distinct values (many ties), both signs, zeros of both signs and infinities.
  const pool = [0, -0, Infinity, -Infinity, 1e-40, -1e-40, 3.5, -3.5, 1e30, -1e30];
  for (let i = 0; i < n; i++) {
    const u = g.random();
    out[i] =
      u < 0.2
        ? pool[Math.floor(g.random() * pool.length)]!
        : u < 0.5
          ? Math.round(g.random() * 8 - 4)
          : g.random() * 40 - 20;
  }
  return out;
}

describe('sampling order', () => {
  it('equals the comparator order on f32 logits with ties, ±0, ±∞ and subnormals', () => {
    for (const [n, seed] of [
      [1, 1],
      [7, 2],
      [1000, 3],
      [32000, 4],
    ] as const) {
      const logits = randomLogits(n, seed);
      assert.deepEqual(descendingOrder(logits), reference(logits), `n = ${n}`);
      assert.deepEqual(descendingOrder(Array.from(logits)), reference(logits), `n = ${n}, a plain array`);
    }
  });

  it('falls back to the comparator for values that are not f32 (still the same order)', () => {
    const logits = [0.1, 0.30000000000000004, 0.1, -2, 0.3];
    assert.deepEqual(descendingOrder(logits), [1, 4, 0, 2, 3]);
  });

  it('sampled tokens follow the order: top-k 1 is the argmax, lowest id among ties', () => {
    const logits = new Float32Array([1, 5, -Infinity, 5, 2]);
    assert.equal(sampleToken(logits, { temperature: 1, topK: 1 }, new Generator(0)), 1);
    const seen = new Set<number>();
    for (let s = 0; s < 200; s++) seen.add(sampleToken(logits, { temperature: 1, topP: 0.9 }, new Generator(s)));
    assert.ok(!seen.has(2), 'a -∞ logit is never sampled');
    assert.ok(seen.has(1) && seen.has(3), `both tied tokens are sampled: ${[...seen]}`);
  });
});
