/**
 * The shape of a CLI command and the helpers every command shares: flag parsing with
 * node:util's parseArgs (unknown flags are usage errors) and output that follows the
 * conventions in docs/cli.md (data on stdout, one JSON object with --json, errors on stderr).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from '../errors.js';

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether stderr is a terminal (progress bars) or a log (plain lines). */
  isTTY: boolean;
}

export interface Command {
  name: string;
  summary: string;
  /** Full help text, with at least one example. */
  help: string;
  /** Returns the exit code. Throws KnobsError for failures (main.ts formats them). */
  run(argv: string[], io: CliIO): Promise<number>;
}

export type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses argv with the given options; every command also accepts --help. */
export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

export function parse(argv: string[], options: Options, command: string): Parsed {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; see 'knobs ${command} --help'`);
  }
}

/** Prints `data` as one JSON line when --json, else the human text. */
export function emit(io: CliIO, json: boolean, data: unknown, human: () => string): void {
  io.stdout(json ? `${JSON.stringify(data)}\n` : human());
}
