/**
 * The command line in process: main() returns the exit code and prints through the io it is
 * given, so these run without spawning Node (the child-process tests cover bin.ts, signals and
 * real streams).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { COMMANDS } from '../src/cli/main.js';
import { MAIN, cliInProcess } from './harness/cli.js';

const MAIN_URL = new URL('../src/cli/main.js', import.meta.url).href;
const VECTORS = fileURLToPath(new URL('../../test/fixtures/model-signing/', import.meta.url));

/** The CommonJS modules (SQLite's binding, native addons) a fresh process has loaded after `knobs ARGS`. */
function commonJsLoadedBy(args: readonly string[]): string[] {
  const script = `
    const { main } = await import(${JSON.stringify(MAIN_URL)});
    const code = await main(${JSON.stringify(args)}, { stdout() {}, stderr(t) { process.stderr.write(t); }, isTTY: false });
    const { createRequire } = await import('node:module');
    process.stdout.write(JSON.stringify({ code, loaded: Object.keys(createRequire(import.meta.url).cache) }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));
  assert.equal(out.code, 0);
  return out.loaded as string[];
}

describe('knobs main() in process', () => {
  it('prints the usage with --help (exit 0) and without a command (exit 2)', async () => {
    const help = await cliInProcess(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: knobs COMMAND/);
    assert.equal(help.stderr, '');
    assert.equal((await cliInProcess([])).code, 2);
  });

  it('lists every command of the table with the summary the command itself gives', async () => {
    const help = (await cliInProcess(['--help'])).stdout;
    for (const entry of COMMANDS) {
      const command = await entry.load();
      assert.equal(command.name, entry.name);
      assert.equal(entry.summary, command.summary, `main.ts's summary of '${entry.name}' is not the command's own`);
      const line = help.split('\n').find((l) => l.trimStart().startsWith(`${entry.name} `));
      assert.equal(line?.endsWith(`  ${entry.summary}`), true, `knobs --help lists ${entry.name} with its summary`);
    }
  });

  it('loads only the command it runs: --help and verify leave SQLite unloaded', () => {
    const verify = ['verify', `${VECTORS}v1.1.0-elliptic-key`, '--public-key', `${VECTORS}keys/signing-key-pub.pem`];
    for (const args of [['--help'], verify]) {
      const loaded = commonJsLoadedBy(args);
      assert.deepEqual(
        loaded.filter((m) => /better-sqlite3|\.node$/.test(m)),
        [],
        `knobs ${args[0]}`,
      );
    }
    // The check can fail: keys does load SQLite.
    assert.ok(commonJsLoadedBy(['keys', '--help']).some((m) => m.includes('better-sqlite3')));
  });

  it('reports an unknown command as a usage error on stderr, stdout empty', async () => {
    const r = await cliInProcess(['frobnicate']);
    assert.deepEqual(r, {
      code: 2,
      stdout: '',
      stderr: "knobs: error [E_USAGE]: unknown command 'frobnicate'; run 'knobs --help' to list commands\n",
    });
  });

  it('rejects a bad --threads before running anything', async () => {
    const r = await cliInProcess(['info', '--threads', '0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^knobs: error \[E_USAGE\]: --threads needs a positive integer .*got "0"\n$/);
  });

  it('runs a command: info --json is one JSON object on one line', async () => {
    const r = await cliInProcess(['info', '--json']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trimEnd().split('\n').length, 1);
    const info = JSON.parse(r.stdout) as { version: string; backends: { name: string }[] };
    assert.match(info.version, /^\d+\.\d+\.\d+/);
    assert.ok(info.backends.some((b) => b.name === 'js'));
  });

  it('the executable starts node with the garbage collector on the main thread; plain node does not', () => {
    const shebang = readFileSync(MAIN, 'utf8').split('\n', 1)[0]!;
    assert.match(shebang, /^#!\/usr\/bin\/env -S node .*--single-threaded-gc/);
    // Run exactly what the kernel runs for `./bin.js info --json` (the file need not be executable here).
    const asExecutable = execFileSync('/bin/sh', ['-c', `${shebang.slice(2)} "$0" info --json`, MAIN], {
      encoding: 'utf8',
    });
    assert.equal((JSON.parse(asExecutable) as { gc: string }).gc, 'single-threaded');
    const viaNode = execFileSync(process.execPath, [MAIN, 'info', '--json'], { encoding: 'utf8' });
    assert.equal((JSON.parse(viaNode) as { gc: string }).gc, 'concurrent');
  });

  it('reports a failing command with its error code and exit 1', async () => {
    const r = await cliInProcess(['inspect', '/nonexistent/model.safetensors']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^knobs: error \[E_IO\]: /);
  });
});
