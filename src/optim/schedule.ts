/**
 * Learning-rate schedules: functions from the step index (0 for the first update) to the lr.
 * Call `optimizer.setLr(schedule(step))` before each `optimizer.step()`.
 */
import { ArgumentError } from '../errors.js';

export type Schedule = (step: number) => number;

export interface CosineScheduleOptions {
  /** Peak lr, reached at the end of warm-up. */
  maxLr: number;
  /** Floor reached at totalSteps and kept after (default 0). */
  minLr?: number;
  /** Linear warm-up steps (default 0). */
  warmupSteps?: number;
  /** The step at which the cosine reaches minLr. */
  totalSteps: number;
}

function checkSteps(who: string, warmup: number, total?: number): void {
  if (!Number.isInteger(warmup) || warmup < 0)
    throw new ArgumentError(`${who}: warmupSteps must be a non-negative integer, got ${warmup}`);
  if (total !== undefined && (!Number.isInteger(total) || total < warmup)) {
    throw new ArgumentError(`${who}: totalSteps must be an integer ≥ warmupSteps (${warmup}), got ${total}`);
  }
}

/** Linear warm-up, lr(s) = maxLr·(s + 1)/warmupSteps for s < warmupSteps (llm.c's form: the last warm-up step is at maxLr). */
function warmupLr(maxLr: number, warmup: number, step: number): number | null {
  return step < warmup ? (maxLr * (step + 1)) / warmup : null;
}

/**
 * Linear warm-up then cosine decay to minLr (nanoGPT / llm.c):
 *   s < W:       maxLr·(s+1)/W
 *   W ≤ s ≤ N:   minLr + ½(1 + cos(π·(s−W)/(N−W)))·(maxLr − minLr)
 *   s > N:       minLr
 * With W = 0 this is torch's CosineAnnealingLR(T_max = N, eta_min = minLr).
 */
export function cosineSchedule(opts: CosineScheduleOptions): Schedule {
  const { maxLr, minLr = 0, warmupSteps = 0, totalSteps } = opts;
  checkSteps('cosineSchedule', warmupSteps, totalSteps);
  if (!(maxLr >= 0 && minLr >= 0 && minLr <= maxLr))
    throw new ArgumentError(`cosineSchedule: need 0 ≤ minLr ≤ maxLr, got minLr ${minLr}, maxLr ${maxLr}`);
  return (step) => {
    const w = warmupLr(maxLr, warmupSteps, step);
    if (w !== null) return w;
    if (step >= totalSteps) return minLr;
    const ratio = (step - warmupSteps) / (totalSteps - warmupSteps);
    return minLr + 0.5 * (1 + Math.cos(Math.PI * ratio)) * (maxLr - minLr);
  };
}

/** Linear warm-up to `lr`, then constant. */
export function constantSchedule(opts: { lr: number; warmupSteps?: number }): Schedule {
  const { lr, warmupSteps = 0 } = opts;
  checkSteps('constantSchedule', warmupSteps);
  return (step) => warmupLr(lr, warmupSteps, step) ?? lr;
}
