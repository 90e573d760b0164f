/**
 * The optimizer base: parameter groups, per-parameter state buffers, in-place updates, and state
 * export/import by parameter name (so it can be saved as safetensors next to the weights).
 *
 * Updates write straight into each parameter's storage under noGrad, so parameters keep their
 * identity (modules, LoRA wrappers and other references see the new values). The per-element
 * update is a plain loop over the typed arrays (see sgd.ts, adam.ts) with no allocation; a fused
 * native kernel can replace those functions one for one.
 */
import { noGrad } from '../autograd/tape.js';
import type { FloatStorage } from '../dtype.js';
import { ArgumentError, DTypeError, ShapeError } from '../errors.js';
import { cast } from '../ops/view.js';
import { formatShape, shapesEqual } from '../shape.js';
import { Tensor } from '../tensor.js';

/** Anything with named parameters (every nn.Module). */
export interface HasNamedParameters {
  namedParameters(): [string, Tensor][];
}

/** A module, named parameters ([name, tensor] pairs), or bare tensors (named `param.0`, `param.1`, …). */
export type ParamsInput = HasNamedParameters | Iterable<readonly [string, Tensor]> | readonly Tensor[];

/** A group of parameters with its own hyperparameters (any option left out takes the optimizer's default). */
export type ParamGroupInput<O> = { params: ParamsInput } & Partial<O>;

export interface BaseOptions {
  lr: number;
  weightDecay: number;
}

export interface ParamGroup<O> {
  names: string[];
  params: Tensor[];
  options: O;
  /**
   * The group's lr as a multiple of the optimizer's default lr, fixed at construction: setLr(x)
   * gives this group x·lrScale, so a schedule scales every group's own base lr (as torch's
   * schedulers scale each group's initial_lr; LoRA+ keeps lora_B at lr·ratio this way).
   */
  readonly lrScale: number;
}

export interface ParamState {
  /** Updates this parameter has received. */
  step: number;
  /** State buffers (exp_avg, momentum_buffer, …), each the parameter's size and dtype. */
  buffers: Record<string, FloatStorage>;
}

/**
 * Exported optimizer state: `tensors` holds `<param name>.<slot>` for every state buffer and
 * `<param name>.step` (an i32 scalar). The tensors share the optimizer's buffers (save them
 * before the next step). Hyperparameters are not part of the state: they come from the recipe.
 */
export interface OptimizerState {
  type: string;
  step: number;
  tensors: Map<string, Tensor>;
}

/** Whether an input is a list of groups rather than one parameter collection. */
function isGroupList<O>(x: unknown): x is readonly ParamGroupInput<O>[] {
  return (
    Array.isArray(x) &&
    x.length > 0 &&
    !(x[0] instanceof Tensor) &&
    !Array.isArray(x[0]) &&
    typeof x[0] === 'object' &&
    'params' in (x[0] as object)
  );
}

/** [name, tensor] pairs of a ParamsInput; a module contributes only parameters that require grad. */
export function namedParamsOf(params: ParamsInput, counter = { next: 0 }): [string, Tensor][] {
  if (typeof (params as HasNamedParameters).namedParameters === 'function') {
    return (params as HasNamedParameters).namedParameters().filter(([, p]) => p.requiresGrad);
  }
  const out: [string, Tensor][] = [];
  for (const item of params as Iterable<unknown>) {
    if (item instanceof Tensor) out.push([`param.${counter.next++}`, item]);
    else if (Array.isArray(item) && typeof item[0] === 'string' && item[1] instanceof Tensor)
      out.push([item[0], item[1]]);
    else throw new ArgumentError('optimizer: params must be a module, [name, tensor] pairs, or tensors');
  }
  return out;
}

/** One parameter's update in a step: its storage, gradient, state (step already counted) and options. */
export interface ParamUpdate<O> {
  readonly param: FloatStorage;
  readonly grad: FloatStorage;
  readonly state: ParamState;
  readonly options: O;
}

export abstract class Optimizer<O extends BaseOptions> {
  abstract readonly type: string;
  readonly groups: ParamGroup<O>[];
  readonly defaults: O;
  /** Completed step() calls. */
  stepCount = 0;
  readonly #state = new Map<Tensor, ParamState>();
  readonly #names = new Map<string, Tensor>();

  /**
   * @param splitDecay when given and `params` is a single collection, parameters for which it
   *   returns false go into a second group with weightDecay 0 (AdamW: rank < 2 → biases, norms).
   */
  protected constructor(
    params: ParamsInput | readonly ParamGroupInput<O>[],
    defaults: O,
    splitDecay?: (name: string, p: Tensor) => boolean,
  ) {
    checkBase(this.constructor.name, defaults);
    this.defaults = defaults;
    const counter = { next: 0 };
    let inputs: { named: [string, Tensor][]; options: O }[];
    if (isGroupList<O>(params)) {
      inputs = params.map(({ params: ps, ...overrides }) => ({
        named: namedParamsOf(ps, counter),
        options: { ...defaults, ...(overrides as unknown as Partial<O>) },
      }));
    } else {
      const named = namedParamsOf(params as ParamsInput, counter);
      if (splitDecay && defaults.weightDecay !== 0) {
        inputs = [
          { named: named.filter(([n, p]) => splitDecay(n, p)), options: defaults },
          { named: named.filter(([n, p]) => !splitDecay(n, p)), options: { ...defaults, weightDecay: 0 } },
        ].filter((g) => g.named.length > 0);
      } else inputs = [{ named, options: defaults }];
    }
    this.groups = inputs.map(({ named, options }) => {
      this.checkOptions(options);
      for (const [name, p] of named) {
        if (this.#names.has(name) || [...this.#names.values()].includes(p)) {
          throw new ArgumentError(
            `${this.constructor.name}: parameter '${name}' appears twice; each parameter belongs to one group`,
          );
        }
        if (p.dtype !== 'f32' && p.dtype !== 'f64')
          throw new DTypeError(
            `${this.constructor.name}: parameter '${name}' is ${p.dtype}; only f32/f64 parameters can be optimized`,
            { op: this.constructor.name, dtypes: [p.dtype], name },
          );
        if (!p.isContiguous())
          throw new ArgumentError(
            `${this.constructor.name}: parameter '${name}' is a non-contiguous view; optimize the tensor that owns the storage`,
          );
        this.#names.set(name, p);
      }
      // A group's own lr is kept relative to the default's; with a default of 0 there is no ratio, so setLr sets it.
      const lrScale = defaults.lr > 0 ? options.lr / defaults.lr : 1;
      return { names: named.map(([n]) => n), params: named.map(([, p]) => p), options, lrScale };
    });
    if (this.#names.size === 0)
      throw new ArgumentError(`${this.constructor.name}: no parameters to optimize (are they all frozen?)`);
  }

  /** Names of the per-parameter state buffers this optimizer keeps (given its options). */
  protected abstract slots(options: O): readonly string[];

  /** Validates one group's options. */
  protected abstract checkOptions(options: O): void;

  /** Updates one parameter in place; `state.step` already counts this update. */
  protected abstract update(param: FloatStorage, grad: FloatStorage, state: ParamState, options: O): void;

  /**
   * Updates every parameter of `work` in place. The default is `update` on each in turn; an
   * optimizer with a fused many-parameter kernel overrides it (one native call per step).
   */
  protected updateAll(work: readonly ParamUpdate<O>[]): void {
    for (const w of work) this.update(w.param, w.grad, w.state, w.options);
  }

  /**
   * Applies one update to every parameter that has a gradient (others are skipped, as PyTorch).
   * Every gradient's shape is checked before any parameter changes.
   */
  step(): void {
    noGrad(() => {
      const work: ParamUpdate<O>[] = [];
      for (const group of this.groups) {
        group.params.forEach((p, i) => {
          const g = p.grad;
          if (!g) return;
          if (!shapesEqual(g.shape, p.shape)) {
            throw new ShapeError(
              `${this.constructor.name}: gradient of '${group.names[i]}' has shape ${formatShape(g.shape)}, parameter ${formatShape(p.shape)}`,
              { op: this.constructor.name, shapes: [g.shape, p.shape], name: group.names[i] },
            );
          }
          const grad = (g.dtype === p.dtype ? g : cast(g, p.dtype)).contiguousStorage() as FloatStorage;
          work.push({ param: storageOf(p), grad, state: this.stateOf(p, group.options), options: group.options });
        });
      }
      for (const w of work) w.state.step++;
      this.updateAll(work);
    });
    this.stepCount++;
  }

  /** Clears the gradients of every parameter this optimizer updates. */
  zeroGrad(): void {
    for (const group of this.groups) for (const p of group.params) p.grad = null;
  }

  /** The learning rate of the first group. */
  get lr(): number {
    return this.groups[0]!.options.lr;
  }

  /**
   * Sets the learning rate, as the default's: every group gets `lr` times its lrScale (1 unless it
   * was given its own lr). Call it each step with a schedule's value.
   */
  setLr(lr: number): void {
    if (!(lr >= 0) || !Number.isFinite(lr))
      throw new ArgumentError(`${this.constructor.name}: lr must be a finite number ≥ 0, got ${lr}`);
    for (const g of this.groups) g.options.lr = lr * g.lrScale;
  }

  /** The state of parameter `p` (created, zero-filled, on first use). */
  protected stateOf(p: Tensor, options: O): ParamState {
    let s = this.#state.get(p);
    if (!s) {
      s = { step: 0, buffers: {} };
      for (const slot of this.slots(options))
        s.buffers[slot] = p.dtype === 'f64' ? new Float64Array(p.size) : new Float32Array(p.size);
      this.#state.set(p, s);
    }
    return s;
  }

  /** The optimizer state by parameter name (see OptimizerState). */
  stateDict(): OptimizerState {
    const tensors = new Map<string, Tensor>();
    for (const group of this.groups) {
      group.params.forEach((p, i) => {
        const s = this.#state.get(p);
        if (!s) return;
        const name = group.names[i]!;
        for (const [slot, buf] of Object.entries(s.buffers))
          tensors.set(`${name}.${slot}`, new Tensor(buf, p.shape, p.dtype));
        tensors.set(`${name}.step`, new Tensor(new Int32Array([s.step]), [], 'i32'));
      });
    }
    return { type: this.type, step: this.stepCount, tensors };
  }

  /**
   * Restores state saved by stateDict() from an optimizer of the same type over parameters with
   * the same names and shapes. Values are copied (converted to each parameter's dtype). Checks
   * everything before changing anything; parameters absent from the state start fresh.
   */
  loadStateDict(state: OptimizerState): void {
    if (state.type !== this.type)
      throw new ArgumentError(
        `${this.constructor.name}.loadStateDict: the state is from a '${state.type}' optimizer, not '${this.type}'`,
      );
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new ArgumentError(
        `${this.constructor.name}.loadStateDict: step must be a non-negative integer, got ${state.step}`,
      );
    const problems: string[] = [];
    const plan: { p: Tensor; s: ParamState }[] = [];
    const used = new Set<string>();
    for (const group of this.groups) {
      group.params.forEach((p, i) => {
        const name = group.names[i]!;
        const stepT = state.tensors.get(`${name}.step`);
        const slots = this.slots(group.options);
        const present = slots.filter((slot) => state.tensors.has(`${name}.${slot}`));
        if (!stepT && present.length === 0) return;
        if (!stepT || present.length !== slots.length) {
          problems.push(
            `'${name}' has ${stepT ? '' : 'no step and '}slots [${present.join(', ')}] of [${slots.join(', ')}]`,
          );
          return;
        }
        used.add(`${name}.step`);
        const s: ParamState = { step: stepT.item(), buffers: {} };
        if (!Number.isInteger(s.step) || s.step < 0) problems.push(`'${name}.step' is ${s.step}, not a count`);
        for (const slot of slots) {
          const t = state.tensors.get(`${name}.${slot}`)!;
          used.add(`${name}.${slot}`);
          if (!shapesEqual(t.shape, p.shape)) {
            problems.push(`'${name}.${slot}' has shape ${formatShape(t.shape)}, parameter ${formatShape(p.shape)}`);
            continue;
          }
          if (!['f32', 'f64', 'f16', 'bf16'].includes(t.dtype)) {
            problems.push(`'${name}.${slot}' is ${t.dtype}, not floating`);
            continue;
          }
          const data = noGrad(() => cast(t.detach(), p.dtype).contiguousStorage()) as FloatStorage;
          s.buffers[slot] = data.slice() as FloatStorage; // own copy: the state's tensors may be reused by the caller
        }
        plan.push({ p, s });
      });
    }
    const unexpected = [...state.tensors.keys()].filter((k) => !used.has(k));
    if (unexpected.length)
      problems.push(`unexpected entries: ${unexpected.slice(0, 12).join(', ')}${unexpected.length > 12 ? ', …' : ''}`);
    if (problems.length) {
      throw new ArgumentError(
        `${this.constructor.name}.loadStateDict: the state does not fit these parameters:\n  ${problems.join('\n  ')}\nWas it saved for this model and optimizer configuration?`,
        { problems },
      );
    }
    this.#state.clear();
    for (const { p, s } of plan) this.#state.set(p, s);
    this.stepCount = state.step;
  }
}

export function checkBase(who: string, o: BaseOptions): void {
  if (!(o.lr >= 0) || !Number.isFinite(o.lr))
    throw new ArgumentError(`${who}: lr must be a finite number ≥ 0, got ${o.lr}`);
  if (!(o.weightDecay >= 0)) throw new ArgumentError(`${who}: weightDecay must be ≥ 0, got ${o.weightDecay}`);
}

function storageOf(p: Tensor): FloatStorage {
  const s = p.storage as FloatStorage;
  return p.offset === 0 && s.length === p.size ? s : (s.subarray(p.offset, p.offset + p.size) as FloatStorage);
}
