/**
 * The command line in process: main() returns the exit code and prints through the io it is
 * given, so these run without spawning Node (the child-process tests cover bin.ts, signals and
 * real streams).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cliInProcess } from './harness/cli.js';

describe('knobs main() in process', () => {
  it('prints the usage with --help (exit 0) and without a command (exit 2)', async () => {
    const help = await cliInProcess(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: knobs COMMAND/);
    assert.equal(help.stderr, '');
    assert.equal((await cliInProcess([])).code, 2);
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

  it('reports a failing command with its error code and exit 1', async () => {
    const r = await cliInProcess(['inspect', '/nonexistent/model.safetensors']);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^knobs: error \[E_IO\]: /);
  });
});
