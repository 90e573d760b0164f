/** Runs the CLI: the built executable (dist/src/cli/bin.js) as a child process, as a user would, or main() in process. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/cli/main.js';

export const MAIN = fileURLToPath(new URL('../../src/cli/bin.js', import.meta.url));

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Starts `knobs ARGS`; `onStderr` sees stderr as it arrives (to time signals). */
export function startCli(
  args: readonly string[],
  onStderr?: (text: string, child: ChildProcess) => void,
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): { child: ChildProcess; done: Promise<CliRun> } {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    onStderr?.(stderr, child);
  });
  const done = new Promise<CliRun>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, done };
}

export function cli(args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliRun> {
  return startCli(args, undefined, opts).done;
}

/** Runs `knobs ARGS` in this process through main(), collecting what it prints. */
export async function cliInProcess(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main([...args], { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), isTTY: false });
  return { code, stdout, stderr };
}

/** `knobs generate --json` output without its timings (load_s, prompt_tokens_per_s, tokens_per_s): the deterministic rest. */
export function untimedGeneration(stdout: string): Record<string, unknown> {
  const result = JSON.parse(stdout) as Record<string, unknown>;
  return Object.fromEntries(Object.entries(result).filter(([key]) => !/_s$|_per_s$/.test(key)));
}
