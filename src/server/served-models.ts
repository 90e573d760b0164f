/**
 * The model ids one server answers for: the base, and each LoRA adapter (`--adapter NAME=DIR`) as
 * a model id of its own whose `parent` is the base, as vLLM lists LoRA modules. All of them share
 * the base's weights through one AdapterSet: a request for an adapter runs with that adapter alone
 * attached, step by step, and never sees another's delta.
 */
import { UsageError } from '../errors.js';
import { AdapterSet } from '../finetune/adapter-set.js';
import type { OpenedLanguageModel } from '../load/language-model.js';
import type { ChatTemplate } from './chat-template.js';
import type { ServedModel } from './completions.js';
import { ModelGenerator, type TextGenerator } from './generation.js';

export interface AdapterSpec {
  /** The model id clients send. */
  name: string;
  /** A PEFT adapter directory (adapter_config.json, adapter_model.safetensors). */
  dir: string;
}

/** Model ids: what `--name` and adapter names may be (they appear in URLs, logs and key allow-lists). */
export const MODEL_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$/;

/** `NAME=DIR` of `knobs serve --adapter`. */
export function parseAdapterSpec(value: string): AdapterSpec {
  const at = value.indexOf('=');
  const name = at < 0 ? '' : value.slice(0, at);
  const dir = at < 0 ? '' : value.slice(at + 1);
  if (!MODEL_ID_PATTERN.test(name) || dir === '')
    throw new UsageError(
      `--adapter takes NAME=DIR (NAME: the model id clients send, letters, digits and . _ : / -; DIR: a PEFT adapter directory), got ${JSON.stringify(value.slice(0, 300))}`,
    );
  return { name, dir };
}

export interface ServedModelsOptions {
  /** The base's model id. */
  id: string;
  chat: ChatTemplate;
  adapters?: readonly AdapterSpec[];
  /** Load adapters that record another base's weight digest (their shapes must still fit). */
  allowBaseMismatch?: boolean;
  created?: number;
  /**
   * How the model ids decode, given the adapters' set (null when there are none): a maker of each
   * id's generator (name null: the base), or null to decode one sequence at a time (ModelGenerator).
   * `knobs serve` passes its continuous-batching engine here.
   */
  batched?: (adapters: AdapterSet | null) => ((name: string | null) => TextGenerator) | null;
}

/**
 * The base and its adapters as served models, the base first. An adapter made for another base is
 * refused (FormatError lora_base_mismatch) unless `allowBaseMismatch`; a name used twice is a UsageError.
 */
export async function servedModels(opened: OpenedLanguageModel, opts: ServedModelsOptions): Promise<ServedModel[]> {
  const created = opts.created ?? Math.floor(Date.now() / 1000);
  const specs = opts.adapters ?? [];
  const taken = new Set([opts.id]);
  for (const { name } of specs) {
    if (taken.has(name))
      throw new UsageError(
        `the model id ${JSON.stringify(name)} is given twice (the base is ${JSON.stringify(opts.id)}); every --adapter needs its own NAME`,
      );
    taken.add(name);
  }
  let set: AdapterSet | null = null;
  if (specs.length > 0) {
    set = new AdapterSet(opened.model);
    for (const { name, dir } of specs) await set.load(name, dir, { allowBaseMismatch: opts.allowBaseMismatch === true });
  }
  const adapters = set;
  const generatorOf =
    opts.batched?.(adapters) ??
    ((name: string | null) =>
      adapters === null ? new ModelGenerator(opened) : new ModelGenerator(opened, { adapters: { set: adapters, name } }));
  const served = (name: string | null): ServedModel => ({
    id: name ?? opts.id,
    created,
    generator: generatorOf(name),
    chat: opts.chat,
    ...(name === null ? {} : { parent: opts.id }),
  });
  return [served(null), ...specs.map((s) => served(s.name))];
}
