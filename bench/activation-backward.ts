/**
 * Why the activations keep a fused backward (src/autograd/gradients.ts `activationRule`): the
 * gradient of relu, tanh-GELU and SiLU over an MLP-sized activation [8192, 512], by the native
 * fused one-pass kernel against the composite rule run from native primitives (the peer), in ms
 * per backward, interleaved, medians. ratio = composite / fused.
 */
import { cpus } from 'node:os';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { loadNativeAddon, loadNativeBackend, nativeLoadError } from '../src/backends/native/index.js';
import { pinnedToCore0 } from './peer.js';
import { type BenchOptions, type BenchRow, makeRow, median } from './row.js';

const SHAPE = [8192, 512];
const ROUNDS = 7;
const COMPOSITE = 'native-composite-activations';
const FORWARD: Readonly<Record<string, (x: Tensor) => Tensor>> = {
  relu: k.relu,
  gelu_tanh: (x) => k.gelu(x, 'tanh'),
  silu: k.silu,
};

/** Milliseconds of one backward through `op` on `backend`, from a fresh leaf over `input`'s values. */
function backwardMs(backend: string, op: string, input: Tensor, g: Tensor): number {
  return k.withBackend(backend, () => {
    const x = input.detach().requiresGrad_(true);
    const y = FORWARD[op]!(x);
    const t0 = process.hrtime.bigint();
    y.backward(g);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  });
}

export async function run(opts: BenchOptions): Promise<BenchRow[]> {
  const native = loadNativeBackend();
  const addon = loadNativeAddon();
  if (!native || !addon) throw new Error(`activation-backward bench needs the native backend: ${nativeLoadError()}`);
  if (!k.backends().includes('native')) k.registerBackend(native);
  // Native in every kernel but the fused activation gradient, so the rule runs its composite.
  if (!k.backends().includes(COMPOSITE)) {
    k.registerBackend({
      ...native,
      name: COMPOSITE,
      supports: (kn, ins) => kn !== 'activationBackward' && native.supports(kn, ins),
    });
  }
  const body = async (): Promise<BenchRow[]> => {
    const threadsBefore = addon.info().threads;
    addon.setThreads(opts.cores === 1 ? 1 : cpus().length);
    try {
      const input = k.randn(SHAPE, { generator: new k.Generator(1) });
      const g = k.randn(SHAPE, { generator: new k.Generator(2) });
      return Object.keys(FORWARD).map((op) => {
        const fused: number[] = [];
        const composite: number[] = [];
        backwardMs('native', op, input, g); // warm-up: JIT, first allocations
        backwardMs(COMPOSITE, op, input, g);
        for (let r = 0; r < ROUNDS; r++) {
          fused.push(backwardMs('native', op, input, g));
          composite.push(backwardMs(COMPOSITE, op, input, g));
        }
        return makeRow(
          `${op}_backward_${SHAPE.join('x')}`,
          opts.cores,
          'ms',
          median(fused),
          'knobs composite rule',
          median(composite),
          false,
        );
      });
    } finally {
      addon.setThreads(threadsBefore);
    }
  };
  return opts.cores === 1 ? pinnedToCore0(body) : body();
}
