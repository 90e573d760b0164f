/**
 * An independent safetensors validator, written from the spec in shared/interop.md (upstream's
 * reader rules plus knobs' stricter ones: duplicate keys, unknown entry fields, integers above
 * 2^53 − 1, NUL padding, lone surrogate escapes) and sharing no code with src/formats. It is the
 * judge in the seeded fuzz: knobs must accept exactly the files this accepts. Slow and simple on
 * purpose: a recursive-descent JSON reader over the decoded text and BigInt arithmetic throughout.
 */

export interface SpecTensor {
  name: string;
  dtype: string;
  shape: bigint[];
  begin: bigint;
  end: bigint;
}

export type SpecVerdict =
  { ok: true; tensors: SpecTensor[]; metadata: Array<[string, string]> | null } | { ok: false; reason: string };

const BITS: Record<string, number> = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  F64: 64,
  I64: 64,
  U64: 64,
  C64: 64,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  F6_E2M3: 6,
  F6_E3M2: 6,
  F4: 4,
};
const LIMIT_64 = 2n ** 64n;
const LARGEST_EXACT = 2n ** 53n - 1n;

class Reject extends Error {}
const reject = (reason: string): never => {
  throw new Reject(reason);
};

// ---- a minimal strict JSON reader ----------------------------------------------------------

type J =
  | { t: 'str'; v: string }
  | { t: 'num'; raw: string }
  | { t: 'lit'; v: boolean | null }
  | { t: 'arr'; v: J[] }
  | { t: 'obj'; v: Array<[string, J]> };

function readJson(text: string): J {
  let i = 0;
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const str = (): string => {
    i++; // opening quote
    let out = '';
    for (;;) {
      if (i >= text.length) reject('unterminated string');
      const ch = text[i]!;
      if (ch === '"') {
        i++;
        return out;
      }
      if (ch.charCodeAt(0) < 0x20) reject('control character in a string');
      if (ch !== '\\') {
        out += ch;
        i++;
        continue;
      }
      const e = text[i + 1];
      i += 2;
      const simple: Record<string, string> = {
        '"': '"',
        '\\': '\\',
        '/': '/',
        b: '\b',
        f: '\f',
        n: '\n',
        r: '\r',
        t: '\t',
      };
      if (e !== undefined && e in simple) {
        out += simple[e];
        continue;
      }
      if (e !== 'u') reject('bad escape');
      const unit = () => {
        const h = text.slice(i, i + 4);
        if (!/^[0-9a-fA-F]{4}$/.test(h)) reject('bad \\u escape');
        i += 4;
        return parseInt(h, 16);
      };
      const u = unit();
      if (u >= 0xdc00 && u <= 0xdfff) reject('lone low surrogate');
      if (u >= 0xd800 && u <= 0xdbff) {
        if (text.slice(i, i + 2) !== '\\u') reject('lone high surrogate');
        i += 2;
        const lo = unit();
        if (lo < 0xdc00 || lo > 0xdfff) reject('lone high surrogate');
        out += String.fromCharCode(u, lo);
      } else {
        out += String.fromCharCode(u);
      }
    }
  };
  const value = (depth: number): J => {
    if (depth > 64) reject('too deep');
    ws();
    const ch = text[i];
    if (ch === '"') return { t: 'str', v: str() };
    if (ch === '{') {
      i++;
      const members: Array<[string, J]> = [];
      const seen = new Set<string>();
      ws();
      if (text[i] === '}') {
        i++;
        return { t: 'obj', v: members };
      }
      for (;;) {
        ws();
        if (text[i] !== '"') reject('expected a key');
        const k = str();
        if (seen.has(k)) reject(`duplicate key ${k}`);
        seen.add(k);
        ws();
        if (text[i] !== ':') reject('expected :');
        i++;
        members.push([k, value(depth + 1)]);
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === '}') {
          i++;
          return { t: 'obj', v: members };
        } else reject('expected , or }');
      }
    }
    if (ch === '[') {
      i++;
      const items: J[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return { t: 'arr', v: items };
      }
      for (;;) {
        items.push(value(depth + 1));
        ws();
        if (text[i] === ',') i++;
        else if (text[i] === ']') {
          i++;
          return { t: 'arr', v: items };
        } else reject('expected , or ]');
      }
    }
    const num = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400));
    if (num) {
      i += num[0].length;
      if (num[0].length >= 400) reject('number too long for the judge');
      return { t: 'num', raw: num[0] };
    }
    for (const [word, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return { t: 'lit', v };
      }
    }
    return reject('expected a value');
  };
  const root = value(0);
  ws();
  if (i !== text.length) reject('text after the JSON value');
  return root;
}

// ---- the rules -------------------------------------------------------------------------------

function plainInteger(j: J): bigint {
  if (j.t !== 'num' || !/^(0|[1-9]\d*)$/.test(j.raw)) reject('not a plain non-negative integer');
  const v = BigInt((j as { raw: string }).raw);
  if (v > LARGEST_EXACT) reject('integer above 2^53 - 1');
  return v;
}

function judge(file: Uint8Array): SpecVerdict {
  if (file.length < 8) reject('shorter than 8 bytes');
  const n = new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true);
  if (n > 100_000_000n) reject('header length over 100,000,000');
  if (8n + n > BigInt(file.length)) reject('header past the end of the file');
  const headerBytes = file.subarray(8, 8 + Number(n));
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return reject('header is not UTF-8');
  }
  if (text[0] !== '{') reject('header does not start with {');
  const root = readJson(text);
  if (root.t !== 'obj') reject('header is not an object');
  let metadata: Array<[string, string]> | null = null;
  const tensors: SpecTensor[] = [];
  for (const [key, value] of (root as { v: Array<[string, J]> }).v) {
    if (key === '__metadata__') {
      if (value.t === 'lit' && value.v === null) continue;
      if (value.t !== 'obj') reject('metadata is not an object');
      metadata = (value as { v: Array<[string, J]> }).v.map(([k, v]) =>
        v.t === 'str' ? [k, v.v] : reject('metadata value is not a string'),
      );
      continue;
    }
    if (value.t !== 'obj') reject('entry is not an object');
    const fields = new Map((value as { v: Array<[string, J]> }).v);
    for (const f of fields.keys()) if (!['dtype', 'shape', 'data_offsets'].includes(f)) reject(`unknown field ${f}`);
    const dtype = fields.get('dtype');
    const shape = fields.get('shape');
    const offsets = fields.get('data_offsets');
    if (dtype?.t !== 'str' || shape?.t !== 'arr' || offsets?.t !== 'arr')
      return reject('entry field missing or of the wrong type');
    if (!Object.hasOwn(BITS, dtype.v)) reject(`unknown dtype ${dtype.v}`);
    const dims = shape.v.map(plainInteger);
    const range = offsets.v.map(plainInteger);
    if (range.length !== 2) reject('data_offsets is not two numbers');
    tensors.push({ name: key, dtype: dtype.v, shape: dims, begin: range[0]!, end: range[1]! });
  }
  // Upstream's layout rules, on the tensors sorted by [begin, end] (a stable sort).
  const sorted = tensors
    .map((t, k) => ({ t, k }))
    .sort((a, b) =>
      a.t.begin !== b.t.begin
        ? a.t.begin < b.t.begin
          ? -1
          : 1
        : a.t.end !== b.t.end
          ? a.t.end < b.t.end
            ? -1
            : 1
          : a.k - b.k,
    )
    .map((x) => x.t);
  let at = 0n;
  for (const t of sorted) {
    if (t.begin !== at || t.end < t.begin) reject('tensors do not tile the buffer');
    at = t.end;
    let count = 1n;
    for (const d of t.shape) {
      count *= d;
      if (count >= LIMIT_64) reject('element count overflows 64 bits');
    }
    const bits = count * BigInt(BITS[t.dtype]!);
    if (bits >= LIMIT_64) reject('bit count overflows 64 bits');
    if (bits % 8n !== 0n) reject('sub-byte tensor does not fill whole bytes');
    if (t.end - t.begin !== bits / 8n) reject('byte range does not match the shape');
  }
  if (8n + n + at !== BigInt(file.length)) reject('buffer does not end at the end of the file');
  return { ok: true, tensors: sorted, metadata };
}

/** Whether `file` is a valid safetensors file by the spec, and what it holds when it is. */
export function judgeSafetensors(file: Uint8Array): SpecVerdict {
  try {
    return judge(file);
  } catch (err) {
    if (err instanceof Reject) return { ok: false, reason: err.message };
    throw err;
  }
}
