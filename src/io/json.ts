/**
 * JSON from files, with its nesting bounded. JSON.parse itself copes with any depth, but what
 * comes after it does not: JSON.stringify, structuredClone, a recursive comparison or a zod
 * schema overflow the stack on a value nested 200,000 deep (a 400 kB config.json), which ended in
 * `knobs: internal error`. No file knobs reads needs more than a few levels, so a text nested deeper
 * than MAX_JSON_DEPTH is refused before it is parsed.
 */
import { FormatError } from '../errors.js';

export const MAX_JSON_DEPTH = 128;

/** The deepest nesting of arrays and objects in JSON `text` (brackets inside strings do not count). */
export function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) max = Math.max(max, ++depth);
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

/**
 * Parses JSON read from `file`; an invalid or too deeply nested text is a FormatError with `rule`
 * (the caller's rule for "not JSON", e.g. `not_json`, `recipe_not_json`).
 */
export function parseJsonFile(text: string, file: string, rule: string): unknown {
  const depth = jsonDepth(text);
  if (depth > MAX_JSON_DEPTH) {
    throw new FormatError(
      rule,
      `${file}: JSON nested ${depth} levels deep, more than the ${MAX_JSON_DEPTH} knobs reads; is it the right file?`,
      { file, path: file, depth },
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FormatError(rule, `${file} is not JSON: ${(err as Error).message}`, { file, path: file });
  }
}
