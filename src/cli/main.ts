/**
 * The `knobs` command line: picks a command, runs it, and turns errors into exit codes. Importing
 * this module runs nothing (tests call `main()` in process); the executable is ./bin.ts.
 */
import { KnobsError, UsageError } from '../errors.js';
import type { CliIO, Command } from './command.js';
import { infoCommand } from './info.js';
import { evalCommand } from './eval.js';
import { generateCommand } from './generate.js';
import { inspectCommand } from './inspect.js';
import { sealCommand } from './seal.js';
import { diffCommand } from './diff.js';
import { convertCommand } from './convert.js';
import { chooseThreads } from './threads.js';
import { trainCommand } from './train.js';
import { tuneCommand } from './tune.js';
import { mergeCommand } from './merge.js';
import { extractLoraCommand } from './extract-lora.js';
import { tokenizeCommand } from './tokenize.js';
import { tokenizerCommand } from './tokenizer.js';
import { signingKeyCommand } from './signing-key.js';
import { releaseCommand } from './release.js';
import { verifyCommand } from './verify.js';
import { serveCommand } from './serve.js';
import { keysCommand } from './keys.js';

const COMMANDS: readonly Command[] = [
  infoCommand,
  inspectCommand,
  diffCommand,
  convertCommand,
  trainCommand,
  tuneCommand,
  mergeCommand,
  extractLoraCommand,
  evalCommand,
  generateCommand,
  tokenizeCommand,
  tokenizerCommand,
  signingKeyCommand,
  releaseCommand,
  verifyCommand,
  sealCommand,
  serveCommand,
  keysCommand,
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'Usage: knobs COMMAND [ARGS] [--flags]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Global flags: --threads N (or KNOBS_THREADS) sets worker threads; KNOBS_BACKEND=js|native picks the backend.',
    "Run 'knobs COMMAND --help' for a command's flags and an example.",
    '',
  ].join('\n');
}

export async function main(rawArgv: string[], io: CliIO): Promise<number> {
  let argv: string[];
  try {
    // The global --threads (or KNOBS_THREADS), checked and capped at the CPUs available, goes to
    // the native backend through KNOBS_THREADS, which it reads when it loads (on the first op).
    const choice = chooseThreads(rawArgv, process.env);
    for (const message of choice.warnings) io.stderr(`knobs: warning: ${message}\n`);
    if (choice.threads !== undefined) process.env.KNOBS_THREADS = String(choice.threads);
    argv = choice.argv;
  } catch (err) {
    io.stderr(`knobs: error [E_USAGE]: ${(err as Error).message}\n`);
    return 2;
  }
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    const { KNOBS_VERSION } = await import('./info.js');
    io.stdout(`${KNOBS_VERSION}\n`);
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  try {
    if (!command) throw new UsageError(`unknown command '${name}'; run 'knobs --help' to list commands`);
    if (rest.includes('--help') || rest.includes('-h')) {
      io.stdout(`${command.help}\n`);
      return 0;
    }
    return await command.run(rest, io);
  } catch (err) {
    if (err instanceof KnobsError) {
      io.stderr(`knobs: error [${err.code}]: ${err.message}\n`);
      return err.code === 'E_USAGE' ? 2 : 1;
    }
    io.stderr(`knobs: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

/** The process's own streams, for the executable. */
export function processIO(): CliIO {
  return {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    isTTY: process.stderr.isTTY === true,
  };
}
