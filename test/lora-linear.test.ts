/**
 * The fused LoRA linear (src/ops/lora-linear.ts) against the unfused layer it replaces —
 * base(x) + scaling·B(A(dropout(x))) built from separate ops — on the js backend (the composite)
 * and the native one (GEMM accumulation): outputs and every gradient (x, lora_A, lora_B, and a
 * trainable base's weight and bias) within 1e-5 relative, for nn.Linear, GPT-2 Conv1D
 * (fan_in_fan_out), a q8_0-quantized base, and with dropout (the same mask both ways).
 *
 *   npx tsc -p tsconfig.json && node --test dist/test/lora-linear.test.js
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as k from '../src/index.js';
import { loadNativeBackend } from '../src/backends/native/index.js';
import { LoraLayer } from '../src/finetune/lora.js';
import { Conv1D, Linear } from '../src/nn/linear.js';
import { QuantizedLinear } from '../src/nn/quantized-linear.js';

const native = loadNativeBackend();
if (native && !k.backends().includes('native')) k.registerBackend(native);
const BACKENDS = native ? ['js', 'native'] : ['js'];

interface Case {
  name: string;
  make: () => Linear | QuantizedLinear;
  dropout: number;
  trainBase?: boolean;
}
const CASES: Case[] = [
  { name: 'Linear with bias', make: () => new Linear(64, 48, { generator: new k.Generator(1) }), dropout: 0 },
  { name: 'Conv1D (fan_in_fan_out)', make: () => new Conv1D(64, 96, { generator: new k.Generator(2) }), dropout: 0 },
  {
    name: 'q8_0 base',
    make: () => QuantizedLinear.fromLinear(new Linear(64, 48, { generator: new k.Generator(3) }), 'q8_0'),
    dropout: 0,
  },
  { name: 'dropout 0.25', make: () => new Linear(64, 48, { generator: new k.Generator(4) }), dropout: 0.25 },
  {
    name: 'trainable base, no bias',
    make: () => new Linear(64, 40, { bias: false, generator: new k.Generator(5) }),
    dropout: 0,
    trainBase: true,
  },
  {
    name: 'trainable Conv1D base',
    make: () => new Conv1D(64, 40, { generator: new k.Generator(6) }),
    dropout: 0.1,
    trainBase: true,
  },
];

function randomTensor(shape: number[], seed: number): k.Tensor {
  return k.mul(k.randn(shape, { generator: new k.Generator(seed) }), 0.5);
}

/** Output and gradients of Σ y ⊙ w, the layer run fused (forward) or unfused (base + delta). */
function run(c: Case, fused: boolean): { y: k.Tensor; grads: Map<string, k.Tensor>; op: string | undefined } {
  const layer = c.make();
  const lora = new LoraLayer(layer, 'layer', {
    r: 4,
    alpha: 8,
    rslora: false,
    dropout: c.dropout,
    init: false,
    generator: new k.Generator(9),
  });
  layer.train();
  if (c.trainBase && layer instanceof Linear) for (const p of [layer.weight, layer.bias]) p?.requiresGrad_(true);
  else for (const [name, p] of layer.namedParameters()) if (!name.startsWith('lora_')) p.requiresGrad = false;
  lora.dropout.generator = new k.Generator(11); // the same mask both ways
  const x = randomTensor([2, 5, 64], 21).requiresGrad_();
  const y = fused ? layer.forward(x) : k.add(layer.base(x), lora.forward(x));
  k.sum(k.mul(y, randomTensor(y.shape as number[], 22))).backward();
  const grads = new Map<string, k.Tensor>([['x', x.grad!]]);
  for (const [name, p] of layer.namedParameters()) if (p.grad) grads.set(name, p.grad);
  return { y, grads, op: y.gradFn?.op };
}

function assertClose(got: k.Tensor, want: k.Tensor, label: string): void {
  assert.deepEqual(got.shape, want.shape, `${label} shape`);
  const a = got.toFlatArray();
  const b = want.toFlatArray();
  const scale = Math.max(...b.map(Math.abs));
  const worst = Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
  assert.ok(worst <= 1e-5 * scale, `${label}: max |fused − unfused| ${worst} > 1e-5 · ${scale}`);
}

describe('fused LoRA linear = the unfused layer', () => {
  for (const backend of BACKENDS) {
    for (const c of CASES) {
      it(`${c.name} on ${backend}`, () =>
        k.withBackend(backend, () => {
          const fused = run(c, true);
          const plain = run(c, false);
          assert.equal(fused.op, 'loraLinear');
          assert.notEqual(plain.op, 'loraLinear');
          assertClose(fused.y, plain.y, 'output');
          assert.deepEqual([...fused.grads.keys()].sort(), [...plain.grads.keys()].sort());
          const want = ['lora_A.weight', 'lora_B.weight', 'x', ...(c.trainBase ? ['weight'] : [])];
          for (const name of want) assert.ok(fused.grads.has(name), `a gradient for ${name}`);
          for (const [name, g] of plain.grads) assertClose(fused.grads.get(name)!, g, `d/d${name}`);
        }));
    }
  }
});
