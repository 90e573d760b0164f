/**
 * The residual add fused into the layer norm that reads it (`addLayerNorm`, native
 * kn_add_layer_norm_f32), and the backward engine adding the gradient a norm's input already has
 * into the norm's own dx (layerNormBackward's `accumulate`): both must give the bits of the
 * unfused composition, and the GPT that uses them the bits of its blocks' plain forward().
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { traceKernels } from '../src/backends/dispatch.js';
import { GPT } from '../src/models/gpt.js';
import { skip } from './harness/native.js';

function values(shape: number[], seed: number, scale = 1, shift = 0): Tensor {
  const g = new k.Generator(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return k.fromArray(
    Float32Array.from({ length: n }, () => g.normal() * scale + shift),
    shape,
  );
}

function leaf(t: Tensor): Tensor {
  return t.detach().requiresGrad_();
}

describe('residual add + layer norm', { skip }, () => {
  const C = 96; // rows · C above the kernels' grain at 256 rows: the 2-thread split is exercised too
  for (const rows of [3, 256]) {
    it(`addLayerNorm equals add then layerNorm, values and gradients bit for bit (${rows} rows)`, () => {
      const inputs = [values([rows, C], 1, 3, 0.5), values([rows, C], 2, 0.1), values([C], 3, 0.5, 1), values([C], 4)];
      const upS = values([rows, C], 5);
      const upY = values([rows, C], 6);
      const run = (fused: boolean): Float32Array[] => {
        const [x, r, w, b] = inputs.map(leaf) as [Tensor, Tensor, Tensor, Tensor];
        let s: Tensor, y: Tensor;
        if (fused) [s, y] = k.addLayerNorm(x, r, [C], w, b);
        else {
          s = k.add(x, r);
          y = k.layerNorm(s, [C], w, b);
        }
        k.add(k.sum(k.mul(s, upS)), k.sum(k.mul(y, upY))).backward();
        return [s, y, x.grad!, r.grad!, w.grad!, b.grad!].map((t) => Float32Array.from(t.toFlatArray()));
      };
      const plain = run(false);
      const fused = run(true);
      const { runs } = traceKernels(() => k.addLayerNorm(inputs[0]!, inputs[1]!, [C], inputs[2], inputs[3]));
      assert.deepEqual(
        runs.map((r) => `${r.kernel} ${r.ran}`),
        ['layerNorm native'],
        'one fused native kernel, no separate add',
      );
      const names = ['sum', 'norm', 'dx', 'dr', 'dw', 'db'];
      fused.forEach((a, i) => assert.deepEqual(a, plain[i], names[i]));
      const js = k.withBackend('js', () => run(true));
      js.forEach((a, i) =>
        a.forEach((v, j) =>
          assert.ok(Math.abs(v - plain[i]![j]!) <= 1e-4 * (1 + Math.abs(v)), `${names[i]}[${j}] on js`),
        ),
      );
    });
  }

  it('the norm takes in the gradient its input already has: the same bits as adding the two afterwards', () => {
    // z = x + f(ln(x)) (pre-norm residual): x's gradient is the residual's plus the norm's.
    const x0 = values([64, C], 7, 2);
    const w0 = values([C], 8, 0.5, 1);
    const up = values([64, C], 9);
    const branch = (h: Tensor): Tensor => k.mul(k.tanh(h), 0.5);
    const x = leaf(x0);
    const w = leaf(w0);
    k.sum(k.mul(k.add(x, branch(k.layerNorm(x, [C], w))), up)).backward();
    // the two contributions on separate leaves, added at the end
    const xr = leaf(x0);
    const xn = leaf(x0);
    const w2 = leaf(w0);
    k.sum(k.mul(k.add(xr, branch(k.layerNorm(xn, [C], w2))), up)).backward();
    assert.deepEqual(x.grad!.toFlatArray(), k.add(xr.grad!, xn.grad!).toFlatArray(), 'dx');
    assert.deepEqual(w.grad!.toFlatArray(), w2.grad!.toFlatArray(), 'dw');
  });

  it("GPT's fused path equals its blocks' forward() then ln_f, logits and every gradient bit for bit", () => {
    const model = new GPT(
      { vocab_size: 40, n_positions: 16, n_embd: 32, n_layer: 3, n_head: 4, dropout: 0 },
      { seed: 5 },
    );
    const ids = k.tensor(
      [
        [1, 5, 9, 13, 17, 21, 25, 29],
        [2, 4, 8, 16, 32, 3, 6, 12],
      ],
      { dtype: 'i32' },
    );
    const targets = k.tensor(
      [
        [5, 9, 13, 17, 21, 25, 29, 33],
        [4, 8, 16, 32, 3, 6, 12, 24],
      ],
      { dtype: 'i32' },
    );
    const grads = (logits: Tensor): Float32Array[] => {
      for (const p of model.parameters()) p.grad = null;
      k.crossEntropy(logits.reshape([-1, 40]), targets.reshape([-1])).backward();
      return [logits, ...model.parameters().map((p) => p.grad!)].map((t) => Float32Array.from(t.toFlatArray()));
    };
    const fused = grads(model.forward(ids));
    let x = k.add(model.wte.forward(ids), model.wpe.forward(k.arange(0, 8)));
    for (const block of model.h) x = block.forward(x);
    const plain = grads(model.head(model.ln_f.forward(x)));
    fused.forEach((a, i) => assert.deepEqual(a, plain[i], i === 0 ? 'logits' : `gradient ${i - 1}`));
  });
});
