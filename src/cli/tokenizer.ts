/** `knobs tokenizer train TEXT --vocab-size N --out tokenizer.json`: trains a byte-level BPE. */
import { UsageError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { trainByteLevelBpe } from '../tokenizer/train-bpe.js';
import { Progress } from '../train/progress.js';
import { type Command, emit, parse } from './command.js';
import { positiveInt } from './flags.js';
import { readText } from './tokenize.js';

export const tokenizerCommand: Command = {
  name: 'tokenizer',
  summary: 'tokenizer tools: train a byte-level BPE tokenizer.json',
  help: `Usage: knobs tokenizer train TEXT --vocab-size N --out PATH [--special TOKEN]...
                              [--min-frequency N] [--json]

Trains a byte-level BPE (GPT-2's pre-tokenizer and byte alphabet) on the UTF-8 file TEXT and
writes a tokenizer.json that Hugging Face tokenizers reads. Ids: byte b is id b, then the
merges in order, then the special tokens. Progress goes to stderr.

  --vocab-size N      total vocabulary: 256 bytes + merges + special tokens
  --out PATH          where to write the tokenizer.json (atomically)
  --special TOKEN     a special token (repeatable; default <|endoftext|>)
  --min-frequency N   never merge a pair seen fewer than N times (default 2); the vocabulary
                      is smaller than N when the text runs out of such pairs
  --json              one object: {"out", "vocab_size", "merges", "seconds"}

Example:
  knobs tokenizer train kjv.txt --vocab-size 4096 --out kjv-tokenizer.json`,
  async run(argv, io) {
    const { values, positionals } = parse(
      argv,
      {
        'vocab-size': { type: 'string' },
        out: { type: 'string' },
        special: { type: 'string', multiple: true },
        'min-frequency': { type: 'string' },
        json: { type: 'boolean' },
      },
      'tokenizer',
    );
    const [sub, ...rest] = positionals;
    if (sub !== 'train')
      throw new UsageError(
        `unknown tokenizer subcommand ${JSON.stringify(sub ?? '')}; the one there is: train. See 'knobs tokenizer --help'`,
      );
    if (rest.length !== 1)
      throw new UsageError(`tokenizer train takes one TEXT file, got ${rest.length}; see 'knobs tokenizer --help'`);
    if (values['vocab-size'] === undefined)
      throw new UsageError("tokenizer train needs --vocab-size N; see 'knobs tokenizer --help'");
    if (typeof values.out !== 'string')
      throw new UsageError("tokenizer train needs --out PATH; see 'knobs tokenizer --help'");
    const vocabSize = positiveInt(values['vocab-size'], '--vocab-size', 257);
    const minFrequency =
      values['min-frequency'] === undefined ? 2 : positiveInt(values['min-frequency'], '--min-frequency');
    const specialTokens = (values.special as string[] | undefined) ?? ['<|endoftext|>'];
    const text = await readText(rest[0]!);
    const started = performance.now();
    let progress: Progress | null = null;
    let lastShown = 0;
    const json = trainByteLevelBpe(text, {
      vocabSize,
      specialTokens,
      minFrequency,
      onProgress: (done, total) => {
        // About 100 updates in all (10 lines when stderr is a log), however many merges.
        progress ??= new Progress({ total, label: 'merges', write: io.stderr, isTTY: io.isTTY, plainEvery: 10 });
        if (done === total || done - lastShown >= Math.max(1, Math.floor(total / 100))) {
          lastShown = done;
          progress.update(done, {});
        }
      },
    });
    (progress as Progress | null)?.finish();
    const merges = (json.model as { merges: unknown[] }).merges.length;
    await writeFileAtomic(values.out, `${JSON.stringify(json)}\n`);
    const summary = {
      out: values.out,
      vocab_size: 256 + merges + specialTokens.length,
      merges,
      seconds: (performance.now() - started) / 1000,
    };
    emit(
      io,
      values.json === true,
      summary,
      () =>
        `wrote ${summary.out}: ${summary.vocab_size} tokens (${merges} merges) in ${summary.seconds.toFixed(1)} s\n`,
    );
    return 0;
  },
};
