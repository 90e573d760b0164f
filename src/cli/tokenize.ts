/** `knobs tokenize TOKENIZER_OR_MODEL --text T`: a tokenizer.json's ids and tokens for a text. */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import { asIOError } from '../io/atomic.js';
import { TOKENIZER_NAME } from '../tokenizer/config.js';
import { Tokenizer } from '../tokenizer/tokenizer.js';
import { isGgufPath } from '../load/language-model.js';
import { loadGgufTokenizer } from '../models/gguf/tokenizer.js';
import { type Command, emit, parse } from './command.js';

export const tokenizeCommand: Command = {
  name: 'tokenize',
  summary: 'encode text with a tokenizer.json (or a model directory holding one, or a .gguf)',
  help: `Usage: knobs tokenize TOKENIZER_OR_MODEL (--text T | --file PATH) [--no-special] [--json]

Encodes the text as Hugging Face tokenizers does with the tokenizer.json given, the one in the
model directory given, or the one a GGUF file's metadata describes (as llama.cpp would tokenize),
and prints each token with its id.

  --text T        the text to encode
  --file PATH     encode a file's contents instead (UTF-8)
  --no-special    do not add the post-processor's special tokens (BOS/EOS)
  --json          one object: {"ids": [...], "tokens": [...]}

Example:
  knobs tokenize runs/tiny --text 'In the beginning' --json`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        text: { type: 'string' },
        file: { type: 'string' },
        'no-special': { type: 'boolean' },
        json: { type: 'boolean' },
      },
      'tokenize',
    );
    if (positionals.length !== 1)
      throw new UsageError(
        `tokenize takes one TOKENIZER_OR_MODEL, got ${positionals.length}; see 'knobs tokenize --help'`,
      );
    if ((values.text === undefined) === (values.file === undefined))
      throw new UsageError("tokenize needs exactly one of --text T or --file PATH; see 'knobs tokenize --help'");
    const tokenizer = await openTokenizer(positionals[0]!);
    const text = typeof values.text === 'string' ? values.text : await readText(values.file as string);
    const { ids, tokens } = tokenizer.encode(text, { addSpecialTokens: values['no-special'] !== true });
    emit(io, values.json === true, { ids, tokens }, () => {
      const width = Math.max(1, ...ids.map((id) => String(id).length));
      // What each token adds to the text, when that differs from its spelling (byte-level "Ġsaid"
      // adds " said"); the streaming decoder knows the context (a first "▁" is no space) and
      // holds a character's bytes back until they are all there.
      const stream = tokenizer.decodeStream();
      const lines = ids.map((id, i) => {
        const text = stream.step(id);
        const shown = text !== tokens[i] ? `  = ${JSON.stringify(text)}` : '';
        return `${String(id).padStart(width)}  ${JSON.stringify(tokens[i])}${shown}${tokenizer.isSpecial(id) ? '  (special)' : ''}`;
      });
      return `${lines.join('\n')}${lines.length ? '\n' : ''}${ids.length} tokens\n`;
    });
    return 0;
  },
};

/** The tokenizer of a tokenizer.json, a model directory, or a GGUF file's metadata. */
async function openTokenizer(path: string): Promise<Tokenizer> {
  if (!isGgufPath(path)) return Tokenizer.fromFile(await tokenizerPath(path));
  const tokenizer = await loadGgufTokenizer(path);
  if (!tokenizer) throw new UsageError(`${path} has no tokenizer in its metadata (tokenizer.ggml.model is none)`);
  return tokenizer;
}

/** A tokenizer.json file, or the tokenizer.json inside a directory. */
export async function tokenizerPath(path: string): Promise<string> {
  try {
    return (await stat(path)).isDirectory() ? join(path, TOKENIZER_NAME) : path;
  } catch (err) {
    throw asIOError(err, path, 'read');
  }
}

/** A UTF-8 text file, refusing sizes a JavaScript string cannot hold. */
export async function readText(path: string): Promise<string> {
  try {
    const { size } = await stat(path);
    if (size > MAX_TEXT_BYTES)
      throw new UsageError(`${path} is ${size} bytes; knobs reads text files up to ${MAX_TEXT_BYTES} bytes at once`);
    return await readFile(path, 'utf8');
  } catch (err) {
    throw asIOError(err, path, 'read');
  }
}

const MAX_TEXT_BYTES = 256 * 1024 * 1024;
