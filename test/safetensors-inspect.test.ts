/**
 * `knobs inspect`: the report, the human table, --json, and errors, in-process and end to end.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { FormatError, UsageError } from '../src/errors.js';
import { tensor } from '../src/ops/index.js';
import { saveSafetensors } from '../src/formats/safetensors.js';
import { formatInspect, inspectCommand, inspectReport } from '../src/cli/inspect.js';
import type { CliIO } from '../src/cli/command.js';

const MAIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const TORCH_FILE = fileURLToPath(new URL('../../test/fixtures/safetensors/torch_basic.safetensors', import.meta.url));
const run = promisify(execFile);

let dir: string;
let good: string;
let bad: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'knobs-inspect-'));
  good = join(dir, 'model.safetensors');
  await saveSafetensors(
    good,
    {
      'h.0.w': tensor([
        [1, 2, 3],
        [4, 5, 6],
      ]),
      'h.0.b': tensor([1, 2, 3], { dtype: 'f16' }),
      'evil\u001b[31m': { kind: 'raw', dtype: 'F8_E4M3', shape: [4], bytes: new Uint8Array(4) },
    },
    { format: 'pt' },
  );
  bad = join(dir, 'bad.safetensors');
  const header = Buffer.from('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}    ');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.byteLength));
  await writeFile(bad, Buffer.concat([len, header, Buffer.alloc(4)]));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function capture(): { io: CliIO; out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    io: {
      stdout: (t) => {
        out += t;
      },
      stderr: (t) => {
        err += t;
      },
      isTTY: false,
    },
    out: () => out,
    err: () => err,
  };
}

describe('knobs inspect (in process)', () => {
  it('reports format, tensors in file order, parameter count and metadata', async () => {
    const r = await inspectReport(good);
    assert.equal(r.format, 'safetensors');
    assert.deepEqual(
      r.tensors.map((t) => [t.name, t.dtype, t.shape, t.bytes]),
      [
        ['h.0.w', 'F32', [2, 3], 24],
        ['h.0.b', 'F16', [3], 6],
        ['evil\u001b[31m', 'F8_E4M3', [4], 4],
      ],
    );
    assert.equal(r.tensorCount, 3);
    assert.equal(r.parameterCount, 13);
    assert.equal(r.tensorBytes, 34);
    assert.deepEqual(Object.keys(r.metadata!), ['format']);
  });

  it('keeps a __proto__ metadata key as an own property', async () => {
    const path = join(dir, 'proto-meta.safetensors');
    await saveSafetensors(path, {}, new Map([['__proto__', 'x']]));
    const r = await inspectReport(path);
    assert.ok(Object.hasOwn(r.metadata!, '__proto__'));
    assert.equal(JSON.parse(JSON.stringify(r)).metadata.__proto__, 'x');
  });

  it('prints a table with control characters escaped', async () => {
    const text = formatInspect(await inspectReport(good));
    assert.match(text, /safetensors/);
    assert.match(text, /parameters: 13/);
    assert.match(text, /h\.0\.w\s+F32\s+\[2, 3\]\s+24/);
    assert.match(text, /evil\\u001b\[31m/);
    assert.ok(!text.includes('\u001b'));
    assert.match(text, /metadata:\n {2}format: pt/);
  });

  it('--json prints one JSON object on one line', async () => {
    const c = capture();
    assert.equal(await inspectCommand.run([good, '--json'], c.io), 0);
    assert.equal(c.out().trimEnd().split('\n').length, 1);
    assert.equal(JSON.parse(c.out()).parameterCount, 13);
    assert.equal(c.err(), '');
  });

  it('reads PyTorch-made files', async () => {
    const r = await inspectReport(TORCH_FILE);
    assert.equal(r.tensorCount, 15);
    assert.deepEqual(r.metadata, { format: 'pt' });
  });

  it('throws FormatError for an invalid file and UsageError without exactly one FILE', async () => {
    await assert.rejects(
      inspectCommand.run([bad], capture().io),
      (e: unknown) => e instanceof FormatError && e.rule === 'truncated',
    );
    await assert.rejects(inspectCommand.run([], capture().io), UsageError);
    await assert.rejects(inspectCommand.run([good, good], capture().io), UsageError);
  });
});

/** Whether main.ts lists the command yet (the lead wires commands into src/cli/main.ts). */
async function registered(): Promise<boolean> {
  const { stdout } = await run(process.execPath, [MAIN, '--help']);
  return /^\s+inspect\s/m.test(stdout);
}

describe('knobs inspect (end to end)', async () => {
  const skip = (await registered()) ? false : 'inspect is not registered in src/cli/main.ts yet';

  it('prints the report and exits 0', { skip }, async () => {
    const { stdout, stderr } = await run(process.execPath, [MAIN, 'inspect', good, '--json']);
    assert.equal(JSON.parse(stdout).tensorCount, 3);
    assert.equal(stderr, '');
  });

  it('an invalid file: E_FORMAT on stderr, exit 1, stdout empty', { skip }, async () => {
    await assert.rejects(
      run(process.execPath, [MAIN, 'inspect', bad]),
      (e: { code: number; stdout: string; stderr: string }) => {
        assert.equal(e.code, 1);
        assert.equal(e.stdout, '');
        assert.match(e.stderr, /^knobs: error \[E_FORMAT\]: .*invalid safetensors file \(truncated\)/);
        return true;
      },
    );
  });
});
