/**
 * LoRA as PEFT defines it, carried by the layers: `applyLora(model, config)` attaches to every
 * targeted Linear (weight [out, in]) and GPT-2 Conv1D (weight [in, out], PEFT's `fan_in_fan_out`)
 * a delta `scaling · lora_B(lora_A(dropout(x)))`, registered on the layer as the children
 * `lora_A`, `lora_B` and `lora_dropout`, so the base's parameter names do not change and the
 * adapter's are `<layer>.lora_A.weight` / `<layer>.lora_B.weight`, as PEFT saves them.
 *
 * Each rule follows PEFT's source, huggingface/peft at commit
 * 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40 (the `PEFT_COMMIT` below):
 *  - target matching: src/peft/tuners/tuners_utils.py `check_target_module_exists` (a list
 *    matches a module whose full name equals an entry or ends with `.` + entry, then
 *    `layers_to_transform` keeps layers whose index — the first number segment after at least two
 *    name segments, or after a `layers_pattern` segment — is listed; a string is a regex matched with
 *    `re.fullmatch` via src/peft/utils/other.py `match_target_against_key`; `exclude_modules` is
 *    checked first, the same two ways);
 *  - `all-linear`: tuners_utils.py `_maybe_include_all_linear_layers` (every nn.Linear/Conv1D
 *    except the model's output embeddings; the config then lists those full names);
 *  - default targets when `target_modules` is null: src/peft/utils/constants.py
 *    `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` (gpt2: c_attn; llama/mistral/qwen2: q_proj, v_proj);
 *  - `rank_pattern` / `alpha_pattern`: src/peft/tuners/lora/model.py `_create_and_replace` with
 *    src/peft/utils/other.py `get_pattern_key` (the first key, in order, for which
 *    `re.match(rf"(.*\.)?({key})$", name)` holds);
 *  - scaling `lora_alpha / r`, or `lora_alpha / √r` with `use_rslora`; `r > 0`; dropout an
 *    nn.Dropout before lora_A when `lora_dropout > 0`: src/peft/tuners/lora/layer.py `update_layer`;
 *  - init: lora_A kaiming_uniform(a=√5) (nn.Linear's default), `"gaussian"` N(0, 1/r); lora_B
 *    zeros, so an untrained adapter changes nothing: layer.py `reset_lora_parameters`;
 *  - `fan_in_fan_out` follows the layer type (True for Conv1D, False for Linear, whatever the
 *    config says): layer.py `dispatch_default`;
 *  - delta weight `transpose(B @ A, fan_in_fan_out) · scaling`: layer.py `Linear.get_delta_weight`;
 *  - the config fields and their defaults: src/peft/tuners/lora/config.py `LoraConfig` and
 *    src/peft/config.py `PeftConfigMixin` / `PeftConfig`, with the checks of `__post_init__`.
 * knobs adds one check PEFT lacks: a rank larger than the layer (min(in, out)) is an error.
 *
 * A target may also be a QuantizedLinear (a q8_0 / q4_0 base, QLoRA-style): its blocks stay as they
 * are (forward and input gradient through the quantized kernels) and only lora_A / lora_B, in f32,
 * train. The adapter's names, shapes and config are those of the float layer it stands for (inside
 * GPT-2 a Conv1D, so `fan_in_fan_out` is true); merging needs the layer dequantized first
 * (quantized-base.ts `dequantizeLayers`).
 */
import { noGrad } from '../autograd/tape.js';
import { FormatError } from '../errors.js';
import { add, div, mul, sub } from '../ops/elementwise.js';
import { matmul } from '../ops/linalg.js';
import { loraLinear } from '../ops/lora-linear.js';
import { reshape, transpose } from '../ops/view.js';
import { DoraMagnitude, baseRowNormsSquared, doraWeightNorm, withoutBias } from './dora.js';
import { type MutatingInit, type PissaInit, mutatingInitRefused, oloraInit, pissaInit } from './pissa.js';
import { fromArray } from '../ops/creation.js';
import { GPT } from '../models/gpt.js';
import { Llama } from '../models/llama.js';
import { normal_, zeros_ } from '../nn/init.js';
import { Dropout } from '../nn/layers.js';
import { type AdapterHook, Linear } from '../nn/linear.js';
import type { Module } from '../nn/module.js';
import { QuantizedLinear } from '../nn/quantized-linear.js';
import type { Generator } from '../random.js';
import type { Tensor } from '../tensor.js';
import { SavedTensor, type SavedTarget, inSavedModule, planSavedTensors, savedModulePattern } from './saved-tensors.js';

export const PEFT_REPOSITORY = 'huggingface/peft';
export const PEFT_COMMIT = '5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40';

/** The LoRA fields knobs implements, with PEFT's names (they are written to adapter_config.json as they are). */
export interface LoraConfig {
  r: number;
  lora_alpha: number;
  lora_dropout: number;
  /** Name suffixes, a regex string (re.fullmatch), or `"all-linear"`; null: the architecture's default. */
  target_modules: string[] | string | null;
  exclude_modules: string[] | string | null;
  use_rslora: boolean;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  layers_to_transform: number[] | number | null;
  layers_pattern: string[] | string | null;
  /** true: PEFT's default init; false: lora_B random too (debugging); "gaussian": lora_A N(0, 1/r). */
  init_lora_weights: boolean | 'gaussian' | MutatingInit;
  /** DoRA (Liu et al. 2024): a trained magnitude per output over the normalised W + scaling·B·A (dora.ts). */
  use_dora: boolean;
  /** Modules trained whole beside the deltas, by name suffix (saved-tensors.ts); LoRA skips them. */
  modules_to_save: string[] | null;
  /** Biases trained beside the deltas: none, every one, or those of the targeted layers (saved-tensors.ts). */
  bias: 'none' | 'all' | 'lora_only';
  fan_in_fan_out: boolean;
  task_type: string | null;
  base_model_name_or_path: string | null;
  revision: string | null;
  inference_mode: boolean;
}

export const LORA_DEFAULTS: LoraConfig = {
  r: 8,
  lora_alpha: 8,
  lora_dropout: 0,
  target_modules: null,
  exclude_modules: null,
  use_rslora: false,
  rank_pattern: {},
  alpha_pattern: {},
  layers_to_transform: null,
  layers_pattern: null,
  init_lora_weights: true,
  use_dora: false,
  modules_to_save: null,
  bias: 'none',
  fan_in_fan_out: false,
  task_type: 'CAUSAL_LM',
  base_model_name_or_path: null,
  revision: null,
  inference_mode: false,
};

/**
 * Every other field `LoraConfig.to_dict()` emits, with its default: knobs does not implement them,
 * so a value other than this default is an error naming the field. (`runtime_config` is dropped by
 * to_dict; `megatron_core` and `qalora_group_size` only matter with megatron_config / use_qalora.)
 */
export const UNIMPLEMENTED_DEFAULTS: Readonly<Record<string, unknown>> = {
  megatron_config: null,
  trainable_token_indices: null,
  loftq_config: {},
  eva_config: null,
  corda_config: null,
  lora_ga_config: null,
  velora_config: null,
  alora_invocation_tokens: null,
  use_qalora: false,
  monteclora_config: null,
  layer_replication: null,
  lora_bias: false,
  target_parameters: null,
  use_bdlora: null,
  arrow_config: null,
  kasa_config: null,
  ensure_weight_tying: false,
};

/** Fields whose value does not change the math (any value is accepted and kept). */
export const INFORMATIONAL_FIELDS: Readonly<Record<string, unknown>> = {
  peft_type: 'LORA',
  auto_mapping: null,
  peft_version: null,
  megatron_core: 'megatron.core',
  qalora_group_size: 16,
};

const ALL_LINEAR = 'all-linear';

/** Whether a parameter name is an adapter's (lora_A, lora_B, DoRA's magnitude) rather than the base's. */
export function isAdapterTensorName(name: string): boolean {
  return /\.lora_(?:A|B|magnitude_vector)\.weight$/.test(name);
}

/** A layer LoRA attaches to: a float Linear / Conv1D, or a quantized one. */
export type LoraBaseLayer = Linear | QuantizedLinear;

function isLoraBaseLayer(m: Module): m is LoraBaseLayer {
  return m instanceof Linear || m instanceof QuantizedLinear;
}

/**
 * Whether `layer` stands for a weight stored [in, out] (PEFT's fan_in_fan_out): a Conv1D, or a
 * quantized layer inside GPT-2 (whose Hugging Face layers are all Conv1D; the blocks hold [out, in]).
 */
function fanInFanOutOf(model: Module, layer: LoraBaseLayer): boolean {
  return layer instanceof Linear ? layer.fanInFanOut : model instanceof GPT;
}

function bad(field: string, message: string, extra: Record<string, unknown> = {}): FormatError {
  return new FormatError('lora_invalid_config', `LoRA config field ${field}: ${message}`, { field, ...extra });
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function stringList(v: unknown, field: string): string[] {
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string' || s === ''))
    throw bad(field, 'must be a list of non-empty strings or a string');
  return [...(v as string[])];
}

function intList(v: unknown, field: string): number[] | number {
  if (Number.isInteger(v) && (v as number) >= 0) return v as number;
  if (!Array.isArray(v) || v.some((n) => !Number.isInteger(n) || n < 0))
    throw bad(field, 'must be a layer index or a list of layer indices (integers ≥ 0)');
  return [...(v as number[])];
}

function numberMap(v: unknown, field: string, integer: boolean): Record<string, number> {
  if (!isPlainObject(v)) throw bad(field, 'must be an object {pattern: value}');
  for (const [k, n] of Object.entries(v)) {
    if (typeof n !== 'number' || !Number.isFinite(n) || (integer && (!Number.isInteger(n) || n <= 0))) {
      throw bad(
        field,
        `${JSON.stringify(k)} maps to ${JSON.stringify(n)}; values must be ${integer ? 'positive integers' : 'finite numbers'}`,
        { key: k },
      );
    }
    compileRegex(k, field);
  }
  return { ...(v as Record<string, number>) };
}

/** A Python regex as a JS RegExp anchored at both ends (re.fullmatch); a pattern JS cannot compile is an error naming the field. */
function compileRegex(source: string, field: string, wrap = (s: string): string => `^(?:${s})$`): RegExp {
  try {
    return new RegExp(wrap(source));
  } catch (e) {
    throw bad(
      field,
      `${JSON.stringify(source)} is not a regular expression knobs can compile (${(e as Error).message}); use the common subset of Python's and JavaScript's syntax`,
    );
  }
}

/**
 * Validates a LoRA config as PEFT's LoraConfig would (plus knobs' limits) and fills in defaults.
 * Accepts the fields of adapter_config.json or of a tune recipe's `lora` section.
 */
export function parseLoraConfig(input: unknown): LoraConfig {
  if (!isPlainObject(input))
    throw new FormatError('lora_invalid_config', 'a LoRA config must be a JSON object', { field: '(root)' });
  for (const [field, value] of Object.entries(input)) {
    if (field in LORA_DEFAULTS || field in INFORMATIONAL_FIELDS || field === 'runtime_config') continue;
    if (field in UNIMPLEMENTED_DEFAULTS) {
      if (!deepEqual(value, UNIMPLEMENTED_DEFAULTS[field])) {
        throw new FormatError(
          'lora_unsupported',
          `LoRA config field ${field} = ${JSON.stringify(value)} is not implemented by knobs; only ${JSON.stringify(UNIMPLEMENTED_DEFAULTS[field])} (PEFT's default) is supported`,
          { field, value },
        );
      }
      continue;
    }
    // A field from a newer PEFT: harmless when it is off, an error otherwise.
    if (value === null || value === false || deepEqual(value, {}) || deepEqual(value, [])) continue;
    throw new FormatError(
      'lora_unsupported',
      `LoRA config field ${field} = ${JSON.stringify(value)} is unknown to knobs (PEFT ${PEFT_COMMIT.slice(0, 7)}); remove it or set it to its default`,
      { field, value },
    );
  }
  if (input.peft_type !== undefined && input.peft_type !== 'LORA') {
    throw new FormatError(
      'lora_unsupported',
      `peft_type is ${JSON.stringify(input.peft_type)}; knobs reads LoRA adapters (peft_type "LORA") only`,
      { field: 'peft_type', value: input.peft_type },
    );
  }
  const c: LoraConfig = { ...LORA_DEFAULTS, rank_pattern: {}, alpha_pattern: {} };
  const v = (k: keyof LoraConfig): unknown => input[k];
  if (v('r') !== undefined) {
    if (!Number.isInteger(v('r')) || (v('r') as number) <= 0)
      throw bad('r', `must be a positive integer, got ${JSON.stringify(v('r'))}`);
    c.r = v('r') as number;
  }
  for (const k of ['lora_alpha', 'lora_dropout'] as const) {
    if (v(k) === undefined) continue;
    if (typeof v(k) !== 'number' || !Number.isFinite(v(k)))
      throw bad(k, `must be a finite number, got ${JSON.stringify(v(k))}`);
    c[k] = v(k) as number;
  }
  if (!(c.lora_dropout >= 0 && c.lora_dropout < 1))
    throw bad('lora_dropout', `must be in [0, 1), got ${c.lora_dropout}`);
  for (const k of ['use_rslora', 'use_dora', 'fan_in_fan_out', 'inference_mode'] as const) {
    if (v(k) === undefined) continue;
    if (typeof v(k) !== 'boolean') throw bad(k, `must be true or false, got ${JSON.stringify(v(k))}`);
    c[k] = v(k) as boolean;
  }
  if (v('modules_to_save') !== undefined && v('modules_to_save') !== null) {
    if (!Array.isArray(v('modules_to_save')))
      throw bad('modules_to_save', `must be a list of module names, got ${JSON.stringify(v('modules_to_save'))}`);
    c.modules_to_save = stringList(v('modules_to_save'), 'modules_to_save');
    for (const m of c.modules_to_save) compileRegex(m, 'modules_to_save', (s) => savedModulePattern(s).source);
  }
  if (v('bias') !== undefined) {
    const b = v('bias');
    if (b !== 'none' && b !== 'all' && b !== 'lora_only')
      throw new FormatError(
        'lora_unsupported',
        `LoRA config field bias = ${JSON.stringify(b)} is not one LoRA implements; use "none" (PEFT's default), "all" or "lora_only"`,
        { field: 'bias', value: b },
      );
    c.bias = b;
  }
  for (const k of ['target_modules', 'exclude_modules', 'layers_pattern'] as const) {
    const x = v(k);
    if (x === undefined || x === null) continue;
    c[k] = typeof x === 'string' ? x : stringList(x, k);
  }
  if (typeof c.target_modules === 'string' && c.target_modules.toLowerCase() !== ALL_LINEAR)
    compileRegex(c.target_modules, 'target_modules');
  if (typeof c.exclude_modules === 'string') compileRegex(c.exclude_modules, 'exclude_modules');
  if (v('layers_to_transform') !== undefined && v('layers_to_transform') !== null)
    c.layers_to_transform = intList(v('layers_to_transform'), 'layers_to_transform');
  if (v('rank_pattern') !== undefined && v('rank_pattern') !== null)
    c.rank_pattern = numberMap(v('rank_pattern'), 'rank_pattern', true);
  if (v('alpha_pattern') !== undefined && v('alpha_pattern') !== null)
    c.alpha_pattern = numberMap(v('alpha_pattern'), 'alpha_pattern', false);
  const init = v('init_lora_weights');
  if (init !== undefined) {
    if (init !== true && init !== false && init !== 'gaussian' && init !== 'pissa' && init !== 'olora') {
      throw new FormatError(
        'lora_unsupported',
        `LoRA config field init_lora_weights = ${JSON.stringify(init)} is not implemented by knobs; use true (PEFT's default), false, "gaussian", "pissa" or "olora"`,
        { field: 'init_lora_weights', value: init },
      );
    }
    c.init_lora_weights = init;
  }
  for (const k of ['task_type', 'base_model_name_or_path', 'revision'] as const) {
    const x = v(k);
    if (x === undefined) continue;
    if (x !== null && typeof x !== 'string') throw bad(k, `must be a string or null, got ${JSON.stringify(x)}`);
    c[k] = x as string | null;
  }
  if (c.task_type !== null && c.task_type !== 'CAUSAL_LM') {
    throw new FormatError(
      'lora_unsupported',
      `LoRA config field task_type = ${JSON.stringify(c.task_type)}: knobs applies adapters to causal language models only (CAUSAL_LM)`,
      { field: 'task_type', value: c.task_type },
    );
  }
  // LoraConfig.__post_init__'s consistency checks.
  if (typeof c.target_modules === 'string' && c.layers_to_transform !== null)
    throw bad('layers_to_transform', 'cannot be used when target_modules is a regex string (PEFT rejects it too)');
  if (typeof c.target_modules === 'string' && c.layers_pattern !== null)
    throw bad('layers_pattern', 'cannot be used when target_modules is a regex string (PEFT rejects it too)');
  if (c.layers_pattern !== null && c.layers_pattern.length > 0 && c.layers_to_transform === null)
    throw bad('layers_pattern', 'needs layers_to_transform as well');
  return c;
}

// ---- which modules are targeted ----------------------------------------------------------------

/**
 * The prefix that turns knobs' module paths into the module paths of the Hugging Face causal-LM
 * class (GPT2LMHeadModel keeps the blocks under `transformer.`; knobs' Llama names already match
 * LlamaForCausalLM's), and the output head `all-linear` leaves out.
 */
function architectureOf(model: Module): { prefix: string; outputHead: string | null; modelType: string | null } {
  if (model instanceof GPT) return { prefix: 'transformer.', outputHead: 'lm_head', modelType: 'gpt2' };
  if (model instanceof Llama)
    return { prefix: '', outputHead: 'lm_head', modelType: model.config.model_type ?? 'llama' };
  return { prefix: '', outputHead: null, modelType: null };
}

const DEFAULT_TARGETS: Readonly<Record<string, string[]>> = {
  gpt2: ['c_attn'],
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
};

/** Every module of `model` under its Hugging Face path. */
export function hfModules(model: Module): [string, Module][] {
  const { prefix } = architectureOf(model);
  return model
    .namedModules()
    .filter(([path]) => path !== '')
    .map(([path, m]) => [prefix + path, m]);
}

/** The knobs path of a Hugging Face module path (inverse of hfModules' naming). */
export function knobsPath(model: Module, hfPath: string): string {
  const { prefix } = architectureOf(model);
  return hfPath.startsWith(prefix) ? hfPath.slice(prefix.length) : hfPath;
}

function endsWithTarget(key: string, targets: readonly string[]): boolean {
  return targets.some((t) => key === t || key.endsWith(`.${t}`));
}

/** tuners_utils.py check_target_module_exists, for a config whose all-linear has been resolved. */
export function isTargetModule(config: LoraConfig, key: string): boolean {
  const ex = config.exclude_modules;
  if (ex !== null) {
    if (typeof ex === 'string' ? compileRegex(ex, 'exclude_modules').test(key) : endsWithTarget(key, ex)) return false;
  }
  if (inSavedModule(config.modules_to_save, key)) return false;
  const targets = config.target_modules;
  if (targets === null) return false;
  if (typeof targets === 'string') return compileRegex(targets, 'target_modules').test(key);
  if (targets.includes(key)) return true;
  if (!endsWithTarget(key, targets)) return false;
  const indexes = config.layers_to_transform;
  if (indexes === null || (Array.isArray(indexes) && indexes.length === 0)) return true;
  const patterns =
    config.layers_pattern === null || config.layers_pattern.length === 0
      ? null
      : typeof config.layers_pattern === 'string'
        ? [config.layers_pattern]
        : config.layers_pattern;
  let m: RegExpExecArray | null = null;
  if (patterns === null) m = /^.*?\.[^.]*\.(\d+)\./.exec(key);
  else
    for (const p of patterns)
      if ((m = compileRegex(p, 'layers_pattern', (s) => `^.*?\\.${s}\\.(\\d+)\\.`).exec(key))) break;
  if (!m) return false;
  const index = Number(m[1]);
  return typeof indexes === 'number' ? index === indexes : indexes.includes(index);
}

/** other.py get_pattern_key: the first pattern key that matches the end of `key` at a segment boundary. */
export function patternValue(patterns: Record<string, number>, field: string, key: string, fallback: number): number {
  for (const [p, value] of Object.entries(patterns)) {
    if (compileRegex(p, field, (s) => `^(?:.*\\.)?(?:${s})$`).test(key)) return value;
  }
  return fallback;
}

/**
 * Resolves `target_modules` for `model` as PEFT does before attaching: null becomes the
 * architecture's default list and `all-linear` the full names of every Linear/Conv1D but the head.
 */
export function resolveTargets(model: Module, config: LoraConfig): LoraConfig {
  const arch = architectureOf(model);
  let targets = config.target_modules;
  if (targets === null) {
    const fallback = arch.modelType === null ? undefined : DEFAULT_TARGETS[arch.modelType];
    if (!fallback)
      throw bad(
        'target_modules',
        'is required for this model (PEFT has no default list for it); name the layers, e.g. ["q_proj", "v_proj"], or use "all-linear"',
      );
    targets = [...fallback];
  } else if (typeof targets === 'string' && targets.toLowerCase() === ALL_LINEAR) {
    targets = hfModules(model)
      .filter(([path, m]) => isLoraBaseLayer(m) && path !== arch.outputHead)
      .map(([path]) => path);
  }
  return { ...config, target_modules: targets };
}

// ---- the layer ---------------------------------------------------------------------------------

/** One LoRA delta on one Linear/Conv1D. */
export class LoraLayer {
  readonly layer: LoraBaseLayer;
  /** The module's Hugging Face path (`model.layers.0.self_attn.q_proj`). */
  readonly path: string;
  readonly r: number;
  readonly alpha: number;
  readonly scaling: number;
  readonly lora_A: Linear;
  readonly lora_B: Linear;
  readonly dropout: Dropout;
  /** DoRA's magnitude vector (use_dora), else null. */
  readonly magnitude: DoraMagnitude | null = null;
  /** PiSSA's or OLoRA's initial A₀ and B₀ (the base holds W − scaling·B₀·A₀), else null. */
  readonly mutatedInit: PissaInit | null = null;
  /** DoRA: ‖W_o‖² of the base, per output (the base never changes while the adapter is attached). */
  readonly #baseNorm2: Tensor | null = null;
  /** DoRA: the weight norm at merge time, which unmerge divides by again (PEFT caches it the same way). */
  #mergedNorm: Tensor | null = null;
  #merged = false;

  constructor(
    layer: LoraBaseLayer,
    path: string,
    opts: {
      r: number;
      alpha: number;
      rslora: boolean;
      dropout: number;
      init: LoraConfig['init_lora_weights'];
      dora?: boolean;
      generator?: Generator;
    },
  ) {
    const { inFeatures, outFeatures } = layer;
    this.layer = layer;
    this.path = path;
    this.r = opts.r;
    this.alpha = opts.alpha;
    this.scaling = opts.rslora ? opts.alpha / Math.sqrt(opts.r) : opts.alpha / opts.r;
    // A quantized layer's adapter is f32, like the activations its kernels take.
    const dtype = layer instanceof Linear ? (layer.weight.dtype as 'f32' | 'f64') : 'f32';
    const gen = opts.generator === undefined ? {} : { generator: opts.generator };
    // nn.Linear's own init is PEFT's lora_A init (kaiming_uniform, a = √5).
    this.lora_A = layer.registerModule('lora_A', new Linear(inFeatures, opts.r, { bias: false, dtype, ...gen }));
    this.lora_B = layer.registerModule('lora_B', new Linear(opts.r, outFeatures, { bias: false, dtype, ...gen }));
    this.dropout = layer.registerModule('lora_dropout', new Dropout(opts.dropout, gen));
    if (opts.init === 'gaussian') normal_(this.lora_A.weight, 0, 1 / opts.r, gen);
    if (opts.init !== false) zeros_(this.lora_B.weight);
    // PEFT's order (layer.py update_layer): the init, PiSSA's included, before DoRA's magnitude.
    if (opts.init === 'pissa' || opts.init === 'olora') this.mutatedInit = this.#mutatingInit(opts.init, layer, dtype);
    if (opts.dora) {
      this.#baseNorm2 = baseRowNormsSquared(layer, dtype);
      this.magnitude = layer.registerModule('lora_magnitude_vector', new DoraMagnitude(this.weightNorm()));
    }
    for (const m of this.#children()) m.train(layer.training);
    layer.adapter = this.#hook();
  }

  /** PiSSA / OLoRA (pissa.ts): A and B from W's SVD / QR, and the base's weight becomes the residual. */
  #mutatingInit(init: MutatingInit, layer: LoraBaseLayer, dtype: 'f32' | 'f64'): PissaInit {
    if (!(layer instanceof Linear))
      throw mutatingInitRefused(
        init,
        this.path,
        'the layer is quantized; initialise on the float base (PEFT needs the float weight too)',
      );
    if (init === 'olora' && layer.fanInFanOut)
      throw mutatingInitRefused(
        init,
        this.path,
        'PEFT factors a Conv1D weight as stored ([in, out]), which does not fit its adapter; use it on Linear layers',
      );
    const { inFeatures, outFeatures } = layer;
    return noGrad(() => {
      const w = layer.weight;
      const outIn = (layer.fanInFanOut ? transpose(w, 0, 1) : w).contiguousStorage() as Float32Array | Float64Array;
      const factors = init === 'pissa' ? pissaInit : oloraInit;
      const { A0, B0, residual } = factors({
        weightOutIn: outIn,
        out: outFeatures,
        inF: inFeatures,
        r: this.r,
        scaling: this.scaling,
      });
      const A = fromArray(A0, [this.r, inFeatures], { dtype });
      const B = fromArray(B0, [outFeatures, this.r], { dtype });
      (this.lora_A.weight.storage as Float32Array | Float64Array).set(A.contiguousStorage() as Float32Array);
      (this.lora_B.weight.storage as Float32Array | Float64Array).set(B.contiguousStorage() as Float32Array);
      const res = fromArray(residual, [outFeatures, inFeatures], { dtype });
      const stored = (layer.fanInFanOut ? transpose(res, 0, 1) : res).contiguousStorage();
      (w.storage as Float32Array | Float64Array).set(stored as Float32Array | Float64Array);
      return { A0: A, B0: B };
    });
  }

  /** The modules this delta registers on the layer, by name. */
  #children(): Module[] {
    return [this.lora_A, this.lora_B, this.dropout, ...(this.magnitude ? [this.magnitude] : [])];
  }

  /** DoRA: ‖W + scaling·B·A‖ per output, detached. */
  weightNorm(): Tensor {
    return doraWeightNorm(this.layer, this.#baseNorm2!, this.lora_A.weight, this.lora_B.weight, this.scaling);
  }

  /** The layer's adapter hook: the delta alone (forward), and base + delta as one fused op (forwardWithBase). */
  #hook(): AdapterHook {
    return Object.assign((x: Tensor) => this.forward(x), { withBase: (x: Tensor) => this.forwardWithBase(x) });
  }

  /** True while the layer carries this delta (its children and its forward hook); see detach(). */
  get attached(): boolean {
    return this.layer.namedChildren().some(([, m]) => m === this.lora_A);
  }

  /**
   * Takes the delta off the layer (children and forward hook), leaving the base as it was, so
   * another adapter can attach to the same layer; attach() puts it back. A merged delta cannot
   * be detached (it is part of the weight).
   */
  detach(): void {
    if (this.#merged)
      throw new FormatError(
        'lora_merged',
        `${this.path}: the adapter is merged into the weight; unmerge it before detaching`,
        {
          module: this.path,
        },
      );
    for (const name of ['lora_A', 'lora_B', 'lora_dropout', 'lora_magnitude_vector']) this.layer.removeModule(name);
    this.layer.adapter = null;
  }

  attach(): void {
    if (this.attached) return;
    if (this.layer.namedChildren().some(([n]) => n === 'lora_A'))
      throw new FormatError('lora_already_applied', `${this.path} carries another adapter; detach it first`, {
        module: this.path,
      });
    this.layer.registerModule('lora_A', this.lora_A);
    this.layer.registerModule('lora_B', this.lora_B);
    this.layer.registerModule('lora_dropout', this.dropout);
    if (this.magnitude) this.layer.registerModule('lora_magnitude_vector', this.magnitude);
    this.layer.adapter = this.#hook();
  }

  /**
   * scaling · B(A(dropout(x))), computed as B(scaling · A(dropout(x))): the scale lands on the
   * rank-r activation [..., r] instead of the layer's output [..., out], which saves a full-size
   * multiply forward and backward (the same product up to f32 rounding).
   */
  forward(x: Tensor): Tensor {
    if (this.magnitude) return sub(this.forwardWithBase(x), this.layer.base(x));
    const h = this.lora_A.forward(this.dropout.forward(x));
    return this.lora_B.forward(this.scaling === 1 ? h : mul(h, this.scaling));
  }

  /**
   * base(x) + forward(x) as one op (src/ops/lora-linear.ts): the layer's forward while the delta is
   * attached. The dropout's mask, when it drops anything, is its own op's (reused by its backward).
   */
  forwardWithBase(x: Tensor): Tensor {
    const layer = this.layer;
    const dropped = this.dropout.forward(x);
    const base =
      layer instanceof Linear
        ? { weight: layer.weightInOut(), bias: layer.bias }
        : { quantized: layer.weight, bias: layer.bias };
    if (this.magnitude) return this.#doraForward(x, dropped, { ...base, bias: null });
    return loraLinear(x, base, dropped === x ? null : dropped, this.lora_A.weight, this.lora_B.weight, this.scaling);
  }

  /**
   * DoRA's output (dora.ts): the fused x·Wᵀ + scaling·B·A·x of the dropped input scaled by m / n
   * per output (the gradient reaches m, A and B; n is detached), plus what PEFT adds back: the
   * bias, or with dropout the base's output on the undropped input less its output on the dropped one.
   */
  #doraForward(x: Tensor, dropped: Tensor, noBias: Parameters<typeof loraLinear>[1]): Tensor {
    const scale = div(this.magnitude!.weight, this.weightNorm());
    const z = mul(loraLinear(dropped, noBias, null, this.lora_A.weight, this.lora_B.weight, this.scaling), scale);
    if (dropped !== x) return add(sub(this.layer.base(x), withoutBias(this.layer, dropped)), z);
    const bias = this.layer.bias;
    return bias ? add(z, bias) : z;
  }

  get merged(): boolean {
    return this.#merged;
  }

  /** True when the layer's weight is stored [in, out] (a float Conv1D; quantized blocks hold [out, in]). */
  get storedInOut(): boolean {
    return this.layer instanceof Linear && this.layer.fanInFanOut;
  }

  /** The weight delta in the layer's storage layout: scaling · B·A ([out, in]), transposed for Conv1D. */
  deltaWeight(): Tensor {
    return noGrad(() => {
      const ba = matmul(this.lora_B.weight, this.lora_A.weight);
      return mul(this.storedInOut ? transpose(ba, 0, 1) : ba, this.scaling);
    });
  }

  /** Adds the delta into the base weight (and stops adding it on the fly); a quantized layer must be dequantized first. */
  merge(): void {
    if (this.#merged) return;
    if (this.layer instanceof QuantizedLinear)
      throw new FormatError(
        'lora_merge_quantized',
        `${this.path} is quantized (${this.layer.weight.type}); a delta cannot be added into its blocks — dequantize the layer before attaching the adapter (dequantizeLayers; 'knobs merge' does this)`,
        { module: this.path, type: this.layer.weight.type },
      );
    if (this.magnitude) {
      // (m / n) ⊙ (W + ΔW), n from the unmerged weight and kept for unmerge (dora.ts).
      this.#mergedNorm = this.weightNorm();
      this.#write((w, delta) => mul(add(w, delta), this.#doraFactor()));
    } else this.#write(add);
    this.layer.adapter = null;
    this.#merged = true;
  }

  /** DoRA: m / n shaped to scale the stored weight's outputs ([out, 1], or [out] for [in, out] storage). */
  #doraFactor(): Tensor {
    const f = div(this.magnitude!.weight.detach(), this.#mergedNorm!);
    return this.storedInOut ? f : reshape(f, [f.size, 1]);
  }

  /** Subtracts the delta again: the base weight comes back to within f32 rounding. */
  unmerge(): void {
    if (!this.#merged) return;
    if (this.magnitude) this.#write((w, delta) => sub(div(w, this.#doraFactor()), delta));
    else this.#write(sub);
    this.#mergedNorm = null;
    this.layer.adapter = this.#hook();
    this.#merged = false;
  }

  #write(op: (a: Tensor, b: Tensor) => Tensor): void {
    noGrad(() => {
      const w = (this.layer as Linear).weight;
      const next = op(w, this.deltaWeight()).contiguousStorage();
      (w.storage as Float32Array | Float64Array).set(next as Float32Array | Float64Array);
    });
  }
}

/**
 * The LoRA layers attached to one model, by Hugging Face module path, and the base parameters it
 * trains copies of (modules_to_save, bias; saved-tensors.ts).
 */
export class LoraAdapter {
  readonly config: LoraConfig;
  readonly layers: Map<string, LoraLayer>;
  readonly saved: readonly SavedTensor[];

  constructor(config: LoraConfig, layers: Map<string, LoraLayer>, saved: readonly SavedTensor[] = []) {
    this.config = config;
    this.layers = layers;
    this.saved = saved;
  }

  /** The trainable tensors under PEFT's saved names (`<hf path>.lora_A.weight`, without the `base_model.model.` prefix). */
  namedParameters(): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, l] of this.layers) {
      out.push([`${path}.lora_A.weight`, l.lora_A.weight], [`${path}.lora_B.weight`, l.lora_B.weight]);
      // PEFT saves DoRA's magnitude without the `.weight` of its module (dora.ts).
      if (l.magnitude) out.push([`${path}.lora_magnitude_vector`, l.magnitude.weight]);
    }
    for (const s of this.saved) out.push([s.target.key, s.value]);
    return out;
  }

  /** Elements in the adapter's tensors. */
  numParameters(): number {
    return this.namedParameters().reduce((n, [, t]) => n + t.size, 0);
  }

  merge(): void {
    for (const l of this.layers.values()) l.merge();
  }

  unmerge(): void {
    for (const l of this.layers.values()) l.unmerge();
  }

  /** Takes every delta and trained copy off the model (see LoraLayer.detach); the model is the base again. */
  detach(): void {
    for (const l of this.layers.values()) l.detach();
    for (const s of this.saved) s.detach();
  }

  attach(): void {
    for (const s of this.saved) s.assertAttachable(); // before anything changes
    for (const l of this.layers.values()) l.attach();
    for (const s of this.saved) s.attach();
  }
}

export interface ApplyLoraOptions {
  /** Where lora_A's initial values (and dropout masks) come from; the default generator when absent. */
  generator?: Generator;
}

/** One module a config targets, with its rank and alpha. */
export interface LoraTarget {
  path: string;
  layer: LoraBaseLayer;
  r: number;
  alpha: number;
}

/** What a config does to a model, worked out (and checked) before anything changes. */
export interface LoraPlan {
  config: LoraConfig;
  targets: LoraTarget[];
  /** The base parameters trained beside the deltas (modules_to_save, bias). */
  saved: SavedTarget[];
}

/**
 * The modules `input` targets on `model`, with their ranks and alphas, and the tensors it trains
 * copies of (saved-tensors.ts). Errors: a target that matches no module, or one that is not a
 * Linear/Conv1D, or a rank larger than a layer. `forLoad`: reading a file PEFT wrote, where a
 * modules_to_save entry that matches nothing is ignored, as PEFT ignores it.
 */
export function planLora(model: Module, input: LoraConfig, opts: { forLoad?: boolean } = {}): LoraPlan {
  const config = resolveTargets(model, input);
  const targets: LoraTarget[] = [];
  const modules = hfModules(model);
  for (const [path, m] of modules) {
    if (!isTargetModule(config, path)) continue;
    if (!isLoraBaseLayer(m)) {
      throw new FormatError(
        'lora_unsupported_module',
        `target_modules ${JSON.stringify(config.target_modules)} selects ${path} (${m.constructor.name}); knobs attaches LoRA to Linear and Conv1D layers only — name those, e.g. q_proj or c_attn`,
        { module: path, type: m.constructor.name },
      );
    }
    const r = patternValue(config.rank_pattern, 'rank_pattern', path, config.r);
    const alpha = patternValue(config.alpha_pattern, 'alpha_pattern', path, config.lora_alpha);
    if (r > Math.min(m.inFeatures, m.outFeatures)) {
      throw new FormatError(
        'lora_rank_too_large',
        `LoRA rank ${r} on ${path} is larger than the layer (${m.inFeatures} → ${m.outFeatures}); a rank above min(in, out) = ${Math.min(m.inFeatures, m.outFeatures)} adds parameters without adding expressiveness — lower r or its rank_pattern entry`,
        { module: path, r, shape: [m.outFeatures, m.inFeatures] },
      );
    }
    if (m.namedChildren().some(([n]) => n === 'lora_A')) {
      throw new FormatError(
        'lora_already_applied',
        `${path} already carries a LoRA adapter; merge it or load the base again`,
        { module: path },
      );
    }
    targets.push({ path, layer: m, r, alpha });
  }
  if (targets.length === 0) {
    const names = modules
      .filter(([, m]) => isLoraBaseLayer(m))
      .map(([p]) => p)
      .slice(0, 6)
      .join(', ');
    throw new FormatError(
      'lora_no_target',
      `target_modules ${JSON.stringify(config.target_modules)} matches no module of the model${config.modules_to_save === null ? '' : ` outside modules_to_save ${JSON.stringify(config.modules_to_save)} (LoRA skips those)`}; its linear layers are named like ${names}`,
      { field: 'target_modules', targets: config.target_modules },
    );
  }
  const saved = planSavedTensors(
    modules,
    model,
    config,
    new Set(targets.map((t) => t.path)),
    (hfName) => knobsPath(model, hfName),
    opts.forLoad === true,
  );
  return { config: { ...config, fan_in_fan_out: targets.some((t) => fanInFanOutOf(model, t.layer)) }, targets, saved };
}

/**
 * Attaches LoRA to every module the config targets (see planLora), freezes every base parameter
 * and leaves only lora_A / lora_B trainable (PEFT's mark_only_lora_as_trainable), with trained
 * copies of the modules to save and biases the config names (saved-tensors.ts).
 */
export function applyLora(model: Module, input: LoraConfig | LoraPlan, opts: ApplyLoraOptions = {}): LoraAdapter {
  const plan = 'targets' in input ? input : planLora(model, input);
  model.requiresGrad_(false);
  const { config } = plan;
  const gen = opts.generator ? { generator: opts.generator } : {};
  const layers = new Map<string, LoraLayer>();
  for (const { path, layer, r, alpha } of plan.targets) {
    layers.set(
      path,
      new LoraLayer(layer, path, {
        r,
        alpha,
        rslora: config.use_rslora,
        dropout: config.lora_dropout,
        init: config.init_lora_weights,
        dora: config.use_dora,
        ...gen,
      }),
    );
  }
  return new LoraAdapter(
    config,
    layers,
    plan.saved.map((t) => new SavedTensor(t)),
  );
}
