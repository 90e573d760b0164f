/**
 * `inspect --stats` streams: in a child process, the resident set while it reads a 72 MiB model
 * grows by at most 1.2× the largest tensor (24 MiB) over the baseline. test/slow/inspect-memory.ts
 * does the same at about 1 GiB.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { checkInspectMemory } from './harness/inspect-memory.js';

it('inspect --stats of a 72 MiB model stays under 1.2× its largest tensor over the baseline RSS; the CLI shows progress', async () => {
  const m = await checkInspectMemory(24);
  assert.equal(m.total, 3 * m.largest);
  // Over 64 MiB of data: plain progress lines (stderr is not a terminal), the last one complete.
  assert.match(m.progress, /^inspect MiB 72\/72 tensors 6 eta /m);
});
