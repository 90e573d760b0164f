/**
 * Module: a named tree of parameters, buffers and child modules.
 *
 * Registration is explicit: a layer calls `registerParameter`, `registerBuffer` and
 * `registerModule` in its constructor, in the order its checkpoint lists them. Dotted names
 * (`h.0.attn.c_attn.weight`) come from the registration names along the path, so a model's
 * `stateDict()` keys are exactly its checkpoint's names (docs/design.md, decision 6).
 *
 * Parameters are ordinary leaf tensors with `requiresGrad = true`. Loading a state dict copies
 * values into their storage, so a parameter keeps its identity (optimizers hold on to it).
 */
import { noGrad } from '../autograd/tape.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { assignInto, cast } from '../ops/view.js';
import { formatShape, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';

/** Selects parameters by dotted name: a glob (`*` within one segment, `**` across segments), a RegExp, or a predicate. */
export type NamePattern = string | RegExp | ((name: string) => boolean);

/** A state dict: dotted name → tensor. Plain objects are accepted wherever a Map is. */
export type StateDict = Map<string, Tensor>;
export type StateDictInput = ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>;

export interface LoadStateDictOptions {
  /** When true (default), missing and unexpected keys are errors. Shapes must always match. */
  strict?: boolean;
}

export interface LoadStateDictResult {
  missing: string[];
  unexpected: string[];
}

const MAX_LISTED = 12;

function listKeys(keys: readonly string[]): string {
  const shown = keys.slice(0, MAX_LISTED).join(', ');
  return keys.length > MAX_LISTED ? `${shown}, … and ${keys.length - MAX_LISTED} more` : shown;
}

function checkLocalName(what: string, name: string): void {
  if (name === '' || name.includes('.')) {
    throw new ArgumentError(
      `${what} name '${name}' must be non-empty and contain no '.'; dots join the names of nested modules`,
    );
  }
}

/** Compiles a NamePattern into a predicate over dotted names. */
export function nameMatcher(pattern: NamePattern): (name: string) => boolean {
  if (typeof pattern === 'function') return pattern;
  if (pattern instanceof RegExp) return (name) => pattern.test(name);
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*' && pattern[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (c === '*') source += '[^.]*';
    else if (c === '?') source += '[^.]';
    else source += c.replace(/[\\^$+.()|{}[\]]/g, '\\$&');
  }
  const re = new RegExp(`^${source}$`);
  return (name) => re.test(name);
}

export abstract class Module {
  /** Training mode (dropout active). Set for the whole tree with train()/eval(). */
  training = true;
  readonly #params = new Map<string, Tensor | null>();
  readonly #buffers = new Map<string, { tensor: Tensor; persistent: boolean }>();
  readonly #children = new Map<string, Module>();

  // ---- registration ----

  /**
   * Adds (or replaces) a parameter under `name` and marks it as requiring grad. `null` declares
   * an absent optional parameter (e.g. a bias turned off). Returns the tensor.
   */
  registerParameter<T extends Tensor | null>(name: string, t: T): T {
    checkLocalName('parameter', name);
    if (this.#children.has(name) || this.#buffers.has(name))
      throw new ArgumentError(`'${name}' is already a child module or buffer of ${this.constructor.name}`);
    if (t) {
      if (t.dtype !== 'f32' && t.dtype !== 'f64')
        throw new DTypeError(`parameter '${name}' must be f32 or f64, got ${t.dtype}`, {
          op: 'Module',
          dtypes: [t.dtype],
          name,
        });
      if (t.gradFn)
        throw new ArgumentError(
          `parameter '${name}' must be a leaf tensor; pass x.detach() to make one from a computed value`,
        );
      t.requiresGrad = true;
    }
    this.#params.set(name, t);
    return t;
  }

  /** Adds a non-trainable tensor (running statistics, masks). Persistent buffers are part of stateDict(). */
  registerBuffer(name: string, t: Tensor, persistent = true): Tensor {
    checkLocalName('buffer', name);
    if (this.#children.has(name) || this.#params.has(name))
      throw new ArgumentError(`'${name}' is already a child module or parameter of ${this.constructor.name}`);
    this.#buffers.set(name, { tensor: t, persistent });
    return t;
  }

  /** Adds (or replaces) a child module. Returns it. */
  registerModule<M extends Module>(name: string, m: M): M {
    checkLocalName('module', name);
    if (this.#params.has(name) || this.#buffers.has(name))
      throw new ArgumentError(`'${name}' is already a parameter or buffer of ${this.constructor.name}`);
    this.#children.set(name, m);
    return m;
  }

  /** Removes the child module `name` (an adapter being detached) and returns it; null when there is none. */
  removeModule(name: string): Module | null {
    const m = this.#children.get(name) ?? null;
    this.#children.delete(name);
    return m;
  }

  /** This module's own parameter `name` (throws if it was never registered or is absent). */
  protected param(name: string): Tensor {
    const p = this.#params.get(name);
    if (!p) throw new ArgumentError(`${this.constructor.name} has no parameter '${name}'`);
    return p;
  }

  /** This module's own optional parameter (null when declared absent). */
  protected optionalParam(name: string): Tensor | null {
    return this.#params.get(name) ?? null;
  }

  protected buffer(name: string): Tensor {
    const b = this.#buffers.get(name);
    if (!b) throw new ArgumentError(`${this.constructor.name} has no buffer '${name}'`);
    return b.tensor;
  }

  // ---- traversal ----

  /** Direct children, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.#children];
  }

  /** This module ('' ) and every descendant, with dotted paths, depth first. */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.#children) out.push(...child.namedModules(prefix ? `${prefix}.${name}` : name));
    return out;
  }

  /** The descendant at a dotted path ('' is this module). */
  getModule(path: string): Module {
    let m: Module = this;
    if (path === '') return m;
    for (const part of path.split('.')) {
      const next = m.#children.get(part);
      if (!next) throw new ArgumentError(`${this.constructor.name} has no module '${path}' (no child '${part}')`);
      m = next;
    }
    return m;
  }

  /**
   * Every parameter with its dotted name, in registration order. A tensor registered under two
   * names (tied weights) is listed once, under the first.
   */
  namedParameters(prefix = ''): [string, Tensor][] {
    const seen = new Set<Tensor>();
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, p] of m.#params) {
        if (!p || seen.has(p)) continue;
        seen.add(p);
        out.push([path ? `${path}.${name}` : name, p]);
      }
    }
    return out;
  }

  parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [path, m] of this.namedModules(prefix)) {
      for (const [name, b] of m.#buffers) out.push([path ? `${path}.${name}` : name, b.tensor]);
    }
    return out;
  }

  /** Number of parameter elements (tied tensors counted once). */
  numParameters(opts: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const [, p] of this.namedParameters()) if (!opts.trainableOnly || p.requiresGrad) n += p.size;
    return n;
  }

  // ---- modes and gradients ----

  /** Sets training mode on the whole tree (dropout on). */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  /** Sets evaluation mode on the whole tree (dropout off). */
  eval(): this {
    return this.train(false);
  }

  /** Clears every parameter's gradient (sets it to null, as PyTorch's set_to_none). */
  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** Turns gradients on or off for every parameter. */
  requiresGrad_(value = true): this {
    for (const p of this.parameters()) p.requiresGrad = value;
    return this;
  }

  /**
   * Turns gradients on or off for the parameters whose dotted names match any pattern
   * (`'h.*.attn.**'`, `/^wte\./`, a predicate). Returns the matched names; throws when nothing
   * matches (a misspelt pattern would otherwise freeze nothing silently).
   */
  setRequiresGrad(patterns: NamePattern | readonly NamePattern[], value: boolean): string[] {
    const list = Array.isArray(patterns) ? (patterns as readonly NamePattern[]) : [patterns as NamePattern];
    const matchers = list.map(nameMatcher);
    const matched: string[] = [];
    for (const [name, p] of this.namedParameters()) {
      if (matchers.some((m) => m(name))) {
        p.requiresGrad = value;
        matched.push(name);
      }
    }
    if (matched.length === 0) {
      const names = this.namedParameters().map(([n]) => n);
      throw new ArgumentError(
        `setRequiresGrad: no parameter matches ${list.map(String).join(', ')}; parameters are named like ${listKeys(names.slice(0, 6))}`,
        { patterns: list.map(String) },
      );
    }
    return matched;
  }

  /** Stops gradients for matching parameters (see setRequiresGrad). */
  freeze(...patterns: NamePattern[]): string[] {
    return this.setRequiresGrad(patterns.length ? patterns : ['**'], false);
  }

  unfreeze(...patterns: NamePattern[]): string[] {
    return this.setRequiresGrad(patterns.length ? patterns : ['**'], true);
  }

  // ---- state ----

  /**
   * Every parameter (under every name it is registered as) and persistent buffer. The tensors
   * are detached views of the live storage, not copies: save them before the next update, or
   * clone them for a snapshot.
   */
  stateDict(): StateDict {
    const out: StateDict = new Map();
    for (const [path, m] of this.namedModules()) {
      const full = (n: string): string => (path ? `${path}.${n}` : n);
      for (const [name, p] of m.#params) if (p) out.set(full(name), p.detach());
      for (const [name, b] of m.#buffers) if (b.persistent) out.set(full(name), b.tensor.detach());
    }
    return out;
  }

  /**
   * Copies a state dict into this module's parameters and buffers, converting dtypes (an f16
   * checkpoint loads into f32 parameters). Everything is checked before anything is written, so
   * a failed load changes nothing. Throws ShapeError when only shapes disagree, ArgumentError
   * when keys are missing or unexpected (strict mode); the message lists every problem.
   */
  loadStateDict(state: StateDictInput, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    const entries: Map<string, Tensor> =
      state instanceof Map ? (state as Map<string, Tensor>) : new Map(Object.entries(state));
    const targets = this.stateDict();
    const missing = [...targets.keys()].filter((k) => !entries.has(k));
    const unexpected = [...entries.keys()].filter((k) => !targets.has(k));
    const misshaped: string[] = [];
    const misshapedShapes: (readonly number[])[] = []; // checkpoint, model, per mis-shaped key
    const badDtype: string[] = [];
    for (const [key, target] of targets) {
      const src = entries.get(key);
      if (!src) continue;
      if (!shapesEqual(src.shape, target.shape)) {
        misshaped.push(`${key}: checkpoint ${formatShape(src.shape)}, model ${formatShape(target.shape)}`);
        misshapedShapes.push(src.shape, target.shape);
      } else if (
        (target.dtype === 'f32' || target.dtype === 'f64') &&
        !['f32', 'f64', 'f16', 'bf16'].includes(src.dtype)
      )
        badDtype.push(`${key}: ${src.dtype}`);
    }
    const keyProblems = strict && (missing.length > 0 || unexpected.length > 0);
    if (keyProblems || misshaped.length > 0 || badDtype.length > 0) {
      const lines = [`loadStateDict: the state dict does not fit ${this.constructor.name}:`];
      if (strict && missing.length) lines.push(`  missing keys (${missing.length}): ${listKeys(missing)}`);
      if (strict && unexpected.length) lines.push(`  unexpected keys (${unexpected.length}): ${listKeys(unexpected)}`);
      if (misshaped.length) lines.push(`  mis-shaped keys (${misshaped.length}): ${listKeys(misshaped)}`);
      if (badDtype.length)
        lines.push(`  non-floating values for floating parameters (${badDtype.length}): ${listKeys(badDtype)}`);
      lines.push(
        keyProblems
          ? 'Check that the checkpoint was made for this architecture and config; pass { strict: false } to load the matching keys only (shapes must still match).'
          : "Check that the model config (sizes, vocabulary, layers) matches the checkpoint's config.",
      );
      const details = { missing: strict ? missing : [], unexpected: strict ? unexpected : [], misshaped, badDtype };
      throw keyProblems || badDtype.length
        ? new ArgumentError(lines.join('\n'), details)
        : new ShapeError(lines.join('\n'), { op: 'loadStateDict', shapes: misshapedShapes, ...details });
    }
    noGrad(() => {
      for (const [key, target] of targets) {
        const src = entries.get(key);
        if (!src || (src.storage === target.storage && src.offset === target.offset)) continue;
        assignInto(target, cast(src.detach(), target.dtype));
      }
    });
    return { missing, unexpected };
  }
}

/** A module with one tensor in and one out (what Sequential chains). */
export interface Layer extends Module {
  forward(x: Tensor): Tensor;
}

/** Holds modules under the names '0', '1', …: a list of blocks whose forward the owner drives. */
export class ModuleList<M extends Module = Module> extends Module {
  readonly #items: M[] = [];

  constructor(items: Iterable<M> = []) {
    super();
    for (const m of items) this.push(m);
  }

  push(m: M): this {
    this.registerModule(String(this.#items.length), m);
    this.#items.push(m);
    return this;
  }

  get length(): number {
    return this.#items.length;
  }

  at(i: number): M {
    const m = this.#items[i < 0 ? this.#items.length + i : i];
    if (!m) throw new ArgumentError(`ModuleList: index ${i} is outside [0, ${this.#items.length})`);
    return m;
  }

  [Symbol.iterator](): Iterator<M> {
    return this.#items[Symbol.iterator]();
  }
}

/** Runs layers in order; children are named '0', '1', … as in torch.nn.Sequential. */
export class Sequential extends Module implements Layer {
  readonly layers: readonly Layer[];

  constructor(...layers: Layer[]) {
    super();
    layers.forEach((l, i) => this.registerModule(String(i), l));
    this.layers = layers;
  }

  forward(x: Tensor): Tensor {
    let y = x;
    for (const l of this.layers) y = l.forward(y);
    return y;
  }
}
