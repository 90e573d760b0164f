/** `knobs extract-lora BASE TUNED --rank R --out DIR`: a LoRA adapter from a fine-tune, by truncated SVD of the difference. */
import { existsSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { saveLoraAdapter } from '../finetune/adapter.js';
import { extractLora } from '../finetune/extract.js';
import { openLanguageModel } from '../load/language-model.js';
import { type Command, emit, parse } from './command.js';
import { positiveInt } from './flags.js';

export const extractLoraCommand: Command = {
  name: 'extract-lora',
  summary: 'build a LoRA adapter from a fine-tuned model (truncated SVD of the weight difference)',
  help: `Usage: knobs extract-lora BASE TUNED --rank R --out DIR [--target-modules LIST] [--json]

BASE and TUNED are model directories (runs or Hugging Face) of the same architecture and size.
For each targeted linear layer the difference W_tuned − W_base is cut to its best rank-R
approximation (a randomized truncated SVD) and written as a PEFT adapter for BASE
(lora_alpha = R, so scaling is 1). Prints the share of the difference's energy (squared
Frobenius norm) the adapter keeps, overall and per layer, and warns about parameters that moved
but cannot be carried by LoRA (biases, norms, embeddings, the output head).

  --rank R               the adapter's rank (capped at each layer's min(in, out))
  --out DIR              the adapter directory to create (must not exist)
  --target-modules LIST  comma-separated module name suffixes (default: every linear layer
                         but the output head whose weight changed)
  --json                 print {"out","energy_share","layers":[…],"uncaptured":[…]} on one line

Example:
  knobs extract-lora runs/tiny runs/tiny-full-ft --rank 8 --out runs/tiny-extracted`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        rank: { type: 'string' },
        out: { type: 'string' },
        'target-modules': { type: 'string' },
        json: { type: 'boolean' },
      },
      'extract-lora',
    );
    if (positionals.length !== 2)
      throw new UsageError(
        `extract-lora takes BASE and TUNED, got ${positionals.length} argument(s); see 'knobs extract-lora --help'`,
      );
    if (values.rank === undefined) throw new UsageError("extract-lora needs --rank R; see 'knobs extract-lora --help'");
    const rank = positiveInt(values.rank, '--rank');
    const out = values.out as string | undefined;
    if (out === undefined) throw new UsageError("extract-lora needs --out DIR; see 'knobs extract-lora --help'");
    if (existsSync(out)) throw new UsageError(`${out} already exists; choose a new --out directory`, { path: out });
    const targets = values['target-modules'] as string | undefined;
    const [basePath, tunedPath] = positionals as [string, string];
    const base = (await openLanguageModel(basePath)).model;
    const tuned = (await openLanguageModel(tunedPath)).model;
    const result = extractLora(base, tuned, {
      rank,
      ...(targets !== undefined ? { targetModules: targets.split(',').filter((t) => t !== '') } : {}),
    });
    result.adapter.config.base_model_name_or_path = basePath;
    await saveLoraAdapter(out, base, result.adapter);
    if (result.uncaptured.length > 0)
      io.stderr(
        `knobs: warning: ${result.uncaptured.length} parameter(s) changed but are not linear-layer weights LoRA can carry: ${result.uncaptured.slice(0, 6).join(', ')}${result.uncaptured.length > 6 ? ', …' : ''}\n`,
      );
    const summary = {
      out,
      rank,
      energy_share: result.energyShare,
      layers: result.layers.map((l) => ({ module: l.module, rank: l.rank, energy_share: l.energyShare })),
      uncaptured: result.uncaptured,
    };
    emit(io, values.json === true, summary, () =>
      [
        `extracted a rank-${rank} adapter of ${result.layers.length} layers into ${out}; it keeps ${(100 * result.energyShare).toFixed(2)} % of the difference's energy`,
        ...result.layers.map((l) => `  ${l.module.padEnd(40)} r=${l.rank}  ${(100 * l.energyShare).toFixed(2)} %`),
        '',
      ].join('\n'),
    );
    return 0;
  },
};
