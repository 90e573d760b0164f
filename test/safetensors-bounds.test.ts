/**
 * Bounded header parsing (issue 16, defect 1; issue 8, item 6): long numbers are judged by their
 * digit count before any conversion, errors quote a bounded part of a shape, and reading a
 * hostile header — invalid or valid, through `knobs inspect` too — stays within 8× the header's
 * bytes plus a fixed allowance, measured in a child process. The full-size (100 MB) versions and
 * a random property run are in test/slow/header-bounds.ts (`npm run test:slow`).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError } from '../src/errors.js';
import { tensor } from '../src/ops/index.js';
import { readSafetensorsHeader, saveSafetensors } from '../src/formats/safetensors.js';
import { formatInspect, inspectCommand, inspectReport } from '../src/cli/inspect.js';
import { MAX_QUOTED_DIMS, parseSafetensorsHeader } from '../src/formats/safetensors-header.js';
import { IndexedMap, StringIndex, StringList } from '../src/formats/compact-tables.js';
import { JsonNumber, JsonParseError, parseStrictJson } from '../src/formats/strict-json.js';
import { hostileFile } from './harness/hostile-headers.js';
import { describeMeasured, measureHeader } from './harness/header-memory.js';

function rejection(bytes: Uint8Array): FormatError {
  try {
    parseSafetensorsHeader(bytes, bytes.length);
  } catch (err) {
    assert.ok(err instanceof FormatError, String(err));
    return err;
  }
  return assert.fail('expected a FormatError');
}

describe('safetensors header: numbers and messages stay bounded', () => {
  it('refuses a 1,000,000-digit dimension from its digit count, without converting the digits', () => {
    const real = globalThis.BigInt;
    // Any conversion of a long digit string (BigInt(text), the old path) trips this.
    globalThis.BigInt = new Proxy(real, {
      apply(target, thisArg, args: unknown[]) {
        if (typeof args[0] === 'string' && args[0].length > 32)
          throw new Error(`BigInt of a ${args[0].length}-character string`);
        return Reflect.apply(target, thisArg, args);
      },
    });
    let err: FormatError;
    try {
      err = rejection(hostileFile({ kind: 'long_number', count: 1_000_000 }));
    } finally {
      globalThis.BigInt = real;
    }
    assert.equal(err.rule, 'integer_too_large');
    assert.equal(err.details['digits'], 1_000_000);
    assert.ok(err.message.length < 600, `message of ${err.message.length} characters`);
  });

  it('quotes at most a few dimensions of a million-dimension shape', () => {
    const err = rejection(hostileFile({ kind: 'zero_dims', count: 1_000_000 }));
    assert.equal(err.rule, 'size_mismatch');
    assert.ok(err.message.length < 600, `message of ${err.message.length} characters`);
    assert.match(err.message, /\[0, 0, 0, 0, 0, 0, 0, 0, … \(1,000,000 dimensions\)\]/);
    assert.equal((err.details['shape'] as number[]).length, MAX_QUOTED_DIMS);
    assert.equal(err.details['rank'], 1_000_000);
  });

  it('reads a valid million-dimension shape of ones exactly', () => {
    const bytes = hostileFile({ kind: 'unit_dims', count: 1_000_000 });
    const e = parseSafetensorsHeader(bytes, bytes.length).entries.get('a')!;
    assert.equal(e.shape.length, 1_000_000);
    assert.equal(e.numel, 1);
  });

  it('checks element counts exactly between 2^53 and 2^64', () => {
    const file = (shape: string, end: string, data = 0) => {
      const json = `{"a":{"dtype":"U8","shape":[${shape}],"data_offsets":[0,${end}]}}`;
      const out = new Uint8Array(8 + json.length + data);
      new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
      out.set(new TextEncoder().encode(json), 8);
      return out;
    };
    // 2^32 × 2^21 × 1 × 0: passes 2^53 on the way, then 0 — valid and empty.
    const empty = file('4294967296,2097152,1,0', '0');
    assert.equal(parseSafetensorsHeader(empty, empty.length).entries.get('a')!.numel, 0);
    // 2^32 × 2^32 = 2^64 overflows even though a 0 follows (upstream stops at the first overflow).
    assert.equal(rejection(file('4294967296,4294967296,0', '0')).rule, 'shape_overflow');
    // 2^33 × 2^27 = 2^60 bytes fits 64 bits (as bits too) but is no safe integer: no range matches.
    const err = rejection(file('8589934592,134217728', '8', 8));
    assert.equal(err.rule, 'size_mismatch');
    assert.equal(err.details['expectedBytes'], (2n ** 60n).toString());
    // 2^33 × 2^30 elements of 8 bits is 2^66 bits.
    assert.equal(rejection(file('8589934592,1073741824', '8', 8)).rule, 'shape_overflow');
  });
});

describe('compact tables', () => {
  it('StringIndex numbers strings, finds them and refuses repeats, prototype names included', () => {
    const index = new StringIndex();
    const names = ['__proto__', 'constructor', '', 'a', 'é😀', ...Array.from({ length: 5000 }, (_, i) => `t${i}`)];
    names.forEach((n, i) => assert.equal(index.add(n), i));
    for (const n of names) assert.equal(index.add(n), -1);
    names.forEach((n, i) => {
      assert.equal(index.indexOf(n), i);
      assert.equal(index.key(i), n);
    });
    assert.equal(index.indexOf('t5000'), -1);
    assert.equal(index.size, names.length);
  });

  it('IndexedMap behaves as a read-only Map in the given order', () => {
    const index = new StringIndex();
    for (const k of ['x', 'y', 'z']) index.add(k);
    const map = new IndexedMap(index, (i) => i * 10, Uint32Array.from([2, 0, 1]));
    assert.deepEqual(
      [...map],
      [
        ['z', 20],
        ['x', 0],
        ['y', 10],
      ],
    );
    assert.deepEqual([...map.keys()], ['z', 'x', 'y']);
    assert.deepEqual([...map.values()], [20, 0, 10]);
    assert.equal(map.get('y'), 10);
    assert.equal(map.get('w'), undefined);
    assert.equal(map.has('x') && !map.has('constructor'), true);
    const seen: string[] = [];
    map.forEach((v, k) => seen.push(`${k}${v}`));
    assert.deepEqual(seen, ['z20', 'x0', 'y10']);
    assert.deepEqual(
      new Map(map),
      new Map([
        ['z', 20],
        ['x', 0],
        ['y', 10],
      ]),
    );
  });

  it("a header's maps are Maps: read-only, and its metadata saves back as it is", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'knobs-bounds-'));
    try {
      const path = join(dir, 'a.safetensors');
      await saveSafetensors(
        path,
        { w: tensor([1, 2]) },
        new Map([
          ['format', 'pt'],
          ['__proto__', 'x'],
        ]),
      );
      const header = await readSafetensorsHeader(path);
      assert.ok(header.metadata instanceof Map && header.entries instanceof Map);
      assert.throws(() => (header.metadata as Map<string, string>).set('k', 'v'), TypeError);
      await saveSafetensors(join(dir, 'b.safetensors'), { w: tensor([1, 2]) }, header.metadata);
      assert.deepEqual(
        [...(await readSafetensorsHeader(join(dir, 'b.safetensors'))).metadata!],
        [
          ['format', 'pt'],
          ['__proto__', 'x'],
        ],
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('StringList returns each string across full and pending chunks', () => {
    const list = new StringList();
    const strings = Array.from({ length: 20_000 }, (_, i) => (i % 7 === 0 ? '' : `s${i}${'é😀'.repeat(i % 3)}`));
    for (const s of strings) list.push(s);
    assert.equal(list.length, strings.length);
    strings.forEach((s, i) => assert.equal(list.at(i), s));
  });
});

describe('knobs inspect writes in chunks what the report says', () => {
  it('--json equals JSON.stringify(inspectReport) and the table equals formatInspect, over many chunks', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'knobs-bounds-'));
    try {
      const path = join(dir, 'many.safetensors');
      const tensors = new Map(
        Array.from({ length: 9000 }, (_, i) => [`t${i}\u0007`, tensor(i % 3 === 0 ? [i] : [[i, 1]], { dtype: 'f32' })]),
      );
      await saveSafetensors(
        path,
        tensors,
        new Map([
          ['format', 'pt'],
          ['note', 'a\nb'],
        ]),
      );
      const report = await inspectReport(path);
      for (const [flags, expected] of [
        [['--json'], `${JSON.stringify(report)}\n`],
        [[], formatInspect(report)],
      ] as const) {
        const chunks: string[] = [];
        await inspectCommand.run([path, ...flags], { stdout: (t) => chunks.push(t), stderr: () => {}, isTTY: false });
        assert.ok(chunks.length > 3, `${chunks.length} chunks`);
        assert.equal(chunks.join(''), expected);
      }
      assert.equal(report.parameterCount, 3000 + 6000 * 2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('strict JSON over bytes', () => {
  it('parseStrictJson still reports positions in characters and refuses raw lone surrogates', () => {
    assert.throws(
      () => parseStrictJson('{"é😀":1,}', 4),
      (e: unknown) => e instanceof JsonParseError && e.position === 9 && /character 9$/.test(e.message),
    );
    assert.throws(() => parseStrictJson('"\ud800"', 4), JsonParseError);
    assert.deepEqual(
      parseStrictJson('{"a":[1,{"b":null}],"é":"\\u00e9"}', 4),
      new Map<string, unknown>([
        ['a', [new JsonNumber('1'), new Map([['b', null]])]],
        ['é', 'é'],
      ]),
    );
  });
});

describe('safetensors header: memory stays within 8× the header (child process)', () => {
  const cases = [
    { c: { kind: 'zero_dims', count: 6_000_000 }, mode: 'header' },
    { c: { kind: 'empty_tensors', count: 200_000 }, mode: 'header' },
    { c: { kind: 'metadata_keys', count: 1_200_000 }, mode: 'header' },
    { c: { kind: 'empty_tensors', count: 300_000 }, mode: 'inspect' },
    { c: { kind: 'empty_tensors', count: 300_000 }, mode: 'inspect-json' },
  ] as const;
  for (const { c, mode } of cases) {
    it(`${mode}: ${c.kind} × ${c.count.toLocaleString('en-US')}`, async () => {
      const m = await measureHeader(c, mode);
      assert.equal(m.outcome, c.kind === 'zero_dims' ? 'size_mismatch' : 'ok', describeMeasured(c, m));
      assert.ok(m.extraBytes <= m.allowedBytes, describeMeasured(c, m));
    });
  }
});
