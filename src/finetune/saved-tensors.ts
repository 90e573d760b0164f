/**
 * What a LoRA adapter trains besides its deltas, as PEFT does: whole modules (`modules_to_save`)
 * and biases (`bias: "all"` or `"lora_only"`). Each such parameter gets a copy that the adapter
 * owns and trains; while the adapter is attached the module holds the copy in the parameter's
 * place, and detaching puts the base's own tensor back, so the base never changes (PEFT's
 * ModulesToSaveWrapper keeps the original module the same way).
 *
 * From huggingface/peft at PEFT_COMMIT (lora.ts):
 *  - `modules_to_save` matches every module whose name ends with an entry, as a plain string
 *    (src/peft/utils/other.py `_set_trainable`: `key.endswith(target_key)`), and LoRA skips a
 *    module an entry names as whole name segments, or one inside it (src/peft/tuners/tuners_utils.py
 *    `check_target_module_exists`: `re.match(rf"(^|.*\.){m}($|\..*)", key)`); where the two rules
 *    disagree (`"_attn"` ends `c_attn`), a saved module that is or holds a LoRA target is refused,
 *    as PEFT's ModulesToSaveWrapper refuses to wrap a LoRA layer;
 *  - a saved module's tensors are written under the module's own names,
 *    `base_model.model.<module path>.<parameter>` (other.py `ModulesToSaveWrapper.adapter_state_dict`,
 *    save_and_load.py `get_peft_model_state_dict`);
 *  - `bias: "all"` trains and saves every parameter named `bias`, `"lora_only"` the biases of the
 *    layers LoRA targets; a targeted layer's bias lives on its base layer, so it is saved as
 *    `<module path>.base_layer.bias` (tuners_utils.py `_mark_only_adapters_as_trainable`,
 *    `_get_learnable_bias_state_dict`).
 *  - with `bias: "all"`, a bias inside a module to save is written twice more (SavedAlias).
 * A tied embedding (GPT-2's wte, a Llama with tie_word_embeddings) is also the output head here, so
 * training it apart from the head, as PEFT does by default, is refused; so is a quantized layer
 * (its copy would have to be float) and a tensor another attached adapter holds a copy of.
 */
import { noGrad } from '../autograd/tape.js';
import { FormatError } from '../errors.js';
import { GPT } from '../models/gpt.js';
import { Llama } from '../models/llama.js';
import type { Module } from '../nn/module.js';
import { QuantizedLinear } from '../nn/quantized-linear.js';
import { clone } from '../ops/view.js';
import type { Tensor } from '../tensor.js';

/**
 * Another key PEFT writes for a saved tensor. With `bias: "all"`, the biases inside a module to
 * save are also picked from the wrapper's children: `<module>.original_module.<path>` (the base's
 * values) and `<module>.modules_to_save[.default].<path>` (the copy's), beside `<module>.<path>`.
 */
export interface SavedAlias {
  key: string;
  values: 'original' | 'copy';
}

/** One base parameter an adapter trains a copy of. */
export interface SavedTarget {
  /** PEFT's key without `base_model.model.` (`transformer.ln_f.weight`, `….c_attn.base_layer.bias`). */
  key: string;
  aliases: SavedAlias[];
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

const patterns = new Map<string, RegExp>();

/** PEFT's pattern for a modules_to_save entry (the entry is a regex there; parseLoraConfig checks it compiles). */
export function savedModulePattern(entry: string): RegExp {
  let re = patterns.get(entry);
  if (!re) patterns.set(entry, (re = new RegExp(`^(?:.*\\.)?(?:${entry})(?:$|\\.)`)));
  return re;
}

/** The children an attached adapter registers on a layer: never the base's, so never saved. */
const ADAPTER_CHILD = /(?:^|\.)lora_(?:A|B|dropout|magnitude_vector)(?:\.|$)/;

/** Whether `key` is one of PEFT's second names of a saved tensor (SavedAlias): the same values again. */
export function isSavedAlias(key: string): boolean {
  return /\.(?:original_module|modules_to_save)\./.test(key);
}

/** PEFT's tuners_utils.py `_remove_adapter_name_from_state_dict_key` for the adapter name "default". */
function withoutAdapterName(key: string): string {
  if (key.endsWith('.default')) return key.slice(0, -'.default'.length);
  const dot = key.lastIndexOf('.');
  return `${key.slice(0, dot).replace(/\.default$/, '')}${key.slice(dot)}`;
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
 * modules_to_save that matches nothing (unless `lenient`: PEFT ignores it when it loads), a match
 * inside another match, a module LoRA targets or that holds one, a tied embedding, a quantized
 * layer, a tensor another attached adapter holds a copy of.
 */
export function planSavedTensors(
  allModules: readonly [string, Module][],
  model: Module,
  config: SavedConfig,
  targets: ReadonlySet<string>,
  knobsName: (hfPath: string) => string,
  lenient = false,
): SavedTarget[] {
  const modules = allModules.filter(([path]) => !ADAPTER_CHILD.test(path));
  const out: SavedTarget[] = [];
  const taken = new Set<Tensor>();
  const add = (module: Module, local: string, original: Tensor, key: string, hfName = key): SavedTarget | null => {
    if (taken.has(original)) return null;
    if (baseTensorOf(original) !== original)
      throw new FormatError(
        'lora_already_applied',
        `${key} holds another adapter's trained copy; detach or merge that adapter first`,
        { tensor: key },
      );
    taken.add(original);
    const target = { key, aliases: [], module, local, name: knobsName(hfName), original };
    out.push(target);
    return target;
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
    if (!lenient && !matched.some(([path]) => path.endsWith(entry)))
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
        `the entries ${JSON.stringify(entries)} select both ${outer[0]} and ${path} inside it (each entry matches the end of a module's name); name only the outer module, which saves all of it`,
        { module: path },
      );
    const adapted = [...targets].find((t) => t === path || t.startsWith(`${path}.`));
    if (adapted !== undefined)
      throw refused(
        'modules_to_save',
        `${path} ${adapted === path ? 'is' : `holds ${adapted}, which is`} a LoRA target (an entry matches the end of a module's name, while LoRA skips only whole name segments); PEFT refuses a module to save that carries LoRA — change target_modules, exclude_modules or the entry`,
        { module: path, target: adapted },
      );
    const quantized = module.namedModules(path).find(([, m]) => m instanceof QuantizedLinear);
    if (quantized)
      throw refused(
        'modules_to_save',
        `${quantized[0]} is quantized (${(quantized[1] as QuantizedLinear).weight.type}); a module to save trains its own float copy of every weight — load the float base`,
        { module: quantized[0] },
      );
    for (const [name, p] of module.namedParameters()) {
      const dot = name.lastIndexOf('.');
      const target = add(
        dot < 0 ? module : module.getModule(name.slice(0, dot)),
        name.slice(dot + 1),
        p,
        `${path}.${name}`,
      );
      if (target && config.bias === 'all' && name.slice(dot + 1) === 'bias')
        target.aliases.push(
          { key: `${path}.original_module.${name}`, values: 'original' },
          { key: withoutAdapterName(`${path}.modules_to_save.default.${name}`), values: 'copy' },
        );
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
    this.value.requiresGrad = true;
    originals.set(this.value, target.original);
    this.attach();
  }

  /** Throws when the parameter's place holds another adapter's copy (which must be detached first). */
  assertAttachable(): void {
    const { original, key } = this.target;
    const held = this.#held();
    if (held !== original && held !== this.value)
      throw new FormatError('lora_already_applied', `${key} holds another adapter's trained copy; detach it first`, {
        tensor: key,
      });
  }

  /** Puts the copy in the parameter's place (whether it trains is left as it was). */
  attach(): void {
    this.assertAttachable();
    this.#register(this.value);
  }

  /** Puts the base's tensor back, unless the place no longer holds this copy. */
  detach(): void {
    if (this.#held() === this.value) this.#register(this.target.original);
  }

  /** What the parameter's place holds now. */
  #held(): Tensor | undefined {
    const { module, local } = this.target;
    return ownParameters(module).find(([name]) => name === local)?.[1];
  }

  #register(t: Tensor): void {
    const trains = t.requiresGrad;
    this.target.module.registerParameter(this.target.local, t);
    t.requiresGrad = trains; // registerParameter marks every parameter trainable
  }
}
