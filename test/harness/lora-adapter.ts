/**
 * A PEFT adapter directory for a model on disk, with seeded random values (tests and benches of
 * serving adapters), and a few training steps with the gradients checked (adapter-training tests).
 */
import assert from 'node:assert/strict';
import { saveLoraAdapter } from '../../src/finetune/adapter.js';
import { applyLora, parseLoraConfig } from '../../src/finetune/lora.js';
import type { QuantType } from '../../src/finetune/quantized-base.js';
import { openLanguageModel } from '../../src/load/language-model.js';
import type { Module } from '../../src/nn/module.js';
import { fromArray } from '../../src/ops/creation.js';
import { AdamW } from '../../src/optim/adam.js';
import type { Tensor } from '../../src/tensor.js';
import { seededRandom } from './rng.js';

/**
 * Writes to `out` a rank-4 LoRA adapter on `base`'s `targets` with A and B drawn from `seed`
 * (B is zero at init, which would change nothing). `baseDigest` records another base's digest;
 * `quantize` makes it on the base quantized as `knobs tune --quantize` does.
 */
export async function makeRandomAdapter(
  base: string,
  out: string,
  targets: readonly string[],
  seed: number,
  baseDigest?: string,
  quantize?: QuantType,
): Promise<void> {
  const { model } = await openLanguageModel(base, quantize === undefined ? {} : { quantize });
  const adapter = applyLora(model, parseLoraConfig({ r: 4, lora_alpha: 8, target_modules: [...targets] }));
  const random = seededRandom(seed);
  for (const [, t] of adapter.namedParameters()) {
    const values = t.storage as Float32Array;
    for (let i = 0; i < values.length; i++) values[i] = (random.next() - 0.5) * 0.6;
  }
  await saveLoraAdapter(out, model, adapter, baseDigest === undefined ? {} : { baseDigest });
}

/** The short repeating token text the adapter-training tests fit. */
export const TRAIN_TEXT = [5, 9, 12, 5, 9, 12, 7, 3, 5, 9, 12, 5, 9, 12, 7, 3, 5, 9];

/**
 * Eight AdamW steps (lr 1e-2) of `model` on TRAIN_TEXT, checking at each that exactly the
 * parameters `trains` names got a gradient; returns the losses and the optimizer.
 */
export function trainEightSteps(
  model: Module & { loss(ids: Tensor, targets: Tensor): Tensor },
  trains: (name: string) => boolean,
): { losses: number[]; opt: AdamW } {
  const opt = new AdamW(model, { lr: 1e-2, weightDecay: 0 });
  const n = TRAIN_TEXT.length - 1;
  const ids = fromArray(TRAIN_TEXT.slice(0, -1), [1, n], { dtype: 'i32' });
  const targets = fromArray(TRAIN_TEXT.slice(1), [1, n], { dtype: 'i32' });
  const losses: number[] = [];
  for (let step = 0; step < 8; step++) {
    opt.zeroGrad();
    const loss = model.loss(ids, targets);
    loss.backward();
    losses.push(loss.item());
    for (const [name, p] of model.namedParameters()) assert.equal(p.grad !== null, trains(name), `${name} gradient`);
    opt.step();
  }
  return { losses, opt };
}
