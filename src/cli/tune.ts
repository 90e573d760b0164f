/** `knobs tune BASE RECIPE.json --out DIR`: fine-tunes a base (LoRA or freezing) on the trainer; Ctrl-C stops cleanly (exit 130). */
import { UsageError } from '../errors.js';
import { QUANT_TYPES, type QuantType } from '../finetune/quantized-base.js';
import { openLanguageModel } from '../load/language-model.js';
import { loadTuneRecipe } from '../train/tune-recipe.js';
import { TUNE_FILE, readTuneFile, tune } from '../train/tune.js';
import { type Command, emit, parse } from './command.js';
import { formatProfile } from './profile-table.js';
import { EXIT_INTERRUPTED, RUN_FLAGS, fmt, onSigintStop, runOptions } from './train.js';

export const tuneCommand: Command = {
  name: 'tune',
  summary: 'fine-tune a base model with a tune recipe (LoRA adapter in PEFT layout, or frozen parameters)',
  help: `Usage: knobs tune BASE RECIPE.json --out DIR [--data PATH] [--steps N | --epochs N] [--seed S]
                  [--quantize q8_0|q4_0] [--resume] [--keep-checkpoints N] [--profile] [--json]

Fine-tunes BASE (a knobs run directory, a Hugging Face model directory or a .gguf file) on the
recipe's text, tokenized with the base's tokenizer (a GGUF file's from its metadata). The recipe is a training recipe without "model" and
"tokenizer", with either a "lora" section (r, lora_alpha, lora_dropout, target_modules,
use_rslora, rank_pattern, alpha_pattern, layers_to_transform — PEFT's LoraConfig fields) or
"trainable" / "frozen" glob lists over parameter names (see docs/finetune.md).

DIR receives, with LoRA, the adapter as PEFT writes it (adapter_config.json,
adapter_model.safetensors); with freezing, a whole model directory (config.json,
model.safetensors, tokenizer files). Both hold tune.json, metrics.jsonl and checkpoints/, which
keep only what trains. Progress, checkpoints, --resume and Ctrl-C work as in 'knobs train'.

  --out DIR               output directory (required)
  --data PATH             the text file (overrides the recipe's data.path)
  --steps N, --epochs N   override the recipe's length
  --seed S                override the recipe's seed
  --quantize TYPE         LoRA on a quantized base (QLoRA-style): quantize the base's float linear
                          layers to q8_0 or q4_0 in memory first (the recipe's "quantize" field);
                          only the f32 adapter trains. A GGUF base's q8_0/q4_0 layers are used as
                          loaded. The adapter records the quantized base's digest
  --resume                continue DIR from its newest checkpoint (BASE and RECIPE may be left
                          out: DIR/${TUNE_FILE} names them)
  --keep-checkpoints N    committed checkpoints to keep (default 3)
  --profile               print where the step time went (also KNOBS_PROFILE=1)
  --json                  print one JSON object with the result on stdout

Example:
  knobs tune runs/tiny recipes/tune/lora-attn.json --out runs/tiny-lora --data fortunes.txt
  knobs tune runs/tiny recipes/tune/lora-attn.json --out runs/tiny-qlora --quantize q8_0
  knobs tune model.gguf recipes/tune/lora-attn.json --out runs/gguf-lora
  knobs generate runs/tiny --adapter runs/tiny-lora --prompt 'The '`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { ...RUN_FLAGS, quantize: { type: 'string' } }, 'tune');
    const quantize = values.quantize as string | undefined;
    if (quantize !== undefined && !QUANT_TYPES.includes(quantize as QuantType))
      throw new UsageError(`--quantize must be one of ${QUANT_TYPES.join(', ')}, got '${quantize}'`);
    const out = values.out as string | undefined;
    if (out === undefined) throw new UsageError("tune needs --out DIR; see 'knobs tune --help'");
    const resume = values.resume === true;
    let base: string;
    let recipe;
    let source: string;
    if (positionals.length === 0 && resume) {
      const saved = await readTuneFile(out);
      base = saved.base;
      recipe = saved.recipe;
      source = `${out}/${TUNE_FILE}`;
    } else if (positionals.length === 2) {
      base = positionals[0]!;
      source = positionals[1]!;
      recipe = await loadTuneRecipe(source);
    } else {
      throw new UsageError(
        `tune takes BASE and RECIPE.json (or neither, with --resume), got ${positionals.length} argument(s); see 'knobs tune --help'`,
      );
    }
    return onSigintStop(io, async (signal) => {
      const opened = await openLanguageModel(base);
      const result = await tune(opened, recipe, {
        ...runOptions(values, io),
        ...(quantize !== undefined ? { quantize: quantize as QuantType } : {}),
        source,
        signal,
      });
      emit(io, values.json === true, result, () => {
        const ev = result.lastEval;
        const share = ((100 * result.trainableParameters) / result.totalParameters).toFixed(3);
        const done = result.interrupted
          ? `stopped at step ${result.step}/${result.totalSteps}; continue with: knobs tune --resume --out ${result.out}\n`
          : `tuned ${result.step} steps (${result.method}, ${result.trainableParameters} trainable parameters = ${share} %) into ${result.out}${ev ? ` (eval loss ${fmt(ev.eval_loss)}, bits_per_byte ${fmt(ev.bits_per_byte)})` : ''}\n`;
        return result.profile ? done + formatProfile(result.profile) : done;
      });
      return result.interrupted ? EXIT_INTERRUPTED : 0;
    });
  },
};
