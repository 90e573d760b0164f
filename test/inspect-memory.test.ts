/**
 * `knobs inspect --stats` streams: the real command line in a child process, on a 72 MiB
 * safetensors model and a ~78 MiB Q8_0 GGUF, grows its peak resident set by at most 1.2× the
 * largest tensor (24 MiB) over the same command on a tiny model. test/slow/inspect-memory.ts does
 * the same at about 1 GiB.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { checkInspectMemory } from './harness/inspect-memory.js';

it('inspect --stats of a 72 MiB safetensors model stays under 1.2× its largest tensor over the baseline RSS; progress on stderr', async () => {
  const m = await checkInspectMemory('safetensors', 24);
  assert.equal(m.total, 3 * m.largest);
  // Over 64 MiB of data: plain progress lines (stderr is not a terminal), the last one complete.
  assert.match(m.progress, /^inspect MiB 72\/72 tensors 6 eta /m);
  // Progress moves within the model, chunk by chunk, not only at its end.
  assert.match(m.progress, /^inspect MiB [1-9]\d?\/72 tensors [1-5] eta /m);
});

it('inspect --stats of a ~78 MiB Q8_0 GGUF stays under 1.2× its largest tensor over the baseline RSS', async () => {
  const m = await checkInspectMemory('gguf', 24);
  assert.match(m.progress, /^inspect MiB 79\/79 tensors 6 eta /m);
});
