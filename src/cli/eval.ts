/** `knobs eval DIR`: scores a run's model (accuracy and loss, or loss and bits per byte). */
import { UsageError } from '../errors.js';
import { evaluateRun } from '../train/eval-run.js';
import { type Command, emit, parse } from './command.js';

export const evalCommand: Command = {
  name: 'eval',
  summary: "score a run's model on its test or validation data",
  help: `Usage: knobs eval DIR [--data PATH] [--json]

Loads DIR/config.json, DIR/model.safetensors and DIR/recipe.json (a run directory made by
'knobs train') and evaluates the model without gradients:
  classifiers       loss and accuracy on the whole IDX test split
  language models   loss and bits per byte on the whole validation split of the text

  --data PATH   other data: for classifiers a directory with the recipe's IDX file names,
                for language models a text file, evaluated whole
  --json        print one JSON object, e.g. {"loss":0.31,"accuracy":0.891,"examples":10000}

Example:
  knobs eval runs/tiny --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { data: { type: 'string' }, json: { type: 'boolean' } }, 'eval');
    if (positionals.length !== 1) throw new UsageError(`eval takes one run DIR, got ${positionals.length}; see 'knobs eval --help'`);
    const result = await evaluateRun(positionals[0]!, values.data !== undefined ? { dataPath: values.data as string } : {});
    emit(io, values.json === true, result, () => 'accuracy' in result
      ? `accuracy ${(100 * result.accuracy).toFixed(2)}%  loss ${result.loss.toFixed(4)}  (${result.examples} examples)\n`
      : `loss ${result.loss.toFixed(4)}  bits/byte ${result.bits_per_byte.toFixed(4)}  (${result.tokens} tokens)\n`);
    return 0;
  },
};
