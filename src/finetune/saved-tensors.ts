/**
 * What a LoRA adapter trains besides its deltas, as PEFT does: whole modules (`modules_to_save`)
 * and biases (`bias: "all"` or `"lora_only"`). Each such parameter gets a copy that the adapter
 * owns and trains; while the adapter is attached the module holds the copy in the parameter's
 * place, and detaching puts the base's own tensor back, so the base never changes (PEFT's
 * ModulesToSaveWrapper keeps the original module the same way).
 *
 * From huggingface/peft at PEFT_COMMIT (lora.ts):
 *  - `modules_to_save` matches every module whose name ends with an entry, as a plain string
 *    (src/peft/utils/other.py `_set_trainable`: `key.endswith(target_key)`), and LoRA never
 *    targets such a module or one inside it (src/peft/tuners/tuners_utils.py
 *    `check_target_module_exists`: `re.match(rf"(^|.*\.){m}($|\..*)", key)`);
 *  - a saved module's tensors are written under the module's own names,
 *    `base_model.model.<module path>.<parameter>` (other.py `ModulesToSaveWrapper.adapter_state_dict`,
 *    save_and_load.py `get_peft_model_state_dict`);
 *  - `bias: "all"` trains and saves every parameter named `bias`, `"lora_only"` the biases of the
 *    layers LoRA targets; a targeted layer's bias lives on its base layer, so it is saved as
 *    `<module path>.base_layer.bias` (tuners_utils.py `_mark_only_adapters_as_trainable`,
 *    `_get_learnable_bias_state_dict`).
 * A tied embedding (GPT-2's wte, a Llama with tie_word_embeddings) is also the output head here, so
 * training it apart from the head, as PEFT does by default, is refused.
 */
import { noGrad } from '../autograd/tape.js';
import { FormatError } from '../errors.js';
import { GPT } from '../models/gpt.js';
import { Llama } from '../models/llama.js';
import type { Module } from '../nn/module.js';
import { QuantizedLinear } from '../nn/quantized-linear.js';
import { clone } from '../ops/view.js';
import type { Tensor } from '../tensor.js';

/** One base parameter an adapter trains a copy of. */
export interface SavedTarget {
  /** PEFT's key without `base_model.model.` (`transformer.ln_f.weight`, `….c_attn.base_layer.bias`). */
  key: string;
  /** The module that holds the parameter, and the parameter's name in it. */
  module: Module;
  local: string;
  /** knobs' checkpoint name of the parameter (`ln_f.weight`). */
  name: string;
  /** The base's own tensor. */
  original: Tensor;
}

/** The fields of a LoRA config this module reads (lora.ts LoraConfig). */
export interface SavedConfig {
  modules_to_save: string[] | null;
  bias: 'none' | 'all' | 'lora_only';
}

function refused(field: string, message: string, extra: Record<string, unknown> = {}): FormatError {
  return new FormatError('lora_invalid_config', `LoRA config field ${field}: ${message}`, { field, ...extra });
}

/** PEFT's pattern for a modules_to_save entry (the entry is a regex there; parseLoraConfig checks it compiles). */
export function savedModulePattern(entry: string): RegExp {
  return new RegExp(`^(?:.*\\.)?(?:${entry})(?:$|\\.)`);
}

/** Whether `key` is a modules_to_save module or lies inside one (PEFT's exclusion of LoRA targets). */
export function inSavedModule(modulesToSave: readonly string[] | null, key: string): boolean {
  if (modulesToSave === null) return false;
  return modulesToSave.some((m) => savedModulePattern(m).test(key));
}

/** The Hugging Face path of the embedding that is also the output head, or null when the head is its own. */
function tiedEmbedding(model: Module): string | null {
  if (model instanceof GPT) return 'transformer.wte';
  if (model instanceof Llama && model.config.tie_word_embeddings) return 'model.embed_tokens';
  return null;
}

/** The module's own parameters (not its children's), by name. */
function ownParameters(module: Module): [string, Tensor][] {
  return module.namedParameters().filter(([name]) => !name.includes('.'));
}

/**
 * The base parameters `config` trains besides the LoRA deltas on `model`. `modules` are the
 * model's modules under their Hugging Face paths (lora.ts hfModules), `targets` the paths LoRA
 * attaches to, `knobsName` maps a Hugging Face parameter path to knobs' name. Errors: an entry of
 * modules_to_save that matches nothing, a match inside another match, a tied embedding, a
 * quantized module.
 */
export function planSavedTensors(
  modules: readonly [string, Module][],
  model: Module,
  config: SavedConfig,
  targets: ReadonlySet<string>,
  knobsName: (hfPath: string) => string,
): SavedTarget[] {
  const out: SavedTarget[] = [];
  const taken = new Set<Tensor>();
  const add = (module: Module, local: string, original: Tensor, key: string, hfName = key): void => {
    if (taken.has(original)) return;
    taken.add(original);
    out.push({ key, module, local, name: knobsName(hfName), original });
  };
  const entries = config.modules_to_save ?? [];
  const tied = tiedEmbedding(model);
  const matched = modules.filter(([path]) => entries.some((e) => path.endsWith(e)));
  for (const entry of entries) {
    if (tied !== null && (tied.endsWith(entry) || 'lm_head'.endsWith(entry)))
      throw refused(
        'modules_to_save',
        `${JSON.stringify(entry)} names the output head or the token embedding, which are one tensor in this model (${tied}); PEFT would train a copy apart from the other, which knobs' tied model cannot hold — leave it out`,
        { module: tied },
      );
    if (!matched.some(([path]) => path.endsWith(entry)))
      throw refused(
        'modules_to_save',
        `${JSON.stringify(entry)} matches no module of the model (PEFT matches the end of a module's name: "ln_f", "model.norm"); its modules are named like ${modules
          .slice(0, 4)
          .map(([p]) => p)
          .join(', ')}`,
        { entry },
      );
  }
  for (const [path, module] of matched) {
    const outer = matched.find(([p]) => p !== path && path.startsWith(`${p}.`));
    if (outer)
      throw refused(
        'modules_to_save',
        `${path} lies inside ${outer[0]}, which it also selects; name each module once (the outer one saves both)`,
        { module: path },
      );
    if (module instanceof QuantizedLinear)
      throw refused(
        'modules_to_save',
        `${path} is quantized (${module.weight.type}); a module to save trains its own float copy — load the float base`,
        { module: path },
      );
    for (const [name, p] of module.namedParameters()) {
      const dot = name.lastIndexOf('.');
      const holder = dot < 0 ? module : module.getModule(name.slice(0, dot));
      add(holder, name.slice(dot + 1), p, `${path}.${name}`);
    }
  }
  if (config.bias !== 'none') {
    for (const [path, module] of modules) {
      const targeted = targets.has(path);
      if (config.bias === 'lora_only' && !targeted) continue;
      const bias = ownParameters(module).find(([local]) => local === 'bias');
      if (bias) add(module, 'bias', bias[1], targeted ? `${path}.base_layer.bias` : `${path}.bias`, `${path}.bias`);
    }
  }
  return out;
}

/** The base tensors a trained copy stands for (baseDigest hashes the base, attached or not). */
const originals = new WeakMap<Tensor, Tensor>();

/** The base's own tensor for `t` when `t` is an adapter's copy, else `t`. */
export function baseTensorOf(t: Tensor): Tensor {
  return originals.get(t) ?? t;
}

/** A trained copy of one base parameter, in the module while attached. */
export class SavedTensor {
  readonly target: SavedTarget;
  readonly value: Tensor;

  /** Makes the copy (the base's values) and attaches it; the copy trains, the base stays frozen. */
  constructor(target: SavedTarget) {
    this.target = target;
    this.value = noGrad(() => clone(target.original)).detach();
    originals.set(this.value, target.original);
    this.attach();
  }

  /** Throws when the parameter's place holds another adapter's copy (which must be detached first). */
  assertAttachable(): void {
    const { module, local, original, key } = this.target;
    const held = ownParameters(module).find(([name]) => name === local)?.[1];
    if (held !== original && held !== this.value)
      throw new FormatError('lora_already_applied', `${key} holds another adapter's trained copy; detach it first`, {
        tensor: key,
      });
  }

  /** Puts the copy in the parameter's place. */
  attach(): void {
    this.assertAttachable();
    this.target.module.registerParameter(this.target.local, this.value);
  }

  detach(): void {
    const { module, local, original } = this.target;
    const wasTrainable = original.requiresGrad;
    module.registerParameter(local, original);
    original.requiresGrad = wasTrainable; // registerParameter marks every parameter trainable
  }
}
