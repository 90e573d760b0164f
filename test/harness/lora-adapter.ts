/** A PEFT adapter directory for a model on disk, with seeded random values (tests and benches of serving adapters). */
import { saveLoraAdapter } from '../../src/finetune/adapter.js';
import { applyLora, parseLoraConfig } from '../../src/finetune/lora.js';
import type { QuantType } from '../../src/finetune/quantized-base.js';
import { openLanguageModel } from '../../src/load/language-model.js';
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
