/** `knobs eval DIR`: scores a run's model (accuracy and loss, or loss and bits per byte), or a Hugging Face model on a text. */
import { readFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { asIOError } from '../io/atomic.js';
import { isGgufPath, openLanguageModel } from '../load/language-model.js';
import { type TextEval, evaluateText } from '../models/hf/text.js';
import { evaluateRun } from '../train/eval-run.js';
import { RECIPE_NAME, isRunDir } from '../train/run-dir.js';
import { type Command, emit, parse } from './command.js';
import { positiveInt } from './flags.js';

/** The context a Hugging Face model is scored with unless --context says otherwise (attention is T²). */
const DEFAULT_HF_CONTEXT = 1024;

export const evalCommand: Command = {
  name: 'eval',
  summary: "score a run's model on its test or validation data, or a Hugging Face model on a text",
  help: `Usage: knobs eval DIR [--data PATH] [--context N] [--json]

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
  --json          print one JSON object, e.g. {"loss":0.31,"accuracy":0.891,"examples":10000}

Examples:
  knobs eval runs/tiny --json
  knobs eval models/gpt2 --data kjv.txt --context 512`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      { data: { type: 'string' }, context: { type: 'string' }, json: { type: 'boolean' } },
      'eval',
    );
    if (positionals.length !== 1)
      throw new UsageError(`eval takes one DIR, got ${positionals.length}; see 'knobs eval --help'`);
    const dir = positionals[0]!;
    const data = values.data as string | undefined;
    if (isGgufPath(dir) || !(await isRunDir(dir))) {
      const result = await evaluateHfDir(dir, data, values.context as string | undefined);
      emit(
        io,
        values.json === true,
        result,
        () =>
          `loss ${result.loss.toFixed(4)}  bits/byte ${result.bits_per_byte.toFixed(4)}  (${result.tokens} tokens, ${result.bytes} bytes)\n`,
      );
      return 0;
    }
    if (values.context !== undefined)
      throw new UsageError(
        "--context is for Hugging Face model directories; a run is evaluated with its recipe's context",
      );
    const result = await evaluateRun(dir, data !== undefined ? { dataPath: data } : {});
    emit(io, values.json === true, result, () =>
      'accuracy' in result
        ? `accuracy ${(100 * result.accuracy).toFixed(2)}%  loss ${result.loss.toFixed(4)}  (${result.examples} examples)\n`
        : `loss ${result.loss.toFixed(4)}  bits/byte ${result.bits_per_byte.toFixed(4)}  (${result.tokens} tokens)\n`,
    );
    return 0;
  },
};

async function evaluateHfDir(
  dir: string,
  data: string | undefined,
  contextFlag: string | undefined,
): Promise<TextEval> {
  if (data === undefined)
    throw new UsageError(
      `${dir} is not a knobs run (no ${RECIPE_NAME}): evaluating a Hugging Face model needs --data FILE; see 'knobs eval --help'`,
    );
  const { model, tokenizer } = await openLanguageModel(dir);
  const limit = model.contextLength;
  const context =
    contextFlag === undefined ? Math.min(DEFAULT_HF_CONTEXT, limit) : positiveInt(contextFlag, '--context', 1);
  if (context > limit)
    throw new UsageError(`--context ${context} is longer than the model's context (${limit} positions)`);
  const text = await readFile(data, 'utf8').catch((err: unknown) => {
    throw asIOError(err, data, 'read');
  });
  // Not a run directory, so a Hugging Face one: it always has its tokenizer.
  if (!tokenizer) throw new UsageError(`${dir} has no tokenizer to turn the text into tokens`);
  return evaluateText(model, tokenizer, text, { context });
}
