/**
 * tokenizer_config.json (the transformers side of a tokenizer): special tokens as strings or
 * AddedToken objects, add_bos_token / add_eos_token, chat_template (a string, or a list of
 * {name, template} of which "default" is the one), model_max_length. Reading keeps every other
 * field in `raw` so writing back loses nothing. These fields are what transformers and chat
 * front-ends read; the Rust tokenizer (and knobs' encode) follow tokenizer.json's post_processor.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { asIOError } from '../io/atomic.js';
import { JsonReader, invalidTokenizer } from './errors.js';
import { Tokenizer } from './tokenizer.js';

export const TOKENIZER_NAME = 'tokenizer.json';
export const TOKENIZER_CONFIG_NAME = 'tokenizer_config.json';

export interface TokenizerConfig {
  bosToken: string | null;
  eosToken: string | null;
  unkToken: string | null;
  padToken: string | null;
  addBosToken: boolean | null;
  addEosToken: boolean | null;
  /** The default chat template (Jinja source), or null. */
  chatTemplate: string | null;
  /** Every named template, when the file holds a list. */
  chatTemplates: Record<string, string>;
  modelMaxLength: number | null;
  /** The file as read, for writing back unchanged fields. */
  raw: Record<string, unknown>;
}

const SPECIAL_FIELDS = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;

export function parseTokenizerConfig(json: unknown, source = TOKENIZER_CONFIG_NAME): TokenizerConfig {
  const r = new JsonReader(source);
  const o = r.object(json, '(top level)');
  const [bosToken, eosToken, unkToken, padToken] = SPECIAL_FIELDS.map((f) => specialToken(o[f], r, f));
  const optionalBool = (f: string) => (o[f] === undefined || o[f] === null ? null : r.bool(o[f], f));
  const chatTemplates: Record<string, string> = Object.create(null) as Record<string, string>;
  let chatTemplate: string | null = null;
  if (typeof o.chat_template === 'string') chatTemplate = o.chat_template;
  else if (o.chat_template !== undefined && o.chat_template !== null) {
    r.array(o.chat_template, 'chat_template').forEach((t, i) => {
      const entry = r.object(t, `chat_template[${i}]`);
      chatTemplates[r.string(entry.name, `chat_template[${i}].name`)] = r.string(
        entry.template,
        `chat_template[${i}].template`,
      );
    });
    chatTemplate = chatTemplates.default ?? null;
  }
  let modelMaxLength: number | null = null;
  if (o.model_max_length !== undefined && o.model_max_length !== null) {
    if (typeof o.model_max_length !== 'number' || !(o.model_max_length > 0))
      throw invalidTokenizer(
        source,
        'model_max_length',
        `must be a positive number, got ${JSON.stringify(o.model_max_length)}`,
      );
    modelMaxLength = o.model_max_length;
  }
  return {
    bosToken: bosToken!,
    eosToken: eosToken!,
    unkToken: unkToken!,
    padToken: padToken!,
    addBosToken: optionalBool('add_bos_token'),
    addEosToken: optionalBool('add_eos_token'),
    chatTemplate,
    chatTemplates,
    modelMaxLength,
    raw: o,
  };
}

/** A special token given as a string, as {"content": …} (an AddedToken), or null. */
function specialToken(value: unknown, r: JsonReader, field: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  return r.string(r.object(value, field).content, `${field}.content`);
}

export interface TokenizerConfigOptions {
  bosToken?: string | null;
  eosToken?: string | null;
  unkToken?: string | null;
  padToken?: string | null;
  addBosToken?: boolean;
  addEosToken?: boolean;
  chatTemplate?: string | null;
  modelMaxLength?: number;
}

/** A tokenizer_config.json object as transformers writes one for a PreTrainedTokenizerFast. */
export function tokenizerConfigJson(opts: TokenizerConfigOptions): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: opts.bosToken ?? null,
    eos_token: opts.eosToken ?? null,
    unk_token: opts.unkToken ?? null,
    pad_token: opts.padToken ?? null,
    add_bos_token: opts.addBosToken ?? false,
    add_eos_token: opts.addEosToken ?? false,
    clean_up_tokenization_spaces: false,
    ...(opts.modelMaxLength === undefined ? {} : { model_max_length: opts.modelMaxLength }),
    ...(opts.chatTemplate ? { chat_template: opts.chatTemplate } : {}),
  };
}

export interface TokenizerDir {
  tokenizer: Tokenizer;
  /** tokenizer_config.json, or null when the directory has none. */
  config: TokenizerConfig | null;
}

/** tokenizer.json (required) and tokenizer_config.json (optional) of a model directory. */
export async function loadTokenizerDir(dir: string): Promise<TokenizerDir> {
  const tokenizer = await Tokenizer.fromFile(join(dir, TOKENIZER_NAME));
  const configPath = join(dir, TOKENIZER_CONFIG_NAME);
  let text: string;
  try {
    text = await readFile(configPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { tokenizer, config: null };
    throw asIOError(err, configPath, 'read');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalidTokenizer(configPath, '(file)', `is not JSON: ${(err as Error).message}`);
  }
  return { tokenizer, config: parseTokenizerConfig(json, configPath) };
}
