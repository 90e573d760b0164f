/** `knobs generate DIR --prompt TEXT`: continues a prompt with a run's language model, streaming. */
import { UsageError } from '../errors.js';
import { generateText } from '../models/generate-text.js';
import { openLanguageModel } from '../load/language-model.js';
import { readMasterKey } from '../seal/keys.js';
import { weightKinds } from '../nn/quantized-linear.js';
import { type Command, emit, parse } from './command.js';
import {
  ADAPTER_FLAGS,
  ADAPTER_HELP,
  MAX_GENERATE_TOKENS,
  adapterOptions,
  numberIn,
  positiveInt,
  quantizeFlag,
} from './flags.js';

export const generateCommand: Command = {
  name: 'generate',
  summary: "continue a prompt with a run's language model (KV cache, streamed)",
  help: `Usage: knobs generate DIR --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]
                      [--top-p P] [--seed S] [--stop STR]... [--ignore-eos] [--public-key KEY.pub]
                      [--master-key-file F] [--adapter DIR]... [--allow-base-mismatch]
                      [--quantize TYPE] [--json]

Loads the language model in DIR and continues TEXT, streaming the prompt and the new text to
stdout as it is produced (to stderr with --json). DIR is a run directory made by 'knobs train'
(byte-level), or a Hugging Face model directory — GPT-2, Llama, Mistral or Qwen2: config.json,
model.safetensors or shards, tokenizer.json, optional generation_config.json (docs/hf-models.md),
or a GGUF file (llama, qwen2, gpt2; docs/gguf.md); a directory may be sealed by 'knobs seal'
(decrypted into memory; docs/sealing.md).

  --max-tokens N     most new tokens, default 256 (or generation_config.json's max_new_tokens), at most 65536
  --temperature T    0 is greedy (deterministic); default 1
  --top-k K          sample from the K most likely tokens (0: all; default 0)
  --top-p P          sample from the smallest set reaching probability P (default 1)
                     For a Hugging Face directory these four default to generation_config.json
                     as in transformers: greedy unless do_sample is true (then temperature,
                     top_k (50), top_p), max_new_tokens when set
  --seed S           sampler seed (default 0)
  --stop STR         stop when the text contains STR (repeatable); STR is not printed
  --ignore-eos       keep going past the eos token(s) (generation_config.json's eos_token_id, else
                     config.json's). Byte-level models that knobs trains have eos_token_id null:
                     they stop at --stop or --max-tokens
  --public-key KEY   DIR is a bundle signed by 'knobs release': every file is checked against
                     model.sig with this public key as it is read, and a bundle that does not
                     verify is refused before the model runs (docs/release.md)
  --master-key-file F  the master key of a sealed DIR (else the environment variable KNOBS_MASTER_KEY)
  --quantize TYPE    q8_0 or q4_0: quantize the Linear layers at load and run them on int8 kernels
                     (layers whose input size is not a multiple of 32 stay f32)
  --json             one object: {"prompt_ids","ids","text","finish_reason":"stop"|"length",
                     "weights":{"f32":n,"q8_0":m,…} (tensors per kind), "load_s",
                     "prompt_tokens_per_s", "tokens_per_s" (decode, after the first new token)}
${ADAPTER_HELP}

Example:
  knobs generate runs/tiny --prompt 'And God said' --max-tokens 200 --temperature 0.8
  knobs generate runs/tiny --adapter runs/tiny-lora --prompt 'And God said' --temperature 0
  knobs generate models/TinyLlama-1.1B --prompt 'The capital of France is' --temperature 0`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        prompt: { type: 'string' },
        'max-tokens': { type: 'string' },
        temperature: { type: 'string' },
        'top-k': { type: 'string' },
        'top-p': { type: 'string' },
        seed: { type: 'string' },
        stop: { type: 'string', multiple: true },
        'ignore-eos': { type: 'boolean' },
        'public-key': { type: 'string' },
        'master-key-file': { type: 'string' },
        quantize: { type: 'string' },
        json: { type: 'boolean' },
        ...ADAPTER_FLAGS,
      },
      'generate',
    );
    if (positionals.length !== 1)
      throw new UsageError(`generate takes one DIR, got ${positionals.length}; see 'knobs generate --help'`);
    if (typeof values.prompt !== 'string')
      throw new UsageError("generate needs --prompt TEXT; see 'knobs generate --help'");
    const given = {
      maxTokens:
        values['max-tokens'] === undefined
          ? undefined
          : positiveInt(values['max-tokens'], '--max-tokens', 0, {
              value: MAX_GENERATE_TOKENS,
              why: 'for longer texts, generate again from the end of this one',
            }),
      temperature: values.temperature === undefined ? undefined : numberIn(values.temperature, '--temperature', 0, 100),
      topK: values['top-k'] === undefined ? undefined : positiveInt(values['top-k'], '--top-k', 0),
      topP:
        values['top-p'] === undefined ? undefined : numberIn(values['top-p'], '--top-p', 0, 1, { minExclusive: true }),
      seed: values.seed === undefined ? 0 : positiveInt(values.seed, '--seed', 0),
    };
    const quantize = quantizeFlag(values.quantize);
    const loadStart = performance.now();
    const masterKey = await readMasterKey(values['master-key-file'] as string | undefined, process.env);
    const { model, textOptions, defaults } = await openLanguageModel(positionals[0]!, {
      masterKey,
      publicKey: values['public-key'] as string | undefined,
      ...adapterOptions(values),
      ...quantize,
    });
    const loadSeconds = (performance.now() - loadStart) / 1000;
    const options = {
      maxTokens: given.maxTokens ?? defaults.maxNewTokens ?? 256,
      temperature: given.temperature ?? defaults.temperature,
      topK: given.topK ?? defaults.topK,
      topP: given.topP ?? defaults.topP,
      seed: given.seed,
      stop: (values.stop as string[] | undefined) ?? [],
      ignoreEos: values['ignore-eos'] === true,
    };
    const json = values.json === true;
    const stream = json ? io.stderr : io.stdout;
    stream(values.prompt);
    const result = generateText(model, values.prompt, { ...options, ...textOptions, onText: stream });
    stream('\n');
    emit(
      io,
      json,
      {
        prompt_ids: result.promptIds,
        ids: result.ids,
        text: result.text,
        finish_reason: result.finishReason,
        weights: weightKinds(model),
        load_s: round(loadSeconds),
        prompt_tokens_per_s: rate(result.promptIds.length, result.promptSeconds),
        tokens_per_s: rate(result.ids.length - 1, result.decodeSeconds),
      },
      () => '',
    );
    return 0;
  },
};

const round = (x: number): number => Number(x.toPrecision(4));
/** n per second, or null when nothing was timed (no decode step after a single token). */
const rate = (n: number, seconds: number): number | null => (n > 0 && seconds > 0 ? round(n / seconds) : null);
