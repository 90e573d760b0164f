/** `knobs serve` as a user runs it, for the tests: a child process on a free loopback port. */
import { type CliRun, startCli } from './cli.js';

/** Starts `knobs serve ARGS --name tiny --insecure-no-auth --port 0`; resolves once it printed its url. */
export async function startServe(args: readonly string[]): Promise<{ url: string; stop: () => Promise<CliRun> }> {
  const { child, done } = startCli(['serve', ...args, '--name', 'tiny', '--insecure-no-auth', '--port', '0']);
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve((JSON.parse(d.toString()) as { url: string }).url));
    void done.then((run) => reject(new Error(`serve exited ${run.code}: ${run.stderr}`)));
  });
  return {
    url,
    stop: () => {
      child.kill('SIGTERM');
      return done;
    },
  };
}
