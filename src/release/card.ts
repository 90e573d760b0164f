/**
 * The model card of a release: README.md with YAML front matter, as Hugging Face model cards have
 * (https://huggingface.co/docs/hub/model-cards): the metadata a program reads — license, library,
 * architecture, parameter count, the training recipe, the data files with their SHA-256 ("unknown"
 * where the run did not record them), the final metrics, intended use — then prose for people.
 *
 * A card given with --card (or the model directory's own README.md) is the starting point: its
 * front matter must be valid YAML (a mapping) and its fields win over the ones computed here; its
 * text becomes the body.
 */
import * as fsp from 'node:fs/promises';
import { basename, join } from 'node:path';
import { YAMLParseError, parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { FormatError } from '../errors.js';
import { readGguf } from '../formats/gguf.js';
import { readSafetensorsHeader } from '../formats/safetensors.js';
import { openFileSource } from '../io/byte-source.js';
import { readRegularFile } from '../io/regular-file.js';

export const CARD_NAME = 'README.md';
/** Cards, recipes and metric logs are text meant for people: a larger one is not what it claims. */
const MAX_TEXT_BYTES = 16 << 20;
const MAX_METRICS_BYTES = 256 << 20;

export interface CardInput {
  /** The model: a directory (run or Hugging Face) or a GGUF file. */
  model: string;
  /** The bundle's name (the subject name of the signature). */
  name: string;
  /** The card to start from: --card, else the model's README.md, else none. */
  card?: string;
  license?: string;
}

/** A Markdown text split into its YAML front matter (parsed, must be a mapping) and its body. */
export function splitFrontMatter(text: string, path: string): { meta: Record<string, unknown>; body: string } {
  const m = /^---\r?\n([\s\S]*?)\r?\n---[ \t]*(?:\r?\n|$)/.exec(text);
  if (!m) return { meta: {}, body: text };
  let meta: unknown;
  try {
    meta = parseYaml(m[1]!, { uniqueKeys: true, maxAliasCount: 100 });
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line + 1}` : '';
    throw new FormatError(
      'card_invalid_yaml',
      `${path}: the front matter is not valid YAML${where} (${(err as Error).message.split('\n')[0]}); fix it or leave it out`,
      { path },
    );
  }
  if (meta === null || meta === undefined) meta = {};
  if (typeof meta !== 'object' || Array.isArray(meta)) {
    throw new FormatError('card_invalid_yaml', `${path}: the front matter must be a YAML mapping (key: value lines)`, {
      path,
    });
  }
  return { meta: meta as Record<string, unknown>, body: text.slice(m[0].length) };
}

async function readText(path: string, limit = MAX_TEXT_BYTES): Promise<string | null> {
  try {
    return new TextDecoder().decode(await readRegularFile(path, limit));
  } catch (err) {
    if ((err as { details?: { errno?: string } }).details?.errno === 'ENOENT') return null;
    throw err;
  }
}

function jsonOrNull(text: string | null): Record<string, unknown> | null {
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

interface ModelFacts {
  architecture: string;
  parameters: number | 'unknown';
  recipe: Record<string, unknown> | 'unknown';
  data: unknown;
  metrics: Record<string, unknown> | 'unknown';
}

async function ggufFacts(path: string): Promise<ModelFacts> {
  const source = await openFileSource(path);
  try {
    const file = await readGguf(source);
    const arch = file.metadata.get('general.architecture');
    return {
      architecture: typeof arch === 'string' ? arch : 'unknown',
      parameters: file.tensors.reduce((n, t) => n + t.elements, 0),
      recipe: 'unknown',
      data: 'unknown',
      metrics: 'unknown',
    };
  } finally {
    await source.close();
  }
}

/** The last training row and the last evaluation row of metrics.jsonl (the final metrics). */
function finalMetrics(text: string | null): Record<string, unknown> | 'unknown' {
  if (text === null) return 'unknown';
  let train: Record<string, unknown> | null = null;
  let evaluation: Record<string, unknown> | null = null;
  for (const line of text.split('\n')) {
    const row = jsonOrNull(line);
    if (!row) continue;
    // metrics.jsonl rows: training steps carry `loss`, evaluations `eval_loss` (and their extras).
    if (Object.keys(row).some((k) => /^(eval|val)_/.test(k))) evaluation = row;
    else if ('loss' in row) train = row;
  }
  if (!train && !evaluation) return 'unknown';
  return { ...(train ? { train } : {}), ...(evaluation ? { evaluation } : {}) };
}

async function directoryFacts(dir: string): Promise<ModelFacts> {
  const config = jsonOrNull(await readText(join(dir, 'config.json')));
  const archs = config?.architectures;
  const architecture =
    Array.isArray(archs) && typeof archs[0] === 'string'
      ? archs[0]
      : typeof config?.model_type === 'string'
        ? config.model_type
        : 'unknown';
  let parameters: number | 'unknown' = 'unknown';
  const weights = (await fsp.readdir(dir)).filter((n) => n.endsWith('.safetensors')).sort();
  if (weights.length > 0) {
    parameters = 0;
    for (const w of weights) {
      const header = await readSafetensorsHeader(join(dir, w));
      for (const entry of header.entries.values()) parameters += entry.numel;
    }
  }
  const recipe = jsonOrNull(await readText(join(dir, 'recipe.json'))) ?? 'unknown';
  const record = jsonOrNull(await readText(join(dir, 'training-data.json')));
  const data = Array.isArray(record?.files)
    ? record.files.map((f: Record<string, unknown>) => ({
        field: f.field ?? 'unknown',
        file: typeof f.path === 'string' ? basename(f.path) : 'unknown',
        bytes: f.size ?? 'unknown',
        sha256: f.sha256 ?? 'unknown',
      }))
    : 'unknown';
  const metrics = finalMetrics(await readText(join(dir, 'metrics.jsonl'), MAX_METRICS_BYTES));
  return { architecture, parameters, recipe, data, metrics };
}

const DEFAULT_USE =
  'Research and experimentation. Not evaluated for safety, bias or fitness for any production use; check it for your own use before relying on it.';

/** README.md for the bundle. */
export async function modelCard(input: CardInput, isDirectory: boolean): Promise<string> {
  const facts = isDirectory ? await directoryFacts(input.model) : await ggufFacts(input.model);
  const given = input.card ? await readText(input.card) : null;
  const { meta, body } = given === null ? { meta: {}, body: '' } : splitFrontMatter(given, input.card!);
  const front: Record<string, unknown> = {
    license: input.license ?? 'unknown',
    library_name: 'knobs',
    tags: ['knobs', 'signed'],
    model_name: input.name,
    architecture: facts.architecture,
    parameters: facts.parameters,
    training: { recipe: facts.recipe, data: facts.data, final_metrics: facts.metrics },
    intended_use: DEFAULT_USE,
    ...meta,
    ...(input.license ? { license: input.license } : {}),
  };
  const text =
    body.trim() !== ''
      ? body
      : [
          `# ${input.name}`,
          '',
          `A ${String(front.architecture)} model with ${String(front.parameters)} parameters, released with knobs.`,
          '',
          '## Intended use',
          '',
          String(front.intended_use),
          '',
          '## Verifying this release',
          '',
          'Every file of this directory is signed in `model.sig` (OpenSSF model-signing v1.0 format). Check it with',
          "the publisher's public key before use:",
          '',
          '```',
          'knobs verify . --public-key publisher.pub',
          'python -m model_signing verify key --signature model.sig --public_key publisher.pub .   # ECDSA keys',
          '```',
          '',
        ].join('\n');
  return `---\n${stringifyYaml(front, { lineWidth: 0 })}---\n\n${text.replace(/^\n+/, '')}`;
}
