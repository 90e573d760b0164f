/** Numeric flag values: parseArgs gives strings; a bad one is a usage error naming the flag. */
import { UsageError } from '../errors.js';
import { QUANT_TYPES, type QuantType } from '../nn/quantized-linear.js';

/** An integer ≥ min (default 1), and ≤ max when given (`why` says where the bound comes from). */
export function positiveInt(value: unknown, flag: string, min = 1, max?: { value: number; why: string }): number {
  const n = typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min)
    throw new UsageError(`${flag} needs an integer >= ${min}, got ${String(value)}`);
  if (max !== undefined && n > max.value)
    throw new UsageError(`${flag} is at most ${max.value} (${max.why}), got ${String(value)}`);
  return n;
}

/**
 * Most new tokens one `knobs generate` call produces. Past the context the model slides its window
 * and recomputes it for every token, so a larger count only runs for hours; continue a longer text
 * by calling generate again with its end as the prompt.
 */
export const MAX_GENERATE_TOKENS = 65_536;

/** A finite number in [min, max], or (min, max] when `minExclusive`. */
export function numberIn(
  value: unknown,
  flag: string,
  min: number,
  max: number,
  opts: { minExclusive?: boolean } = {},
): number {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  const low = opts.minExclusive ? n <= min : n < min;
  if (!Number.isFinite(n) || low || n > max)
    throw new UsageError(
      `${flag} needs a number in ${opts.minExclusive ? '(' : '['}${min}, ${max}], got ${String(value)}`,
    );
  return n;
}

/** The flags that attach LoRA adapters to a base (generate, eval). */
export const ADAPTER_FLAGS = {
  adapter: { type: 'string', multiple: true },
  'allow-base-mismatch': { type: 'boolean' },
} as const;

/** The openLanguageModel / evaluateRun options those flags set. */
export function adapterOptions(values: Record<string, unknown>): { adapters: string[]; allowBaseMismatch: boolean } {
  return {
    adapters: (values.adapter as string[] | undefined) ?? [],
    allowBaseMismatch: values['allow-base-mismatch'] === true,
  };
}

export const ADAPTER_HELP = `  --adapter DIR      attach a LoRA adapter (a PEFT directory: adapter_config.json and
                     adapter_model.safetensors, e.g. made by 'knobs tune'); repeatable when the
                     adapters target different layers
  --allow-base-mismatch  load an adapter that records another base's weight digest (the
                     shapes must still fit)`;

/** --quantize TYPE (generate, eval): q8_0 or q4_0, else a usage error. */
export function quantizeFlag(value: unknown): { quantize?: QuantType } {
  if (value === undefined) return {};
  if (!(QUANT_TYPES as readonly unknown[]).includes(value))
    throw new UsageError(`--quantize must be one of ${QUANT_TYPES.join(', ')}, got '${String(value)}'`);
  return { quantize: value as QuantType };
}
