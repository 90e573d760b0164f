/**
 * `inspect --stats` streams: in a child process, the resident set while it reads a 48 MiB model
 * grows by at most 1.2× the largest tensor (16 MiB) over the baseline. test/slow/inspect-memory.ts
 * does the same at about 1 GiB.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { checkInspectMemory } from './harness/inspect-memory.js';

it('inspect --stats of a 48 MiB model stays under 1.2× its largest tensor over the baseline RSS', async () => {
  const m = await checkInspectMemory(16);
  assert.equal(m.total, 3 * m.largest);
});
