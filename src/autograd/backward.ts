/** Reverse-mode differentiation over the tape recorded by ops (see ./tape.ts). */
import { AutogradError, DTypeError, ShapeError } from '../errors.js';
import { formatShape, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { gradientOf, layerNormGradientInto } from './gradients.js';
import { type Node, noGrad } from './tape.js';
import { add, clone, onesLike } from '../ops/index.js';

/**
 * Computes d(root)/d(leaf) for every leaf that requires grad and adds it to `leaf.grad`
 * (gradients accumulate across calls, as in PyTorch; clear them with `zeroGrad`).
 */
export function backward(root: Tensor, grad?: Tensor): void {
  if (!root.requiresGrad) {
    throw new AutogradError(
      'backward(): this tensor does not require grad, so no gradient can flow from it; ' +
        'create the inputs with { requiresGrad: true } or call requiresGrad_() on them before computing it',
    );
  }
  if (grad === undefined) {
    if (root.size !== 1) {
      throw new AutogradError(
        `backward(): the tensor has shape ${formatShape(root.shape)}, not a scalar; pass a gradient of that shape ` +
          '(e.g. backward(onesLike(t))) or reduce it to a scalar first (sum or mean)',
      );
    }
  } else {
    if (!shapesEqual(grad.shape, root.shape)) {
      throw new ShapeError(
        `backward(): gradient shape ${formatShape(grad.shape)} does not match the tensor's ${formatShape(root.shape)}`,
        { op: 'backward', shapes: [grad.shape, root.shape] },
      );
    }
    if (grad.dtype !== root.dtype) {
      throw new DTypeError(`backward(): gradient dtype ${grad.dtype} does not match the tensor's ${root.dtype}`, {
        op: 'backward',
        dtypes: [grad.dtype, root.dtype],
      });
    }
  }

  noGrad(() => {
    const order = topologicalOrder(root);
    const grads = new Map<GradKey, Tensor>();
    const seed = grad ?? onesLike(root);
    grads.set(keyOf(root), seed);
    // storages a leaf may not take over: the caller's gradient, and those already given to a leaf
    const taken = new Set<unknown>([seed.storage]);
    for (const key of order) {
      const g = grads.get(key);
      if (!g) continue;
      grads.delete(key);
      if (!isNode(key)) {
        accumulateLeaf(key, g, taken);
        continue;
      }
      // A layer norm takes in the gradient its input already has (the residual stream's, in a
      // pre-norm transformer): its backward adds it into dx in the same pass.
      const x = key.op === 'layerNorm' && key.inputs[0]?.requiresGrad ? key.inputs[0] : null;
      const collected = x ? grads.get(keyOf(x)) : undefined;
      const inputGrads =
        key.op === 'layerNorm' && collected ? layerNormGradientInto(key, g, collected) : gradientOf(key, g);
      key.inputs.forEach((input, i) => {
        const ig = inputGrads[i];
        if (!input || !input.requiresGrad || !ig) return;
        const k = keyOf(input);
        const prev = i === 0 && collected ? undefined : grads.get(k);
        grads.set(k, prev ? add(prev, ig) : ig);
      });
    }
  });
}

/**
 * What a gradient is collected under: a computed tensor's node (the tape may hold a shape-only
 * alias of it, ./retention.ts — same node, same tensor), or a leaf itself.
 */
type GradKey = Node | Tensor;

function keyOf(t: Tensor): GradKey {
  return t.gradFn ?? t;
}

function isNode(k: GradKey): k is Node {
  return 'op' in k;
}

/** Nodes and leaves reachable from root, each after everything that depends on it. */
function topologicalOrder(root: Tensor): GradKey[] {
  const rootKey = keyOf(root);
  const visited = new Set<GradKey>([rootKey]);
  const postOrder: GradKey[] = [];
  // Iterative DFS: deep graphs (long RNN-like chains) must not overflow the JS stack.
  const stack: { k: GradKey; next: number }[] = [{ k: rootKey, next: 0 }];
  while (stack.length > 0) {
    const frame = stack[stack.length - 1]!;
    const inputs = isNode(frame.k) ? frame.k.inputs : [];
    if (frame.next < inputs.length) {
      const child = inputs[frame.next++];
      if (!child || !child.requiresGrad) continue;
      const k = keyOf(child);
      if (!visited.has(k)) {
        visited.add(k);
        stack.push({ k, next: 0 });
      }
    } else {
      postOrder.push(frame.k);
      stack.pop();
    }
  }
  return postOrder.reverse();
}

/**
 * A leaf must own its gradient's storage (optimizers and clipGradNorm update it in place). A
 * gradient computed in this pass that covers its whole storage, row-major, is taken as is unless
 * another leaf (or the caller's seed gradient) already holds that storage — add, for one, passes
 * the same gradient to both inputs. Views (broadcast, transposed, sliced) are copied.
 */
function accumulateLeaf(leaf: Tensor, g: Tensor, taken: Set<unknown>): void {
  if (leaf.grad) {
    leaf.grad = add(leaf.grad, g);
  } else if (
    !g.requiresGrad &&
    g.offset === 0 &&
    g.storage.length === g.size &&
    g.isContiguous() &&
    !taken.has(g.storage)
  ) {
    leaf.grad = g;
  } else {
    leaf.grad = clone(g);
  }
  taken.add(leaf.grad.storage);
}
