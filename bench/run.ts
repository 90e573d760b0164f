/**
 * `npm run bench [-- NAME…] [-- --json]`: runs the benchmark suite (or the named benchmarks), each
 * on one core and on all cores, and prints a table — or, with --json, one JSON row per line in
 * the format of docs/design.md ("Benchmarks"): {"bench", "cores", "unit", "knobs", "peer",
 * "peer_value", "higher_is_better", "ratio", "target"}. Progress and notes go to stderr.
 *
 * Every row is measured against its peer in the same run, so a missing peer is an error: the run
 * checks for it first and exits 1 naming what to install (`scripts/setup.sh --bench`).
 *
 * KNOBS_BENCH_CORES=1|all limits the core settings. The default suite takes ~5–6 minutes on
 * 2 cores shared with other work (it must stay under 10).
 */
import * as activationBackward from './activation-backward.js';
import * as batch from './batch.js';
import * as fashion from './fashion.js';
import * as gemm from './gemm.js';
import * as gptBlock from './gpt-block.js';
import * as gptGenerate from './gpt-generate.js';
import * as gptMemory from './gpt-memory.js';
import * as gptShare from './gpt-share.js';
import * as gptTrain from './gpt-train.js';
import * as hfLoad from './hf-load.js';
import * as llamaDecode from './llama-decode.js';
import * as llamaTrain from './llama-train.js';
import * as loraTrain from './lora-train.js';
import * as mlp from './mlp.js';
import * as opOverhead from './op-overhead.js';
import * as seal from './seal.js';
import { PeerMissingError, TorchPeer } from './peer.js';
import * as tokenizer from './tokenizer.js';
import * as verify from './verify.js';
import * as serve from './serve.js';
import type { BenchOptions, BenchRow } from './row.js';
import { notes } from './train-step.js';

const SUITE: Readonly<Record<string, (opts: BenchOptions) => Promise<BenchRow[]>>> = {
  gemm: gemm.run,
  'op-overhead': opOverhead.run,
  'activation-backward': activationBackward.run,
  mlp: mlp.run,
  'gpt-block': gptBlock.run,
  'gpt-train': gptTrain.run,
  'llama-train': llamaTrain.run,
  'lora-train': loraTrain.run,
  'gpt-memory': gptMemory.run,
  'gpt-generate': gptGenerate.run,
  'fashion-mlp': fashion.runMlp,
  'fashion-cnn': fashion.runCnn,
  'hf-load': hfLoad.run,
  tokenizer: tokenizer.run,
  verify: verify.run,
  seal: seal.run,
  'gpt-share': gptShare.runKjv,
  'gpt-share-wide': gptShare.runWide,
  serve: serve.run,
  'llama-decode': llamaDecode.run,
  batch: batch.run,
};
/** Benchmarks that run only when named (each takes minutes: too slow for the default suite's 10 minutes). */
const NAMED_ONLY: ReadonlySet<string> = new Set(['gpt-share-wide', 'llama-decode', 'lora-train', 'batch']);

function usage(): string {
  return `usage: npm run bench [-- NAME…] [-- --json]\n  benchmarks: ${Object.keys(SUITE).join(', ')} (${[...NAMED_ONLY].join(', ')}: only when named)\n  example: npm run bench -- mlp gpt-block --json`;
}

function fmt(v: number | null): string {
  if (v === null) return '—';
  return Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function table(rows: readonly BenchRow[]): string {
  const head = ['bench', 'cores', 'unit', 'knobs', 'peer', 'peer value', 'ratio', 'target', ''];
  const body = rows.map((r) => [
    r.bench,
    String(r.cores),
    r.unit,
    fmt(r.knobs),
    r.peer ?? '—',
    fmt(r.peer_value),
    r.ratio === null ? '—' : r.ratio.toFixed(2),
    r.target === null ? '—' : `≥ ${r.target}`,
    r.ratio !== null && r.target !== null && r.ratio < r.target ? 'below target' : '',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i >= 3 && i <= 7 && i !== 4 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

async function main(argv: readonly string[]): Promise<number> {
  const json = argv.includes('--json');
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(usage() + '\n');
    return 0;
  }
  const names = argv.filter((a) => !a.startsWith('--'));
  const unknown = names.filter((n) => !(n in SUITE));
  if (unknown.length > 0) {
    process.stderr.write(`knobs bench: unknown benchmark ${unknown.join(', ')}\n${usage()}\n`);
    return 2;
  }
  const env = process.env.KNOBS_BENCH_CORES;
  const coreSettings: (1 | 'all')[] = env === '1' ? [1] : env === 'all' ? ['all'] : [1, 'all'];
  try {
    (await TorchPeer.start('all')).close();
  } catch (e) {
    if (!(e instanceof PeerMissingError)) throw e;
    process.stderr.write(`knobs bench: error: ${e.message}\n`);
    return 1;
  }
  const rows: BenchRow[] = [];
  let failed = false;
  for (const name of names.length > 0 ? names : Object.keys(SUITE).filter((n) => !NAMED_ONLY.has(n))) {
    for (const cores of coreSettings) {
      const t0 = Date.now();
      try {
        const got = await SUITE[name]!({ cores });
        rows.push(...got);
        if (json) for (const r of got) process.stdout.write(JSON.stringify(r) + '\n');
        process.stderr.write(`bench ${name} cores=${cores}: ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      } catch (e) {
        failed = true;
        process.stderr.write(`knobs bench: ${name} (cores=${cores}) failed: ${(e as Error).message}\n`);
      }
    }
  }
  if (!json) {
    process.stdout.write(table(rows) + '\n');
    for (const n of notes) process.stdout.write(`  ${n}\n`);
  }
  return failed ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
