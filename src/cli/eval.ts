/** `knobs eval DIR`: scores a run's model (accuracy and loss, or loss and bits per byte), or a Hugging Face model on a text. */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { asIOError } from '../io/atomic.js';
import { type OpenLanguageModelOptions, isGgufPath, openLanguageModel } from '../load/language-model.js';
import { type TextEval, evaluateText } from '../models/hf/text.js';
import type { LanguageModel } from '../train/build.js';
import { evaluateRun } from '../train/eval-run.js';
import { type LanguageModelEval, evaluateLanguageModel } from '../train/evaluate.js';
import { openTextData } from '../train/sources.js';
import { RECIPE_NAME, isRunDir } from '../train/run-dir.js';
import { type Command, emit, parse } from './command.js';
import { ADAPTER_FLAGS, ADAPTER_HELP, adapterOptions, positiveInt, quantizeFlag } from './flags.js';
import { readMasterKey } from '../seal/keys.js';
import { isSealedDir } from '../seal/open.js';

/** The context a Hugging Face model is scored with unless --context says otherwise (attention is T²). */
const DEFAULT_HF_CONTEXT = 1024;

export const evalCommand: Command = {
  name: 'eval',
  summary: "score a run's model on its test or validation data, or a Hugging Face model on a text",
  help: `Usage: knobs eval DIR [--data PATH] [--context N] [--public-key KEY.pub]
                      [--master-key-file F] [--adapter DIR]... [--allow-base-mismatch]
                      [--quantize q8_0|q4_0] [--json]

DIR is a run directory made by 'knobs train' (config.json, model.safetensors, recipe.json); the
model is evaluated without gradients:
  classifiers       loss and accuracy on the whole IDX test split
  language models   loss and bits per byte on the whole validation split of the text

or a Hugging Face model directory (GPT-2, Llama, Mistral, Qwen2 with tokenizer.json; see
docs/hf-models.md) or a GGUF file (docs/gguf.md), scored on the text file --data: the text is tokenized whole and cut into
consecutive windows of N tokens; it reports the loss per token (nats), bits per byte (total
loss in bits / the file's UTF-8 bytes), tokens and bytes.

  --data PATH     other data: for classifiers a directory with the recipe's IDX file names,
                  for language models a text file, evaluated whole (required for Hugging Face)
  --context N     Hugging Face models: tokens per window (default min(${DEFAULT_HF_CONTEXT}, the model's context))
  --public-key K  DIR is a language model in a bundle signed by 'knobs release': every file is
                  checked against model.sig as it is read, and the model is scored on the whole
                  text --data (required); a bundle that does not verify is refused
  --master-key-file F  the master key of a sealed DIR (else KNOBS_MASTER_KEY; docs/sealing.md).
                  A sealed model is decrypted into memory and scored on the text --data
  --quantize TYPE q8_0 or q4_0: quantize the model's Linear layers at load and score it on the
                  int8 kernels, as 'knobs generate --quantize' runs it; adapters attach after, so
                  an adapter tuned with 'knobs tune --quantize TYPE' finds its base
  --json          print one JSON object, e.g. {"loss":0.31,"accuracy":0.891,"examples":10000}
${ADAPTER_HELP}

Examples:
  knobs eval runs/tiny --json
  knobs eval runs/tiny --adapter runs/tiny-lora --data other.txt
  knobs eval runs/tiny --quantize q8_0 --adapter runs/tiny-qlora
  knobs eval models/gpt2 --data kjv.txt --context 512`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        data: { type: 'string' },
        context: { type: 'string' },
        'public-key': { type: 'string' },
        'master-key-file': { type: 'string' },
        json: { type: 'boolean' },
        quantize: { type: 'string' },
        ...ADAPTER_FLAGS,
      },
      'eval',
    );
    if (positionals.length !== 1)
      throw new UsageError(`eval takes one DIR, got ${positionals.length}; see 'knobs eval --help'`);
    const dir = positionals[0]!;
    const quantize = quantizeFlag(values.quantize);
    const data = values.data as string | undefined;
    const publicKey = values['public-key'] as string | undefined;
    const masterKey = await readMasterKey(values['master-key-file'] as string | undefined, process.env);
    // isRunDir looks inside a directory: a GGUF file is checked for first.
    const sealed = await isSealedDir(dir);
    if (publicKey !== undefined || sealed || isGgufPath(dir) || !(await isRunDir(dir))) {
      const result = await evaluateTextFile(dir, data, values.context as string | undefined, sealed, {
        publicKey,
        masterKey,
        ...adapterOptions(values),
        ...quantize,
      });
      emit(
        io,
        values.json === true,
        result,
        () =>
          `loss ${result.loss.toFixed(4)}  bits/byte ${result.bits_per_byte.toFixed(4)}  (${result.tokens} tokens${'bytes' in result ? `, ${result.bytes} bytes` : ''})\n`,
      );
      return 0;
    }
    if (values.context !== undefined)
      throw new UsageError(
        "--context is for Hugging Face model directories; a run is evaluated with its recipe's context",
      );
    const result = await evaluateRun(dir, {
      ...(data !== undefined ? { dataPath: data } : {}),
      ...adapterOptions(values),
      ...quantize,
    });
    emit(io, values.json === true, result, () =>
      'accuracy' in result
        ? `accuracy ${(100 * result.accuracy).toFixed(2)}%  loss ${result.loss.toFixed(4)}  (${result.examples} examples)\n`
        : `loss ${result.loss.toFixed(4)}  bits/byte ${result.bits_per_byte.toFixed(4)}  (${result.tokens} tokens)\n`,
    );
    return 0;
  },
};

/** A language model (a Hugging Face directory or GGUF file, or any signed bundle or sealed directory) scored on the text file `data`. */
async function evaluateTextFile(
  dir: string,
  data: string | undefined,
  contextFlag: string | undefined,
  sealed: boolean,
  options: OpenLanguageModelOptions,
): Promise<TextEval | LanguageModelEval> {
  if (data === undefined)
    throw new UsageError(
      options.publicKey !== undefined
        ? `evaluating a signed bundle needs --data FILE (the text to score); see 'knobs eval --help'`
        : sealed
          ? `${dir} is sealed: evaluating it needs --data FILE (a text to score); see 'knobs eval --help'`
          : `${dir} is not a knobs run (no ${RECIPE_NAME}): evaluating a Hugging Face model needs --data FILE; see 'knobs eval --help'`,
    );
  const { model, tokenizer } = await openLanguageModel(dir, options);
  const limit = model.contextLength;
  const context =
    contextFlag === undefined ? Math.min(DEFAULT_HF_CONTEXT, limit) : positiveInt(contextFlag, '--context', 1);
  if (context > limit)
    throw new UsageError(`--context ${context} is longer than the model's context (${limit} positions)`);
  // A Hugging Face directory always has its tokenizer; a signed or sealed byte-level run has none: its text
  // is scored as `knobs eval RUN --data FILE` scores it, byte by byte, the whole file.
  if (!tokenizer) return evaluateBytes(model as LanguageModel, data, context);
  const text = await readFile(data, 'utf8').catch((err: unknown) => {
    throw asIOError(err, data, 'read');
  });
  return evaluateText(model, tokenizer, text, { context });
}

/** Windows per batch for a byte-level model scored without its recipe (only the summation order depends on it). */
const BYTE_EVAL_BATCH = 8;

async function evaluateBytes(model: LanguageModel, data: string, context: number): Promise<LanguageModelEval> {
  const corpus = await openTextData({ type: 'text', path: resolve(data), validation_fraction: 0.05 }, context, 0);
  try {
    return await evaluateLanguageModel(model, corpus, {
      split: 'train',
      batchSize: BYTE_EVAL_BATCH,
      blockSize: context,
    });
  } finally {
    await corpus.close();
  }
}
