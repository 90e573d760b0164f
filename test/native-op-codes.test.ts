/**
 * The op codes TypeScript passes to the addon (src/backends/native/index.ts) must be the enum
 * values of native/kernels.h: a mismatch would run the wrong kernel with no error. The header is
 * read as text, so this runs without a compiler or a built addon.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { BINARY_CODE, REDUCE_CODE, UNARY_CODE } from '../src/backends/native/index.js';

const header = readFileSync(new URL('../../native/kernels.h', import.meta.url), 'utf8');

/** The member names of `typedef enum NAME { ... } NAME;` in declaration order (values are implicit). */
function enumMembers(name: string): string[] {
  const m = new RegExp(`typedef enum ${name} \\{([^}]*)\\} ${name};`).exec(header);
  assert.ok(m, `native/kernels.h has no typedef enum ${name}`);
  const members = m[1]!
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const mem of members)
    assert.match(
      mem,
      /^KN_[A-Z0-9_]+$/,
      `${name}: '${mem}' has an explicit value or an odd name; this test assumes implicit ones`,
    );
  return members;
}

/** KN_GELU_TANH → gelu_tanh. */
const tsName = (member: string): string => member.slice(3).toLowerCase();

function checkEnum(name: string, codes: Readonly<Record<string, number>>, countMember?: string): void {
  const members = enumMembers(name);
  const counted = countMember ? members.filter((m) => m !== countMember) : members;
  if (countMember) assert.equal(members.at(-1), countMember, `${name}: ${countMember} must come last`);
  const expected = Object.fromEntries(counted.map((m, i) => [tsName(m), i]));
  assert.deepEqual({ ...codes }, expected, `${name}: TypeScript codes differ from native/kernels.h`);
}

describe('native op codes match native/kernels.h', () => {
  it('kn_unary_op', () => checkEnum('kn_unary_op', UNARY_CODE, 'KN_UNARY_COUNT'));
  it('kn_binary_op', () => checkEnum('kn_binary_op', BINARY_CODE, 'KN_BINARY_COUNT'));
  it('kn_reduce_op', () => checkEnum('kn_reduce_op', REDUCE_CODE));
  it('catches a swapped pair', () => {
    const swapped = { ...UNARY_CODE, exp: UNARY_CODE.log, log: UNARY_CODE.exp };
    assert.throws(() => checkEnum('kn_unary_op', swapped, 'KN_UNARY_COUNT'), /differ from native\/kernels.h/);
  });
});
