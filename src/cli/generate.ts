/** `knobs generate DIR --prompt TEXT`: continues a prompt with a run's language model, streaming. */
import { UsageError } from '../errors.js';
import { generateText } from '../models/generate-text.js';
import { isLanguageModelInstance } from '../train/build.js';
import { loadRun } from '../train/run-dir.js';
import { type Command, emit, parse } from './command.js';
import { numberIn, positiveInt } from './flags.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: "continue a prompt with a run's language model (KV cache, streamed)",
  help: `Usage: knobs generate DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
                      [--top-p P] [--seed S] [--stop STR]... [--ignore-eos] [--json]

Loads the language model (GPT-2, Llama or Qwen2) in DIR (config.json + model.safetensors) and continues TEXT, streaming the
prompt and the new text to stdout as it is produced (to stderr with --json).

  --max-tokens N     most new tokens (bytes), default 256
  --temperature T    0 is greedy (deterministic); default 1
  --top-k K          sample from the K most likely tokens (0: all; default 0)
  --top-p P          sample from the smallest set reaching probability P (default 1)
  --seed S           sampler seed (default 0)
  --stop STR         stop when the text contains STR (repeatable); STR is not printed
  --ignore-eos       keep going past config.json's eos_token_id. Byte-level models that knobs
                     trains have eos_token_id null: they stop at --stop or --max-tokens
  --json             one object: {"prompt_ids","ids","text","finish_reason":"stop"|"length"}

Example:
  knobs generate runs/tiny --prompt 'And God said' --max-tokens 200 --temperature 0.8`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      prompt: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
      'ignore-eos': { type: 'boolean' },
      json: { type: 'boolean' },
    }, 'generate');
    if (positionals.length !== 1) throw new UsageError(`generate takes one run DIR, got ${positionals.length}; see 'knobs generate --help'`);
    if (typeof values.prompt !== 'string') throw new UsageError("generate needs --prompt TEXT; see 'knobs generate --help'");
    const options = {
      maxTokens: values['max-tokens'] === undefined ? 256 : positiveInt(values['max-tokens'], '--max-tokens', 0),
      temperature: values.temperature === undefined ? 1 : numberIn(values.temperature, '--temperature', 0, 100),
      topK: values['top-k'] === undefined ? 0 : positiveInt(values['top-k'], '--top-k', 0),
      topP: values['top-p'] === undefined ? 1 : numberIn(values['top-p'], '--top-p', 0, 1, { minExclusive: true }),
      seed: values.seed === undefined ? 0 : positiveInt(values.seed, '--seed', 0),
      stop: (values.stop as string[] | undefined) ?? [],
      ignoreEos: values['ignore-eos'] === true,
    };
    const { model, dir } = await loadRun(positionals[0]!);
    if (!isLanguageModelInstance(model)) throw new UsageError(`${dir} holds a ${model.constructor.name}, not a language model; use 'knobs eval' for classifiers`);
    const json = values.json === true;
    const stream = json ? io.stderr : io.stdout;
    stream(values.prompt);
    const result = generateText(model, values.prompt, { ...options, onText: stream });
    stream('\n');
    emit(io, json, { prompt_ids: result.promptIds, ids: result.ids, text: result.text, finish_reason: result.finishReason }, () => '');
    return 0;
  },
};
