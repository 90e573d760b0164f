/**
 * Slow: `knobs inspect --stats --json` of a ~1 GiB model — safetensors with a 320 MiB F32 tensor,
 * and a llama GGUF of 320 MiB Q8_0 matrices — in a child process stays under 1.2× its largest
 * tensor over the same command's peak on a tiny model (the bound). Reading streams, so it
 * stays far under that: at most a quarter of the largest tensor. Run with `npm run test:slow`.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { type ModelKind, checkInspectMemory } from '../harness/inspect-memory.js';

const skip = process.env['KNOBS_SLOW_TESTS'] === '1' ? false : 'slow: run with npm run test:slow';

for (const kind of ['safetensors', 'gguf'] as ModelKind[]) {
  it(
    `inspect --stats of a ~1 GiB ${kind} model stays under 1.2× its largest tensor over the baseline RSS`,
    { skip },
    async () => {
      const m = await checkInspectMemory(kind, 320);
      const mib = (b: number): string => (b / 2 ** 20).toFixed(1);
      process.stderr.write(
        `inspect --stats (${kind}): model ${mib(m.total)} MiB, largest ${mib(m.largest)} MiB, peak RSS ${mib(m.peak)} MiB, ${mib(m.peak - m.baseline)} MiB over the tiny model's\n`,
      );
      assert.ok(m.total >= 960 * 2 ** 20);
      assert.ok(
        m.peak - m.baseline <= m.largest / 4,
        `streaming should need far less than the largest tensor, grew ${mib(m.peak - m.baseline)} MiB`,
      );
    },
  );
}
