/**
 * Freezing by name: which parameters a fine-tune updates, chosen with `trainable` / `frozen` glob
 * lists over `stateDict()` names (`*` within one dotted segment, `**` across segments).
 *
 * Rules (issue 11): with a `trainable` list, only what it matches is trained; without one,
 * everything is. `frozen` applies after `trainable`, so it can carve exceptions out of it. Every
 * pattern must match at least one parameter (a misspelt pattern would otherwise change nothing
 * silently), and the result must leave something to train.
 *
 * A frozen parameter gets `requiresGrad = false`: backward computes no gradient for it, and the
 * optimizers (src/optim/optimizer.ts, `namedParamsOf`) take only parameters that require grad
 * from a module, so they keep no state for it either.
 */
import { ArgumentError } from '../errors.js';
import { type Module, nameMatcher } from '../nn/module.js';
import type { Tensor } from '../tensor.js';

export interface FreezeSpec {
  /** Globs of the parameters to train; absent: every parameter. */
  trainable?: readonly string[];
  /** Globs of the parameters not to train, applied after `trainable`. */
  frozen?: readonly string[];
}

export interface FreezeResult {
  /** Parameter names (first registered name of each tensor) that train. */
  trainable: string[];
  /** Parameter names that are frozen. */
  frozen: string[];
}

/**
 * Every name under which each parameter appears in `stateDict()` (a tied weight has several),
 * keyed by the parameter's first name. Buffers are not parameters and are left out.
 */
function parameterAliases(model: Module): Map<string, { param: Tensor; names: string[] }> {
  const byStorage = new Map<unknown, { param: Tensor; names: string[] }>();
  const out = new Map<string, { param: Tensor; names: string[] }>();
  for (const [name, param] of model.namedParameters()) {
    const entry = { param, names: [] as string[] };
    byStorage.set(param.storage, entry);
    out.set(name, entry);
  }
  for (const [name, t] of model.stateDict()) byStorage.get(t.storage)?.names.push(name);
  return out;
}

function checkList(list: unknown, field: string): readonly string[] {
  if (!Array.isArray(list) || list.length === 0 || list.some((p) => typeof p !== 'string' || p === '')) {
    throw new ArgumentError(
      `${field} must be a non-empty list of glob strings over parameter names (e.g. ["h.*.attn.**"])`,
      { field },
    );
  }
  return list as readonly string[];
}

/** Applies a FreezeSpec to `model` (see the file comment). Throws ArgumentError naming a pattern that matches nothing. */
export function applyFreeze(model: Module, spec: FreezeSpec): FreezeResult {
  const params = parameterAliases(model);
  const example = [...params.values()]
    .slice(0, 4)
    .flatMap((e) => e.names.slice(0, 1))
    .join(', ');
  const select = (pattern: string, field: string): Set<string> => {
    const match = nameMatcher(pattern);
    const hits = new Set<string>();
    for (const [first, { names }] of params) if (names.some(match)) hits.add(first);
    if (hits.size === 0) {
      throw new ArgumentError(
        `${field}: the pattern ${JSON.stringify(pattern)} matches no parameter; names look like ${example} (\`*\` spans one dotted segment, \`**\` any number)`,
        { field, pattern },
      );
    }
    return hits;
  };
  const train = new Set<string>();
  if (spec.trainable === undefined) for (const name of params.keys()) train.add(name);
  else
    for (const pattern of checkList(spec.trainable, 'trainable'))
      for (const n of select(pattern, 'trainable')) train.add(n);
  if (spec.frozen !== undefined) {
    for (const pattern of checkList(spec.frozen, 'frozen')) for (const n of select(pattern, 'frozen')) train.delete(n);
  }
  if (train.size === 0) {
    throw new ArgumentError(
      `trainable/frozen leave no parameter to train (frozen: ${JSON.stringify(spec.frozen ?? [])}); narrow the frozen list`,
      { field: 'frozen', patterns: spec.frozen ?? [] },
    );
  }
  const result: FreezeResult = { trainable: [], frozen: [] };
  for (const [name, { param }] of params) {
    param.requiresGrad = train.has(name);
    if (!param.requiresGrad) param.grad = null;
    (param.requiresGrad ? result.trainable : result.frozen).push(name);
  }
  return result;
}
