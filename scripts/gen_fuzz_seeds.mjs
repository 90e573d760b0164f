#!/usr/bin/env node
// Writes the hand-made seed files of the seeded safetensors fuzz (test/safetensors-fuzz.test.ts)
// into test/fixtures/safetensors/seeds/. They cover what writers never produce but the spec
// allows: entries out of offset order, field order, whitespace, escapes, null metadata, sub-byte
// dtypes, scalars, empty tensors, no tensors. Run by hand: `node scripts/gen_fuzz_seeds.mjs`.
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('../test/fixtures/safetensors/seeds/', import.meta.url));
mkdirSync(dir, { recursive: true });

function write(name, header, dataBytes) {
  const json = Buffer.from(header, 'utf8');
  const padded = Buffer.alloc(Math.ceil(json.length / 8) * 8, 0x20);
  json.copy(padded);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(padded.length));
  const data = Buffer.from(Array.from({ length: dataBytes }, (_, i) => (i * 37 + 11) & 0xff));
  writeFileSync(`${dir}${name}`, Buffer.concat([length, padded, data]));
}

write(
  'edge.safetensors',
  `{ "u8" : {"dtype":"U8","shape":[3],"data_offsets":[9,12]},
 "__metadata__": {"format": "pt", "__proto__": "x", "note": "caf\\u00e9"},
 "s": {"shape": [], "dtype": "F32", "data_offsets": [0, 4]},
 "e": {"dtype":"I64","shape":[0,3],"data_offsets":[4,4]},
 "f4": {"dtype":"F4","shape":[4],"data_offsets":[4,6]},
 "a\\u00e9\\n": {"dtype":"F6_E2M3","shape":[4],"data_offsets":[6,9]}}`,
  12,
);
write(
  'null-metadata.safetensors',
  '{"__metadata__":null,"x":{"data_offsets":[0,4],"shape":[1,2],"dtype":"BF16"},"y":{"dtype":"BOOL","shape":[2,1,1],"data_offsets":[4,6]}}',
  6,
);
write('no-tensors.safetensors', '{}', 0);
