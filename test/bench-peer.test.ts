/**
 * `npm run bench` never reports a row without its peer: with no PyTorch it exits 1 before any
 * benchmark runs, naming what is missing and how to install it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const RUN = fileURLToPath(new URL('../bench/run.js', import.meta.url));

function bench(python: string) {
  return spawnSync(process.execPath, [RUN, 'op-overhead', '--json'], {
    encoding: 'utf8',
    env: { ...process.env, KNOBS_BENCH_PYTHON: python },
    timeout: 60_000,
  });
}

describe('bench peers', () => {
  it('a missing python is an error naming the fix, with no rows printed', () => {
    const r = bench('/nonexistent/python3');
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /knobs bench: error: .*\/nonexistent\/python3.*scripts\/setup\.sh --bench.*python3-torch/);
  });

  it('a python without torch is an error naming the missing module', () => {
    // A python3 that cannot import torch: the interpreter without its site-packages (-S -I).
    const python = spawnSync('/bin/sh', ['-c', 'command -v python3'], { encoding: 'utf8' }).stdout.trim();
    assert.ok(python, 'python3 is installed by scripts/setup.sh');
    const wrapper = `${process.env.TMPDIR ?? '/tmp'}/knobs-no-torch-${process.pid}.sh`;
    spawnSync('/bin/sh', [
      '-c',
      `printf '#!/bin/sh\\nexec ${python} -S -I "$@"\\n' > ${wrapper} && chmod +x ${wrapper}`,
    ]);
    try {
      const out = bench(wrapper);
      assert.equal(out.status, 1);
      assert.match(
        out.stderr,
        /the Python module '(numpy|torch)' .* is not installed for .*scripts\/setup\.sh --bench/,
      );
    } finally {
      spawnSync('rm', ['-f', wrapper]);
    }
  });
});
