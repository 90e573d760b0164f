/** `knobs merge BASE ADAPTER --out DIR`: folds a LoRA adapter into its base and writes a normal model directory. */
import { UsageError } from '../errors.js';
import { saveModelDirectory } from '../finetune/model-dir.js';
import { openLanguageModel } from '../load/language-model.js';
import { type Command, emit, parse } from './command.js';

export const mergeCommand: Command = {
  name: 'merge',
  summary: 'merge a LoRA adapter into its base and write a model directory',
  help: `Usage: knobs merge BASE ADAPTER --out DIR [--allow-base-mismatch] [--json]

Loads BASE (a run or Hugging Face model directory) with the PEFT adapter directory ADAPTER,
adds scaling · B·A into each targeted weight (transposed for GPT-2's Conv1D) and writes DIR as a
Hugging Face model directory: config.json, generation_config.json, model.safetensors and the
tokenizer files. DIR must not exist; it appears whole or not at all.

  --out DIR                where to write the merged model (required)
  --allow-base-mismatch    merge an adapter that records another base's weight digest
  --json                   print {"out","modules","parameters"} on one line

Example:
  knobs merge runs/tiny runs/tiny-lora --out runs/tiny-merged
  knobs diff runs/tiny/model.safetensors runs/tiny-merged/model.safetensors`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      { out: { type: 'string' }, 'allow-base-mismatch': { type: 'boolean' }, json: { type: 'boolean' } },
      'merge',
    );
    if (positionals.length !== 2)
      throw new UsageError(
        `merge takes BASE and ADAPTER, got ${positionals.length} argument(s); see 'knobs merge --help'`,
      );
    const out = values.out as string | undefined;
    if (out === undefined) throw new UsageError("merge needs --out DIR; see 'knobs merge --help'");
    const [base, adapterDir] = positionals as [string, string];
    const { model, tokenizer, adapters } = await openLanguageModel(base, {
      adapters: [adapterDir],
      allowBaseMismatch: values['allow-base-mismatch'] === true,
    });
    const adapter = adapters[0]!;
    adapter.merge();
    await saveModelDirectory(out, model, tokenizer);
    const result = { out, modules: [...adapter.layers.keys()], parameters: adapter.numParameters() };
    emit(
      io,
      values.json === true,
      result,
      () => `merged ${result.modules.length} modules of ${adapterDir} into ${out}\n`,
    );
    return 0;
  },
};
