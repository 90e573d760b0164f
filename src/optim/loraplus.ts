/**
 * LoRA+ (Hayou, Ghosh, Yu 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models"): lora_B
 * trains at `ratio` times lora_A's learning rate. The parameter groups follow PEFT's
 * `create_loraplus_optimizer` (huggingface/peft 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40,
 * src/peft/optimizers/loraplus.py):
 *
 *   groupA           everything else (lora_A; copies of weight matrices)  lr          weight decay
 *   groupB           lora_B and 1-d parameters (DoRA's magnitude)         lr·ratio    weight decay
 *   groupB_no_decay  those of groupB named `bias` or in a layer norm      lr·ratio    0
 *
 * (PEFT's fourth group, LoRA on embedding layers at `loraplus_lr_embedding`, has no counterpart:
 * knobs adapts Linear and Conv1D layers only; a trained copy of an embedding (modules_to_save) is
 * in groupA there too.) PEFT decays every parameter but biases and those of layer-norm modules
 * (transformers' ALL_LAYERNORM_LAYERS), which a tune trains with modules_to_save: `noDecay` names
 * them. The groups' lrs keep their ratio under a schedule (Optimizer.setLr scales each group's base lr).
 */
import { ArgumentError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import type { BaseOptions, ParamGroupInput } from './optimizer.js';

export interface LoraPlusOptions {
  /** lora_A's (the optimizer's) learning rate. */
  lr: number;
  /** ηB / ηA; PEFT advises ≥ 1 (the paper uses 2⁴ for most runs). */
  ratio: number;
  weightDecay: number;
  /** Parameters of layer-norm modules (LayerNorm, RMSNorm), by name: never decayed. */
  noDecay?: ReadonlySet<string>;
}

/** PEFT's LoRA+ groups over the parameters that train (empty groups left out). */
export function loraPlusGroups(
  named: readonly [string, Tensor][],
  opts: LoraPlusOptions,
): ParamGroupInput<BaseOptions>[] {
  if (!(opts.ratio > 0) || !Number.isFinite(opts.ratio))
    throw new ArgumentError(`loraplus: loraplus_lr_ratio must be a finite number > 0, got ${opts.ratio}`);
  const a: [string, Tensor][] = [];
  const b: [string, Tensor][] = [];
  const bNoDecay: [string, Tensor][] = [];
  for (const entry of named) {
    const [name, p] = entry;
    if (!name.includes('lora_B') && p.rank !== 1) a.push(entry);
    else if (name.includes('bias') || opts.noDecay?.has(name)) bNoDecay.push(entry);
    else b.push(entry);
  }
  const lrB = opts.lr * opts.ratio;
  const groups: ParamGroupInput<BaseOptions>[] = [
    { params: a, lr: opts.lr, weightDecay: opts.weightDecay },
    { params: b, lr: lrB, weightDecay: opts.weightDecay },
    { params: bNoDecay, lr: lrB, weightDecay: 0 },
  ];
  return groups.filter((g) => (g.params as unknown[]).length > 0);
}
