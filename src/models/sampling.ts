/**
 * Picking the next token from one row of logits: greedy, or sampling with temperature, top-k
 * and top-p (nucleus), applied in that order as Hugging Face's logits warpers do.
 */
import { ArgumentError } from '../errors.js';
import type { Generator } from '../random.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 means greedy. Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or undefined: no limit). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP (1: no limit). */
  topP?: number;
  /** Always take the most likely token (ties: the lowest id). */
  greedy?: boolean;
}

export function checkSamplingOptions(opts: SamplingOptions): void {
  const { temperature = 1, topK = 0, topP = 1 } = opts;
  if (!(temperature >= 0) || !Number.isFinite(temperature))
    throw new ArgumentError(`sampling: temperature must be a finite number ≥ 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0)
    throw new ArgumentError(`sampling: topK must be a non-negative integer, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new ArgumentError(`sampling: topP must be in (0, 1], got ${topP}`);
}

function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/** The next token id for one row of logits [V]. */
export function sampleToken(logits: ArrayLike<number>, opts: SamplingOptions, generator: Generator): number {
  const { temperature = 1, topK = 0, topP = 1 } = opts;
  if (opts.greedy || temperature === 0) return argmax(logits);
  const V = logits.length;
  // Candidates in descending order of logit (ties: lower id first, for determinism).
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  let keep = topK > 0 ? Math.min(topK, V) : V;
  const top = logits[order[0]!]! / temperature;
  const probs = new Float64Array(keep);
  let total = 0;
  for (let r = 0; r < keep; r++) {
    probs[r] = Math.exp(logits[order[r]!]! / temperature - top);
    total += probs[r]!;
  }
  if (topP < 1) {
    // Smallest prefix whose mass reaches topP (at least one token).
    let mass = 0;
    let r = 0;
    while (r < keep) {
      mass += probs[r]! / total;
      r++;
      if (mass >= topP) break;
    }
    keep = r;
    total = 0;
    for (let i = 0; i < keep; i++) total += probs[i]!;
  }
  let u = generator.random() * total;
  for (let r = 0; r < keep; r++) {
    u -= probs[r]!;
    if (u < 0) return order[r]!;
  }
  return order[keep - 1]!;
}
