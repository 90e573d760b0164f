/**
 * PiSSA and OLoRA (finetune/pissa.ts): the initialisations against plain torch applying PEFT's pissa_init and olora_init
 * (test/fixtures/pissa/layers.json from scripts/gen_pissa_fixtures.py; sign-free quantities: the
 * product scaling·B·A, the residual base weight, lora_A's row norms) on a Linear and a GPT-2
 * Conv1D; the saved adapter is PEFT's conversion onto the original base (rank 2r), whose logits
 * on the untouched base equal the tuned model's; a quantized layer and a save without the
 * original digest are refused.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { noGrad } from '../src/autograd/tape.js';
import { baseDigest, loadLoraAdapter, readAdapterConfig, saveLoraAdapter } from '../src/finetune/adapter.js';
import { LoraLayer, applyLora, parseLoraConfig } from '../src/finetune/lora.js';
import { GPT } from '../src/models/gpt.js';
import { Conv1D, Linear } from '../src/nn/linear.js';
import { QuantizedLinear } from '../src/nn/quantized-linear.js';
import { fromArray } from '../src/ops/creation.js';
import { matmul } from '../src/ops/linalg.js';
import { Generator } from '../src/random.js';
import type { Tensor } from '../src/tensor.js';
import { repoRoot } from './harness/fixtures.js';
import type { LayerCase } from './harness/layer-case.js';

interface Case extends LayerCase {
  init: 'pissa' | 'olora';
  delta: number[];
  residual: number[];
  lora_A_row_norms: number[];
}
const FIXTURE = JSON.parse(readFileSync(join(repoRoot(), 'test', 'fixtures', 'pissa', 'layers.json'), 'utf8')) as {
  torch: string;
  cases: Case[];
};
const values = (t: Tensor): Float32Array => t.contiguousStorage() as Float32Array;
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 1e-5): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++)
    assert.ok(Math.abs(got[i]! - want[i]!) <= tol * (1 + Math.abs(want[i]!)), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
}

let dir: string | null = null;
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe(`PiSSA and OLoRA against torch ${FIXTURE.torch} applying PEFT's pissa_init / olora_init`, () => {
  for (const c of FIXTURE.cases) {
    it(`${c.name}: scaling·B·A is W's ${c.init} rank-${c.r} part, the base holds the residual, the output is unchanged`, () => {
      const layer = c.conv1d ? new Conv1D(c.in, c.out, { bias: false }) : new Linear(c.in, c.out, { bias: false });
      (layer.weight.storage as Float32Array).set(c.weight);
      const x = fromArray(
        Array.from({ length: 2 * c.in }, (_, i) => Math.sin(i)),
        [2, c.in],
      );
      const before = values(noGrad(() => layer.forward(x))).slice();
      const lora = new LoraLayer(layer, c.name, {
        r: c.r,
        alpha: c.lora_alpha,
        rslora: false,
        dropout: 0,
        init: c.init,
      });
      const ba = noGrad(() => matmul(lora.lora_B.weight, lora.lora_A.weight));
      assertClose(
        values(ba).map((v) => v * lora.scaling),
        c.delta,
        'scaling·B·A',
      );
      assertClose(values(layer.weight), c.residual, 'residual');
      const A = values(lora.lora_A.weight);
      const norms = Array.from({ length: c.r }, (_, k) => Math.hypot(...A.subarray(k * c.in, (k + 1) * c.in)));
      assertClose(norms, c.lora_A_row_norms, 'lora_A row norms'); // PiSSA: √(S_r/scaling); OLoRA: R's rows
      assertClose(values(noGrad(() => layer.forward(x))), before, 'output');
    });
  }

  it('OLoRA on a Conv1D is refused (PEFT factors it as stored, which does not fit the adapter)', () => {
    assert.throws(
      () => new LoraLayer(new Conv1D(8, 4), 'c', { r: 2, alpha: 4, rslora: false, dropout: 0, init: 'olora' }),
      (e: Error & { details?: { field?: string } }) => e.details?.field === 'init_lora_weights',
    );
  });

  it('a quantized layer is refused (PiSSA needs the float weight)', () => {
    const q = QuantizedLinear.fromLinear(new Linear(32, 8, { generator: new Generator(1) }), 'q8_0');
    assert.throws(
      () => new LoraLayer(q, 'q', { r: 2, alpha: 4, rslora: false, dropout: 0, init: 'pissa' }),
      (e: Error & { details?: { field?: string } }) => e.details?.field === 'init_lora_weights',
    );
  });

  it('the saved adapter is PEFT’s rank-2r conversion: on the untouched base it gives the tuned logits', async () => {
    dir = await mkdtemp(join(tmpdir(), 'knobs-pissa-'));
    const make = (): GPT =>
      new GPT({ n_positions: 16, n_embd: 32, n_layer: 1, n_head: 2, vocab_size: 50 }, { seed: 3 });
    const model = make();
    model.eval();
    const ids = fromArray([1, 7, 3, 9, 4], [1, 5], { dtype: 'i32' });
    const bare = values(noGrad(() => model.forward(ids))).slice();
    const digest = baseDigest(model);
    const adapter = applyLora(
      model,
      parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: ['c_attn', 'c_fc'], init_lora_weights: 'pissa' }),
    );
    assertClose(values(noGrad(() => model.forward(ids))), bare, 'unchanged at init', 1e-4);
    // as training would: move every B
    for (const l of adapter.layers.values()) {
      const b = l.lora_B.weight.storage as Float32Array;
      for (let i = 0; i < b.length; i++) b[i]! += 0.05 * Math.cos(i);
    }
    const tuned = values(noGrad(() => model.forward(ids))).slice();
    const out = join(dir, 'adapter');
    await assert.rejects(saveLoraAdapter(out, model, adapter), /lora_pissa_digest|original base/);
    await saveLoraAdapter(out, model, adapter, { baseDigest: digest });
    const config = await readAdapterConfig(out);
    assert.deepEqual([config.r, config.lora_alpha, config.init_lora_weights], [8, 16, true]);
    const fresh = make();
    fresh.eval();
    await loadLoraAdapter(out, fresh); // the digest is the original base's
    const got = values(noGrad(() => fresh.forward(ids)));
    assertClose(got, tuned, 'logits', 1e-4);
    assert.ok(Math.max(...tuned.map((v, i) => Math.abs(v - bare[i]!))) > 1e-2, 'the adapter moved the logits');
  });
});
