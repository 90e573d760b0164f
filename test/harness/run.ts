/**
 * Running one golden case through knobs: build the inputs (with their views) in the run's dtype,
 * call the op, backpropagate the stored upstream gradient, and compare outputs and gradients
 * with torch's.
 */
import * as k from '../../src/index.js';
import type { Tensor } from '../../src/index.js';
import { assertClose } from './compare.js';
import { type CaseInput, type GoldenCase, type ViewSpec, decodeAll, decodeF32 } from './fixtures.js';
import { isOpName, OPS } from './ops.js';
import { type RunDType, toleranceFor } from './tolerance.js';

export interface BuiltInputs {
  /** The contiguous base tensors (gradient leaves), one per input. */
  leaves: Tensor[];
  /** What the op sees: the leaves, or views of them. */
  args: Tensor[];
}

const decodeFor = (dtype: RunDType) => (dtype === 'f32' ? decodeF32 : decodeAll);

export function applyView(base: Tensor, v: ViewSpec | undefined): Tensor {
  if (!v) return base;
  switch (v.kind) {
    case 'transpose':
      return base.transpose(v.dims![0]!, v.dims![1]!);
    case 'permute':
      return base.permute(v.dims!);
    case 'slice':
      return base.slice(v.axis!, v.start!, v.end!, v.step!);
    case 'expand':
      return base.expand(v.shape!);
  }
}

function baseShape(inp: CaseInput): number[] {
  return inp.view ? inp.view.base_shape : inp.shape;
}

/**
 * Builds inputs. Float data is always float32-valued (torch computed both goldens from those
 * values), so f64 runs read it through Math.fround as well.
 */
export function buildInputs(c: GoldenCase, dtype: RunDType, opts: { grad?: boolean } = {}): BuiltInputs {
  const grad = opts.grad ?? true;
  const leaves: Tensor[] = [];
  for (const inp of c.inputs) {
    if (inp.same_as !== undefined) leaves.push(leaves[inp.same_as]!);
    else if (inp.dtype === 'float')
      leaves.push(
        k.fromArray(decodeF32(inp.data!), baseShape(inp), { dtype, requiresGrad: grad && inp.requires_grad }),
      );
    else leaves.push(k.fromArray(decodeAll(inp.data!), baseShape(inp), { dtype: inp.dtype }));
  }
  const args = leaves.map((t, i) => applyView(t, c.inputs[i]!.view));
  return { leaves, args };
}

export function callOp(c: GoldenCase, args: Tensor[]): Tensor[] {
  if (!isOpName(c.op))
    throw new Error(`${c.id}: the harness has no mapping for op '${c.op}' (add it to test/harness/ops.ts)`);
  const out = OPS[c.op](args, c.attrs);
  return Array.isArray(out) ? out : [out];
}

/** Σ_i Σ out_i · g_i as a knobs scalar (the loss whose gradient torch recorded). */
export function weightedLoss(outs: Tensor[], upstream: (number[] | null)[], dtype: RunDType): Tensor | null {
  let loss: Tensor | null = null;
  outs.forEach((o, i) => {
    const g = upstream[i];
    if (!g) return;
    const term = k.sum(k.mul(o, k.fromArray(g, o.shape, { dtype })));
    loss = loss ? k.add(loss, term) : term;
  });
  return loss;
}

const expectedDType = (d: 'float' | 'i32' | 'bool', run: RunDType): string => (d === 'float' ? run : d);

/** The same values as `t` in a non-contiguous layout (last two axes stored transposed), when rank ≥ 2. */
export function stridedCopy(t: Tensor): Tensor {
  if (t.rank < 2 || t.shape[t.rank - 1]! < 2 || t.shape[t.rank - 2]! < 2) return t;
  return k
    .fromArray(
      t.transpose(-1, -2).toFlatArray(),
      [...t.shape.slice(0, -2), t.shape[t.rank - 1]!, t.shape[t.rank - 2]!],
      { dtype: t.dtype },
    )
    .transpose(-1, -2);
}

/** Runs a case forward and backward and throws a descriptive Error on the first disagreement. */
export function checkCase(c: GoldenCase, dtype: RunDType): void {
  const { leaves, args } = buildInputs(c, dtype);
  // A view must really be non-contiguous, or the case tests nothing beyond the plain one.
  c.inputs.forEach((inp, i) => {
    const numel = inp.shape.reduce((a, b) => a * b, 1);
    if (inp.view && numel > 1 && args[i]!.isContiguous()) {
      throw new Error(
        `${c.id}: input ${i} view '${inp.view.kind}' came out contiguous; the harness expected a strided view`,
      );
    }
    if (args[i]!.shape.join() !== inp.shape.join()) {
      throw new Error(`${c.id}: input ${i} has shape [${args[i]!.shape}] after its view, expected [${inp.shape}]`);
    }
  });
  const outs = callOp(c, args);
  if (outs.length !== c.outputs.length)
    throw new Error(`${c.id}: ${outs.length} outputs, expected ${c.outputs.length}`);
  const dec = decodeFor(dtype);
  outs.forEach((o, i) => {
    const spec = c.outputs[i]!;
    const want = expectedDType(spec.dtype, dtype);
    if (o.dtype !== want) throw new Error(`${c.id}: output ${i} has dtype ${o.dtype}, expected ${want}`);
    const expected = spec.dtype === 'float' ? dec(dtype === 'f64' ? spec.data64! : spec.data) : decodeAll(spec.data);
    const truth = spec.dtype === 'float' && dtype === 'f32' ? decodeAll(spec.data64!) : undefined;
    assertClose(
      `${c.id} [${dtype}] output ${i}`,
      o.toFlatArray(),
      o.shape,
      expected,
      spec.shape,
      toleranceFor(dtype, c.tol),
      { truth },
    );
  });

  const wantsGrad = c.inputs.some((inp) => inp.requires_grad);
  if (!wantsGrad) return;
  const upstream = c.upstream.map((u) => (u ? decodeF32(u) : null));
  if (outs.length === 1 && upstream[0]) {
    const g = k.fromArray(upstream[0], outs[0]!.shape, { dtype });
    // f32 runs seed backward with a strided (transposed-layout) upstream gradient of the same values,
    // so backward kernels also meet non-contiguous gradients; f64 runs use the contiguous one.
    outs[0]!.backward(dtype === 'f32' ? stridedCopy(g) : g);
  } else {
    const loss = weightedLoss(outs, upstream, dtype);
    if (!loss) throw new Error(`${c.id}: case wants gradients but has no float output`);
    loss.backward();
  }
  const grads = dtype === 'f64' ? c.grads64 : c.grads;
  c.inputs.forEach((inp, i) => {
    const g = grads[i];
    const leaf = leaves[i]!;
    if (inp.same_as !== undefined) return; // its gradient accumulates on input same_as
    if (!inp.requires_grad || !g) {
      if (leaf.grad !== null) throw new Error(`${c.id} [${dtype}]: input ${i} needs no gradient but got one`);
      return;
    }
    const expected = dec(g);
    const shape = baseShape(inp);
    if (leaf.grad === null) {
      // No gradient at all is acceptable only where torch's is all zeros (e.g. an empty input).
      if (expected.every((v) => v === 0)) return;
      throw new Error(`${c.id} [${dtype}]: input ${i} got no gradient (grad is null)`);
    }
    if (leaf.grad.dtype !== dtype) throw new Error(`${c.id} [${dtype}]: gradient ${i} has dtype ${leaf.grad.dtype}`);
    const truth = dtype === 'f32' ? decodeAll(c.grads64[i]!) : undefined;
    assertClose(
      `${c.id} [${dtype}] grad of input ${i}`,
      leaf.grad.toFlatArray(),
      leaf.grad.shape,
      expected,
      shape,
      toleranceFor(dtype, 'gradient'),
      { truth },
    );
  });
}
