/** The text form of `knobs train --profile`: per-op time per step, share, calls and GFLOP/s. */
import type { StepProfile } from '../train/trainer.js';

function cell(v: number, digits: number): string {
  return v.toFixed(digits);
}

export function formatProfile(p: StepProfile): string {
  if (p.steps === 0) return 'profile: no step after the first (warm-up) one ran; train at least 2 steps\n';
  const per = (x: number) => x / p.steps;
  const stepMs = per(p.seconds) * 1000;
  const kernelSeconds = p.ops.reduce((s, o) => s + o.seconds, 0);
  const flops = p.ops.reduce((s, o) => s + o.flops, 0);
  const rows: string[][] = p.ops.map((o) => [
    o.op,
    cell(per(o.calls), 0),
    cell(per(o.seconds) * 1000, 3),
    cell((100 * o.seconds) / p.seconds, 1),
    o.flops > 0 && o.seconds > 0 ? cell(o.flops / o.seconds / 1e9, 1) : '',
  ]);
  rows.push(
    [
      'all kernels',
      cell(per(p.ops.reduce((s, o) => s + o.calls, 0)), 0),
      cell(per(kernelSeconds) * 1000, 3),
      cell((100 * kernelSeconds) / p.seconds, 1),
      '',
    ],
    [
      'outside kernels (JS, autograd, GC, data)',
      '',
      cell(per(p.seconds - kernelSeconds) * 1000, 3),
      cell((100 * (p.seconds - kernelSeconds)) / p.seconds, 1),
      '',
    ],
    ['step', '', cell(stepMs, 3), '100.0', flops > 0 ? cell(flops / p.seconds / 1e9, 1) : ''],
  );
  const head = ['op', 'calls/step', 'ms/step', '%', 'GFLOP/s'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [
    `profile of ${p.steps} step(s) after the first (per-step means; GFLOP/s where the op has a standard count):`,
    line(head),
    line(widths.map((w) => '-'.repeat(w))),
    ...rows.map(line),
    '',
  ].join('\n');
}
