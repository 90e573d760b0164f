/**
 * Tokenizer encoding speed, MB/s: the King James Bible (4.3 MB, `bible 'Gen1:1-Rev22:21'`) through
 * an 8,000-token GPT-2-style byte-level BPE trained on it, knobs' Tokenizer against Hugging Face
 * tokenizers (Rust, through the N-API build @anush008/tokenizers — its time includes building the
 * Encoding object). Both sides encode on one thread, so only the one-core row is run; each side
 * starts cold (no word cache), interleaved, medians. The ids must be equal or the bench fails.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { Tokenizer } from '../src/tokenizer/tokenizer.js';
import { trainByteLevelBpe } from '../src/tokenizer/train-bpe.js';
import { pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const ROUNDS = 3;
const VOCAB = 8000;

interface RustTokenizer {
  encode(text: string): Promise<{ getIds(): number[] }>;
}

function kjv(): string {
  const r = spawnSync('bible', ['Gen1:1-Rev22:21'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0 || !r.stdout)
    throw new Error(
      "the tokenizer bench needs the KJV text from Debian's bible-kjv: apt-get install bible-kjv (scripts/setup.sh installs it)",
    );
  return r.stdout;
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  if (opts.cores !== 1) return [];
  const require = createRequire(import.meta.url);
  const hf = require('@anush008/tokenizers') as { Tokenizer: { fromString(s: string): RustTokenizer } };
  const version = (require('@anush008/tokenizers/package.json') as { version: string }).version;
  const text = kjv();
  const megabytes = Buffer.byteLength(text) / 1e6;
  const json = JSON.stringify(trainByteLevelBpe(text, { vocabSize: VOCAB }));
  return pinnedToCore0(async () => {
    const ours: number[] = [];
    const rust: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const tokenizer = Tokenizer.fromJSON(json);
      let t0 = performance.now();
      const a = tokenizer.encode(text).ids;
      ours.push(megabytes / ((performance.now() - t0) / 1000));
      const peer = hf.Tokenizer.fromString(json);
      t0 = performance.now();
      const b = (await peer.encode(text)).getIds();
      rust.push(megabytes / ((performance.now() - t0) / 1000));
      if (a.length !== b.length || a.some((id, i) => id !== b[i]))
        throw new Error('knobs and Hugging Face tokenizers disagree on the KJV ids');
    }
    return [
      makeRow(
        `tokenizer_encode_kjv_bpe${VOCAB}`,
        1,
        'MB/s',
        median(ours),
        `tokenizers 0.22.2 (Rust, @anush008/tokenizers ${version})`,
        median(rust),
        true,
        null,
      ),
    ];
  });
}
