/**
 * Seeded fuzz of the safetensors reader: a few thousand files mutated deterministically from the
 * committed seeds (test/fixtures/safetensors), each judged by an independent validator written
 * from the spec (test/harness/safetensors-spec.ts). knobs must accept exactly the files the judge
 * accepts, read the same tensors and metadata from them, and refuse the others with a FormatError
 * naming one of its rules — never another error.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { FormatError } from '../src/errors.js';
import { SAFETENSORS_DTYPES, SAFETENSORS_RULES, parseSafetensorsHeader } from '../src/formats/safetensors-header.js';
import { type SeededRandom as Rng, seededRandom as generator } from './harness/rng.js';
import { judgeSafetensors } from './harness/safetensors-spec.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/safetensors/', import.meta.url));
const SEEDS = [
  ...['torch_basic.safetensors', 'knobs_written.safetensors'].map((f) => `${FIXTURES}${f}`),
  ...readdirSync(`${FIXTURES}seeds`)
    .sort()
    .map((f) => `${FIXTURES}seeds/${f}`),
].map((path) => ({ path, bytes: new Uint8Array(readFileSync(path)) }));
const MUTANTS_PER_SEED = 700;

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Parts {
  header: string;
  data: Uint8Array;
}

function split(file: Uint8Array): Parts {
  const n = Number(new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true));
  return { header: dec.decode(file.subarray(8, 8 + n)), data: file.subarray(8 + n) };
}

/** Reassembles a file, with the length prefix matching the header (unless told otherwise). */
function join({ header, data }: Parts, length?: bigint): Uint8Array {
  const h = enc.encode(header);
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, length ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

const NUMBERS = [
  '0',
  '1',
  '2',
  '3',
  '4',
  '8',
  '9007199254740991',
  '9007199254740992',
  '9007199254740993',
  '18446744073709551615',
  '18446744073709551616',
  '9'.repeat(40),
  '-1',
  '1.0',
  '1e3',
  '01',
  '4294967296',
  '-0',
  '1E0',
];
const CHARS = [
  '{',
  '}',
  '[',
  ']',
  '"',
  ':',
  ',',
  '0',
  '9',
  '-',
  '.',
  'e',
  ' ',
  '\n',
  '\\',
  '\\u0000',
  '\0',
  'é',
  '\u{1F600}',
  '\\ud800',
  'null',
];

/** Token-level and structural edits of the header text: most stay valid JSON. */
const TEXT_MUTATIONS: Array<(h: string, r: Rng) => string> = [
  // replace a number
  (h, r) => {
    const spans = [...h.matchAll(/-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g)];
    if (spans.length === 0) return h;
    const m = r.pick(spans);
    return h.slice(0, m.index) + r.pick(NUMBERS) + h.slice(m.index! + m[0].length);
  },
  // change a dtype (often to one of the same width, which stays valid)
  (h, r) =>
    h.replace(
      /"(BOOL|U8|I8|I16|U16|F16|BF16|I32|U32|F32|F64|I64|U64|C64|F8_\w+|F6_\w+|F4)"/,
      () => `"${r.next() < 0.9 ? r.pick(SAFETENSORS_DTYPES) : r.pick(['f32', 'F128', 'U4', ''])}"`,
    ),
  // insert a character or short token
  (h, r) => {
    const at = r.int(h.length + 1);
    return h.slice(0, at) + r.pick(CHARS) + h.slice(at);
  },
  // delete a run of characters
  (h, r) => {
    const at = r.int(h.length);
    return h.slice(0, at) + h.slice(at + 1 + r.int(4));
  },
  // whitespace between tokens (valid)
  (h, r) => h.replace(/[,:]/g, (c) => (r.next() < 0.3 ? `${c}${r.pick([' ', '\n', '\t', '\r\n '])}` : c)),
  // NUL or space padding at the end
  (h, r) => `${h.trimEnd()}${r.pick(['\0', '\0\0\0\0', '    ', ' \0', '\t'])}`,
  // escape a character of a key (same name, valid)
  (h, r) =>
    h.replace(/"([a-z])/, (_m, c: string) =>
      r.next() < 0.5
        ? `"\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
        : `"\\u00${c.charCodeAt(0).toString(16).toUpperCase()}`,
    ),
  // add an unknown field, or repeat one
  (h, r) =>
    h.replace(/"dtype"/, r.pick(['"extra":1,"dtype"', '"dtype":"U8","dtype"', '"DTYPE"', '"offsets":[0,0],"dtype"'])),
  // add a tensor (empty, so often valid), or repeat a name
  (h, r) => {
    const name = r.next() < 0.5 ? 'zz_new' : (/"([^"\\]+)":\{"dtype"/.exec(h)?.[1] ?? 'zz_new');
    const extra = `"${name}":{"dtype":"${r.pick(SAFETENSORS_DTYPES)}","shape":[${r.pick(['0', '0,5', '', '1'])}],"data_offsets":[0,0]}`;
    return h.replace(/^\{\s*/, (open) => `${open}${extra}${h.trim() === '{}' ? '' : ','}`);
  },
  // metadata shapes
  (h, r) =>
    h.replace(
      /^\{/,
      `{"__metadata__":${r.pick(['null', '{}', '{"k":"v"}', '{"k":1}', '[]', '"x"', '{"k":null}', '{"a":"1","a":"2"}'])}${h.trim() === '{}' ? '' : ','}`,
    ),
  // swap two dimensions of a shape (same element count, valid)
  (h) => h.replace(/"shape":\s*\[(\d+),\s*(\d+)\]/, '"shape":[$2,$1]'),
  // nest or unwrap a value
  (h, r) =>
    h.replace(
      r.pick([/"shape":\s*\[/, /"data_offsets":\s*\[/, /"dtype":\s*/]),
      (m) => `${m}${r.pick(['[', '{', '"'])}`,
    ),
];

/** Byte-level edits of the whole file, including the length prefix and the data. */
const BYTE_MUTATIONS: Array<(f: Uint8Array, r: Rng) => Uint8Array> = [
  (f, r) => {
    const out = f.slice();
    out[r.int(out.length)]! ^= 1 << r.int(8);
    return out;
  },
  (f, r) => {
    const out = f.slice();
    out[8 + r.int(Math.max(1, out.length - 8))] = r.pick([0x00, 0x22, 0x5c, 0x7b, 0x7d, 0x80, 0xc0, 0xed, 0xff]);
    return out;
  },
  (f, r) => f.subarray(0, r.int(f.length)),
  (f, r) => {
    const out = new Uint8Array(f.length + 1 + r.int(8));
    out.set(f);
    return out;
  },
  (f, r) => {
    const out = f.slice();
    const view = new DataView(out.buffer);
    const n = view.getBigUint64(0, true);
    view.setBigUint64(
      0,
      r.pick([n + 1n, n - 1n, n + 8n, 0n, 100_000_001n, 2n ** 64n - 1n, BigInt(f.length - 8)]) & (2n ** 64n - 1n),
      true,
    );
    return out;
  },
];

function mutate(seed: Uint8Array, r: Rng): Uint8Array {
  let file = seed;
  const rounds = 1 + r.int(3);
  for (let k = 0; k < rounds; k++) {
    if (r.next() < 0.7) {
      const parts = split(file);
      file = join({ header: r.pick(TEXT_MUTATIONS)(parts.header, r), data: parts.data });
      // Keep the data the right size for the new header sometimes, so layout rules are reached.
    } else {
      file = r.pick(BYTE_MUTATIONS)(file, r);
    }
    if (
      file.length < 8 ||
      Number(new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true)) > file.length - 8
    )
      break;
  }
  return file;
}

describe('safetensors seeded fuzz against an independent validator', () => {
  it('every seed is valid by both', () => {
    for (const { path, bytes } of SEEDS) {
      assert.equal(judgeSafetensors(bytes).ok, true, path);
      parseSafetensorsHeader(bytes, bytes.length);
    }
  });

  it(`${SEEDS.length * MUTANTS_PER_SEED} mutants: knobs accepts exactly what the validator accepts`, () => {
    const counts = { accepted: 0, rejected: 0 };
    const rules = new Set<string>();
    SEEDS.forEach(({ path, bytes }, s) => {
      for (let m = 0; m < MUTANTS_PER_SEED; m++) {
        const r = generator(1 + s * 100_003 + m);
        const file = mutate(bytes, r);
        const where = `${path} mutant ${m}`;
        const verdict = judgeSafetensors(file);
        let header;
        try {
          header = parseSafetensorsHeader(file, file.length);
        } catch (err) {
          assert.ok(err instanceof FormatError, `${where}: not a FormatError: ${String(err)}`);
          assert.ok((SAFETENSORS_RULES as readonly string[]).includes(err.rule), `${where}: unknown rule ${err.rule}`);
          assert.equal(verdict.ok, false, `${where}: knobs refused a file the validator accepts (${err.message})`);
          assert.ok(err.message.length < 2000, `${where}: message of ${err.message.length} characters`);
          counts.rejected++;
          rules.add(err.rule);
          continue;
        }
        assert.ok(
          verdict.ok,
          `${where}: knobs accepted a file the validator refuses (${verdict.ok ? '' : verdict.reason})`,
        );
        counts.accepted++;
        assert.deepEqual(
          [...header.entries.values()].map((e) => [e.name, e.dtype, e.shape, e.dataOffsets]),
          verdict.tensors.map((t) => [t.name, t.dtype, t.shape.map(Number), [Number(t.begin), Number(t.end)]]),
          where,
        );
        assert.deepEqual(header.metadata && [...header.metadata], verdict.metadata, where);
      }
    });
    // The corpus must exercise both sides and most rules, or it proves little.
    assert.ok(counts.accepted >= 200, `only ${counts.accepted} mutants were valid`);
    assert.ok(counts.rejected >= 1000, `only ${counts.rejected} mutants were invalid`);
    assert.ok(rules.size >= 14, `mutants reached only ${[...rules].sort().join(', ')}`);
  });
});
