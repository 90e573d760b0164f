/**
 * Slow: `inspect --stats` of a model of about 1 GiB (largest tensor 320 MiB) in a child process
 * stays under 1.2× its largest tensor over the baseline resident set. Run with `npm run test:slow`.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { checkInspectMemory } from '../harness/inspect-memory.js';

const skip = process.env['KNOBS_SLOW_TESTS'] === '1' ? false : 'slow: run with npm run test:slow';

it(
  'inspect --stats of a ~1 GiB model stays under 1.2× its largest tensor over the baseline RSS',
  { skip },
  async () => {
    const m = await checkInspectMemory(320);
    assert.equal(m.total, 3 * m.largest);
    process.stderr.write(
      `inspect --stats: model ${(m.total / 2 ** 20).toFixed(0)} MiB, largest ${(m.largest / 2 ** 20).toFixed(0)} MiB, RSS grew ${((m.peak - m.baseline) / 2 ** 20).toFixed(1)} MiB\n`,
    );
  },
);
