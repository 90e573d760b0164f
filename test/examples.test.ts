/** The examples in examples/ run as documented (README shows train-loop.mjs). */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { it } from 'node:test';

const run = promisify(execFile);
const example = (name: string): string => fileURLToPath(new URL(`../../examples/${name}`, import.meta.url));

it('examples/train-loop.mjs trains an MLP on Fashion-MNIST past 75% test accuracy', { timeout: 60_000 }, async () => {
  const { stdout } = await run(process.execPath, [example('train-loop.mjs'), '200']);
  const m = /test accuracy ([0-9.]+)%/.exec(stdout);
  assert.ok(m, stdout);
  assert.ok(Number(m[1]) > 75, stdout);
});
