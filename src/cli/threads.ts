/**
 * Worker threads for the CLI: `--threads N` or KNOBS_THREADS, checked and capped.
 *
 * More threads than the CPUs this process may use (os.availableParallelism: the affinity mask,
 * cgroup quotas aside) only makes them wait for each other — 999 threads on 2 CPUs ran at 1% of
 * normal speed — so a larger request is capped there, with a warning. A value that is not a
 * positive integer is a usage error, from the flag or the variable alike.
 */
import { availableParallelism } from 'node:os';
import { UsageError } from '../errors.js';

export interface ThreadChoice {
  /** argv without --threads. */
  argv: string[];
  /** The thread count to use, or undefined to keep the default (every available CPU). */
  threads: number | undefined;
  warnings: string[];
}

/** Takes `--threads N` (or `--threads=N`) out of argv; falls back to `env.KNOBS_THREADS`. */
export function chooseThreads(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  cpus = availableParallelism(),
): ThreadChoice {
  const rest: string[] = [];
  let value: string | undefined;
  let source = 'KNOBS_THREADS';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    const inline = arg.startsWith('--threads=') ? arg.slice('--threads='.length) : undefined;
    if (arg !== '--threads' && inline === undefined) {
      rest.push(arg);
      continue;
    }
    value = inline ?? argv[++i];
    source = '--threads';
    if (value === undefined) throw new UsageError('--threads needs a positive integer, got nothing');
  }
  value ??= env.KNOBS_THREADS === '' ? undefined : env.KNOBS_THREADS;
  if (value === undefined) return { argv: rest, threads: undefined, warnings: [] };
  const text = value.trim();
  const n = /^[1-9][0-9]*$/.test(text) ? Number(text) : NaN;
  if (Number.isNaN(n)) {
    throw new UsageError(
      `${source} needs a positive integer (at most the ${cpus} CPUs available), got ${JSON.stringify(value)}`,
    );
  }
  if (n > cpus) {
    return {
      argv: rest,
      threads: cpus,
      warnings: [`${source} ${text} is more than the ${cpus} CPUs available to this process; using ${cpus}`],
    };
  }
  return { argv: rest, threads: n, warnings: [] };
}
