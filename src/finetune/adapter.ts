/**
 * PEFT adapter directories: `adapter_config.json` and `adapter_model.safetensors`, written as
 * PEFT's `save_pretrained` writes them and read back onto a base model.
 *
 * From huggingface/peft at PEFT_COMMIT (see lora.ts):
 *  - the config is `LoraConfig.to_dict()` (src/peft/tuners/lora/config.py: dataclasses.asdict
 *    over PeftConfigMixin's, PeftConfig's and LoraConfig's fields, `runtime_config` popped), sets
 *    written as lists, `json.dumps(indent=2, sort_keys=True)` (src/peft/config.py save_pretrained);
 *  - tensor keys are the module paths of the wrapped model with the adapter name removed:
 *    `base_model.model.<module path>.lora_A.weight` [r, in] and `….lora_B.weight` [out, r]
 *    (src/peft/utils/save_and_load.py get_peft_model_state_dict), and with `use_dora`
 *    `….lora_magnitude_vector` [out] (src/peft/tuners/lora/model.py `_get_adapter_state_dict`), and
 *    the trained copies of `modules_to_save` and `bias` under the base's names (saved-tensors.ts);
 *  - the safetensors metadata is `{"format": "pt"}` (src/peft/peft_model.py save_pretrained).
 * knobs adds `knobs.base_digest` to that metadata: a SHA-256 over the base's parameters, so an
 * adapter loaded onto another base is refused unless the caller allows it.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError } from '../errors.js';
import { isRawTensor, loadSafetensors, saveSafetensors } from '../formats/safetensors.js';
import { writeDirectoryAtomic, writeFileAtomic } from '../io/atomic.js';
import { directoryFiles, parseJsonObject, readTextFile } from '../models/hf/files.js';
import type { Module } from '../nn/module.js';
import { cast, contiguous } from '../ops/view.js';
import { formatShape, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import {
  INFORMATIONAL_FIELDS,
  type LoraAdapter,
  type LoraConfig,
  type LoraPlan,
  UNIMPLEMENTED_DEFAULTS,
  applyLora,
  isAdapterTensorName,
  parseLoraConfig,
  planLora,
} from './lora.js';
import { pissaConvertedConfig, pissaConvertedTensors } from './pissa.js';
import { hashQuantizedLayers } from './quantized-base.js';
import { baseTensorOf } from './saved-tensors.js';

export const ADAPTER_CONFIG_NAME = 'adapter_config.json';
export const ADAPTER_WEIGHTS_NAME = 'adapter_model.safetensors';

/** Whether `path` is a PEFT adapter directory (it holds adapter_config.json). */
export function isAdapterDir(path: string): boolean {
  return existsSync(join(path, ADAPTER_CONFIG_NAME));
}
/** The safetensors metadata key that holds the base's digest. */
export const BASE_DIGEST_KEY = 'knobs.base_digest';
const KEY_PREFIX = 'base_model.model.';

/** Every field `LoraConfig.to_dict()` emits at PEFT_COMMIT, in its order, filled from `config`. */
export function loraConfigDict(config: LoraConfig): Record<string, unknown> {
  const c = config;
  return {
    task_type: c.task_type,
    peft_type: INFORMATIONAL_FIELDS.peft_type,
    auto_mapping: INFORMATIONAL_FIELDS.auto_mapping,
    peft_version: INFORMATIONAL_FIELDS.peft_version,
    base_model_name_or_path: c.base_model_name_or_path,
    revision: c.revision,
    inference_mode: c.inference_mode,
    r: c.r,
    target_modules: c.target_modules,
    exclude_modules: c.exclude_modules,
    lora_alpha: c.lora_alpha,
    lora_dropout: c.lora_dropout,
    fan_in_fan_out: c.fan_in_fan_out,
    bias: c.bias,
    use_rslora: c.use_rslora,
    modules_to_save: c.modules_to_save,
    init_lora_weights: c.init_lora_weights,
    layers_to_transform: c.layers_to_transform,
    layers_pattern: c.layers_pattern,
    rank_pattern: c.rank_pattern,
    alpha_pattern: c.alpha_pattern,
    megatron_config: UNIMPLEMENTED_DEFAULTS.megatron_config,
    megatron_core: INFORMATIONAL_FIELDS.megatron_core,
    trainable_token_indices: UNIMPLEMENTED_DEFAULTS.trainable_token_indices,
    loftq_config: UNIMPLEMENTED_DEFAULTS.loftq_config,
    eva_config: UNIMPLEMENTED_DEFAULTS.eva_config,
    corda_config: UNIMPLEMENTED_DEFAULTS.corda_config,
    lora_ga_config: UNIMPLEMENTED_DEFAULTS.lora_ga_config,
    use_dora: c.use_dora,
    velora_config: UNIMPLEMENTED_DEFAULTS.velora_config,
    alora_invocation_tokens: UNIMPLEMENTED_DEFAULTS.alora_invocation_tokens,
    use_qalora: UNIMPLEMENTED_DEFAULTS.use_qalora,
    qalora_group_size: INFORMATIONAL_FIELDS.qalora_group_size,
    monteclora_config: UNIMPLEMENTED_DEFAULTS.monteclora_config,
    layer_replication: UNIMPLEMENTED_DEFAULTS.layer_replication,
    lora_bias: UNIMPLEMENTED_DEFAULTS.lora_bias,
    target_parameters: UNIMPLEMENTED_DEFAULTS.target_parameters,
    use_bdlora: UNIMPLEMENTED_DEFAULTS.use_bdlora,
    arrow_config: UNIMPLEMENTED_DEFAULTS.arrow_config,
    kasa_config: UNIMPLEMENTED_DEFAULTS.kasa_config,
    ensure_weight_tying: UNIMPLEMENTED_DEFAULTS.ensure_weight_tying,
  };
}

/** json.dumps(obj, indent=2, sort_keys=True), as PEFT writes adapter_config.json (up to float spelling). */
export function stringifySorted(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (typeof v === 'object' && v !== null)
      return Object.fromEntries(
        Object.keys(v)
          .sort()
          .map((k) => [k, sort((v as Record<string, unknown>)[k])]),
      );
    return v;
  };
  return JSON.stringify(sort(value), null, 2);
}

/**
 * SHA-256 over the base's parameters (LoRA tensors left out): each parameter's name, dtype, shape
 * and values in order, then each quantized layer's weight as held: its path, block type, shape and
 * block bytes (quantized-base.ts; a base without quantized layers hashes as before). Two loads of
 * the same weights give the same digest; any change does not, quantizing included.
 * The weights must be unmerged (a merged adapter would be part of "the base").
 */
export function baseDigest(model: Module): string {
  const hash = createHash('sha256');
  for (const [name, attached] of model.namedParameters()) {
    if (isAdapterTensorName(name)) continue;
    const p = baseTensorOf(attached); // an attached adapter's trained copy stands for the base's tensor
    hash.update(`${name}\0${p.dtype}\0${p.shape.join(',')}\0`);
    const storage = contiguous(p).contiguousStorage() as Float32Array | Float64Array;
    hash.update(new Uint8Array(storage.buffer, storage.byteOffset, storage.byteLength));
  }
  hashQuantizedLayers(model, hash);
  return `sha256:${hash.digest('hex')}`;
}

export interface SaveAdapterOptions {
  /** The base's digest (computed from `model` when absent; pass it when the adapter is merged). */
  baseDigest?: string;
}

/**
 * Writes `adapter` (attached to `model`) as a PEFT adapter directory. A new directory is staged
 * under a temporary name next to it and renamed into place whole; an existing one has its files
 * replaced one at a time, each atomically, the weights before the config, so a reader never sees a
 * config without its tensors. Either way no half-written file is left.
 */
export async function saveLoraAdapter(
  dir: string,
  model: Module,
  adapter: LoraAdapter,
  opts: SaveAdapterOptions = {},
): Promise<void> {
  if (opts.baseDigest === undefined && [...adapter.layers.values()].some((l) => l.merged)) {
    throw new FormatError(
      'lora_merged',
      'saveLoraAdapter: the adapter is merged into the base, so the base digest cannot be computed; unmerge first or pass opts.baseDigest',
      { dir },
    );
  }
  const mutated = [...adapter.layers.values()].some((l) => l.mutatedInit !== null);
  if (mutated && opts.baseDigest === undefined)
    throw new FormatError(
      'lora_pissa_digest',
      'saveLoraAdapter: a PiSSA / OLoRA adapter is saved for the original base, but the model holds the residual weights; pass opts.baseDigest (the digest taken before applyLora)',
      { dir },
    );
  const digest = opts.baseDigest ?? baseDigest(model);
  const tensors = new Map<string, Tensor>();
  for (const [name, t] of adapter.namedParameters()) tensors.set(KEY_PREFIX + name, cast(t, 'f32'));
  for (const { target, value } of adapter.saved)
    for (const alias of target.aliases)
      tensors.set(KEY_PREFIX + alias.key, cast(alias.values === 'original' ? target.original : value, 'f32'));
  // PiSSA / OLoRA: the adapter converted onto the original base, as PEFT saves it (pissa.ts).
  for (const [path, l] of mutated ? adapter.layers : []) {
    const { A, B } = pissaConvertedTensors(l.lora_A.weight, l.lora_B.weight, l.mutatedInit!);
    tensors.set(`${KEY_PREFIX}${path}.lora_A.weight`, cast(A, 'f32'));
    tensors.set(`${KEY_PREFIX}${path}.lora_B.weight`, cast(B, 'f32'));
  }
  const config = mutated ? pissaConvertedConfig(adapter.config) : adapter.config;
  const write = async (into: string): Promise<void> => {
    await saveSafetensors(join(into, ADAPTER_WEIGHTS_NAME), tensors, { format: 'pt', [BASE_DIGEST_KEY]: digest });
    await writeFileAtomic(join(into, ADAPTER_CONFIG_NAME), `${stringifySorted(loraConfigDict(config))}\n`);
  };
  if (existsSync(dir)) return write(dir);
  await writeDirectoryAtomic(dir, write);
}

export interface LoadAdapterOptions {
  /** Load even when the adapter records another base's digest (the shapes must still fit). */
  allowBaseMismatch?: boolean;
}

export interface LoadedAdapter {
  adapter: LoraAdapter;
  /** The digest the adapter file records, or null (PEFT's own files carry none). */
  recordedDigest: string | null;
}

/** Reads adapter_config.json of `dir` and validates it as a LoRA config. */
export async function readAdapterConfig(dir: string): Promise<LoraConfig> {
  const file = await readTextFile(directoryFiles(dir), ADAPTER_CONFIG_NAME);
  if (!file)
    throw new FormatError(
      'lora_no_config',
      `${dir} has no ${ADAPTER_CONFIG_NAME}; a PEFT adapter directory holds ${ADAPTER_CONFIG_NAME} and ${ADAPTER_WEIGHTS_NAME}`,
      { dir },
    );
  try {
    return parseLoraConfig(parseJsonObject(file.text, file.path));
  } catch (err) {
    if (err instanceof FormatError)
      throw new FormatError(err.rule, `${file.path}: ${err.message}`, { ...err.details, file: file.path });
    throw err;
  }
}

/**
 * Reads a PEFT adapter directory onto `model`: checks the base digest, that every tensor the config
 * implies is present with its shape and nothing else is, then attaches the layers and copies the
 * values. Nothing changes in `model` when a check fails.
 */
export async function loadLoraAdapter(
  dir: string,
  model: Module,
  opts: LoadAdapterOptions = {},
): Promise<LoadedAdapter> {
  const config = await readAdapterConfig(dir);
  const path = join(dir, ADAPTER_WEIGHTS_NAME);
  const { tensors, metadata } = await loadSafetensors(path);
  const recorded = metadata?.get(BASE_DIGEST_KEY) ?? null;
  if (recorded !== null && !opts.allowBaseMismatch) {
    const actual = baseDigest(model);
    if (actual !== recorded) {
      throw new FormatError(
        'lora_base_mismatch',
        `${path} was trained on another base (its ${BASE_DIGEST_KEY} is ${recorded}, this model's weights hash to ${actual}); load it onto the base it was made for, or allow the mismatch (--allow-base-mismatch) if you know the bases are compatible`,
        { file: path, recorded, actual },
      );
    }
  }
  const plan = planLora(model, config, { forLoad: true });
  const values = checkTensors(plan, tensors, path);
  const adapter = applyLora(model, plan);
  const byKey = new Map(adapter.namedParameters().map(([name, t]) => [KEY_PREFIX + name, t]));
  for (const [key, value] of values) {
    const target = byKey.get(key)!;
    (target.storage as Float32Array | Float64Array).set(
      cast(value, target.dtype).contiguousStorage() as Float32Array | Float64Array,
    );
  }
  return { adapter, recordedDigest: recorded };
}

/** Pairs every tensor the plan needs (by key) with the file's, or throws naming the module and shapes. */
function checkTensors(plan: LoraPlan, tensors: Map<string, unknown>, path: string): [string, Tensor][] {
  const wanted = new Map<string, { module: string; which: 'A' | 'B' | 'magnitude' | 'saved'; shape: number[] }>();
  for (const { path: module, layer, r } of plan.targets) {
    wanted.set(`${KEY_PREFIX}${module}.lora_A.weight`, { module, which: 'A', shape: [r, layer.inFeatures] });
    wanted.set(`${KEY_PREFIX}${module}.lora_B.weight`, { module, which: 'B', shape: [layer.outFeatures, r] });
    if (plan.config.use_dora)
      wanted.set(`${KEY_PREFIX}${module}.lora_magnitude_vector`, {
        module,
        which: 'magnitude',
        shape: [layer.outFeatures],
      });
  }
  // PEFT's second names for some saved tensors (saved-tensors.ts SavedAlias): accepted, not needed.
  const aliases = new Set<string>();
  // Before PEFT's fix #3490, bias "lora_only" wrote no bias: a missing one keeps the base's.
  const optional = new Set<string>();
  for (const { key, original, aliases: more } of plan.saved) {
    wanted.set(KEY_PREFIX + key, { module: key, which: 'saved', shape: [...original.shape] });
    for (const a of more) aliases.add(KEY_PREFIX + a.key);
    if (plan.config.bias === 'lora_only' && key.endsWith('.base_layer.bias')) optional.add(KEY_PREFIX + key);
  }
  const unexpected = [...tensors.keys()].filter((k) => !wanted.has(k) && !aliases.has(k));
  if (unexpected.length > 0) {
    throw new FormatError(
      'lora_unexpected_tensor',
      `${path} holds ${unexpected.length} tensor(s) that ${ADAPTER_CONFIG_NAME} does not target on this model: ${unexpected.slice(0, 6).join(', ')}; the adapter was made for another architecture or its config was edited`,
      { file: path, tensors: unexpected },
    );
  }
  const out: [string, Tensor][] = [];
  for (const [key, { module, which, shape }] of wanted) {
    const t = tensors.get(key);
    if (t === undefined && optional.has(key)) continue;
    if (t === undefined) {
      throw new FormatError(
        'lora_missing_tensor',
        `${path} lacks ${key}, which ${ADAPTER_CONFIG_NAME} implies for ${module}; the file is incomplete or the config targets more modules than were trained`,
        { file: path, tensor: key, module },
      );
    }
    if (isRawTensor(t) || !['f32', 'f16', 'bf16', 'f64'].includes((t as Tensor).dtype)) {
      throw new FormatError(
        'lora_unsupported_dtype',
        `${path}: ${key} is stored as ${isRawTensor(t) ? t.dtype : (t as Tensor).dtype}; adapters are read from F32, F16, BF16 or F64 tensors`,
        { file: path, tensor: key },
      );
    }
    const tensor = t as Tensor;
    if (!shapesEqual(tensor.shape, shape)) {
      throw new FormatError(
        'lora_shape_mismatch',
        `${path}: ${key} has shape ${formatShape(tensor.shape)}, but ${module}${which === 'A' || which === 'B' ? ` with rank ${shape[which === 'A' ? 0 : 1]}` : ''} needs ${formatShape(shape)}; the adapter was made for another base (or its rank_pattern differs)`,
        { file: path, tensor: key, module, shape: tensor.shape, expected: shape },
      );
    }
    out.push([key, tensor]);
  }
  return out;
}

/**
 * Loads each adapter directory onto `model`, in order (their targets must not overlap); a failure
 * names the directory. For generate, eval and serve with --adapter.
 */
export async function loadAdapters(
  model: Module,
  dirs: readonly string[],
  opts: LoadAdapterOptions = {},
): Promise<LoraAdapter[]> {
  const out: LoraAdapter[] = [];
  for (const dir of dirs) out.push((await loadLoraAdapter(dir, model, opts)).adapter);
  return out;
}
