/**
 * The training workloads the benches time, written with knobs' public ops; bench/peer_torch.py
 * does the identical work in PyTorch.
 *
 *   mlp:       784-512-512-10 ReLU MLP, batch 128: forward, cross-entropy, backward, AdamW step.
 *   gpt-block: one GPT-2 block (pre-LN, causal attention, tanh-GELU MLP, residuals), width 256,
 *              4 heads, context 128, batch 16: forward + backward from a fixed upstream gradient.
 */
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { loadNativeAddon } from '../src/backends/native/index.js';

export interface Workload {
  /** One timed unit of work (one training step, or one forward + backward). */
  step(): void;
  /** Items (samples or tokens) one step processes. */
  readonly items: number;
}

/** Linear layer as the ecosystem's checkpoints store it here: x [.., in] · w [in, out] + b [out]. */
function linear(x: Tensor, w: Tensor, b: Tensor): Tensor {
  return k.add(k.matmul(x, w), b);
}

function param(shape: number[], scale: number, g: k.Generator): Tensor {
  return k.mul(k.randn(shape, { generator: g }), scale).requiresGrad_();
}

/**
 * A minimal AdamW over the addon's fused kernel (the optimizer module is not in this tree yet):
 * the same update as torch.optim.AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01).
 */
export class FusedAdamW {
  private readonly m: Float32Array[];
  private readonly v: Float32Array[];
  private t = 0;
  private readonly addon = loadNativeAddon()!;
  constructor(private readonly params: Tensor[], private readonly lr = 1e-3) {
    this.m = params.map((p) => new Float32Array(p.size));
    this.v = params.map((p) => new Float32Array(p.size));
  }
  step(): void {
    this.t++;
    this.params.forEach((p, i) => {
      this.addon.adamw(p.storage as Float32Array, p.grad!.contiguousStorage() as Float32Array, this.m[i]!, this.v[i]!, this.lr, 0.9, 0.999, 1e-8, 0.01, this.t);
    });
  }
  zeroGrad(): void {
    for (const p of this.params) p.grad = null;
  }
}

export function mlpWorkload(batch = 128): Workload {
  const g = new k.Generator(0);
  const sizes = [784, 512, 512, 10];
  const params: Tensor[] = [];
  for (let i = 0; i < 3; i++) {
    params.push(param([sizes[i]!, sizes[i + 1]!], 1 / Math.sqrt(sizes[i]!), g), param([sizes[i + 1]!], 0.01, g));
  }
  const x = k.rand([batch, 784], { generator: g });
  const y = k.randint(0, 10, [batch], { generator: g });
  const opt = new FusedAdamW(params);
  return {
    items: batch,
    step() {
      opt.zeroGrad();
      let h = x;
      for (let i = 0; i < 3; i++) {
        h = linear(h, params[2 * i]!, params[2 * i + 1]!);
        if (i < 2) h = k.relu(h);
      }
      const loss = k.crossEntropy(h, y);
      loss.backward();
      opt.step();
    },
  };
}

export interface GptBlockConfig { batch: number; context: number; width: number; heads: number }
export const GPT_BLOCK: GptBlockConfig = { batch: 16, context: 128, width: 256, heads: 4 };

export function gptBlockWorkload(cfg: GptBlockConfig = GPT_BLOCK): Workload {
  const { batch: B, context: T, width: C, heads: H } = cfg;
  const D = C / H;
  const g = new k.Generator(0);
  const ones = () => k.ones([C]).requiresGrad_();
  const zeros = (n: number) => k.zeros([n]).requiresGrad_();
  const p = {
    ln1w: ones(), ln1b: zeros(C),
    wqkv: param([C, 3 * C], 0.02, g), bqkv: zeros(3 * C),
    wproj: param([C, C], 0.02, g), bproj: zeros(C),
    ln2w: ones(), ln2b: zeros(C),
    wfc: param([C, 4 * C], 0.02, g), bfc: zeros(4 * C),
    wfc2: param([4 * C, C], 0.02, g), bfc2: zeros(C),
  };
  const x0 = k.randn([B, T, C], { generator: g }).requiresGrad_();
  const upstream = k.randn([B, T, C], { generator: g });
  const heads = (t: Tensor) => k.transpose(k.reshape(t, [B, T, H, D]), 1, 2); // [B, H, T, D]
  return {
    items: B * T,
    step() {
      for (const t of [x0, ...Object.values(p)]) t.grad = null;
      // B batch, T time, C channels, H heads, D = C / H
      const h = k.layerNorm(x0, [C], p.ln1w, p.ln1b); // [B, T, C]
      const qkv = linear(h, p.wqkv, p.bqkv); // [B, T, 3C]
      const [q, kk, v] = k.split(qkv, C, -1).map(heads) as [Tensor, Tensor, Tensor]; // [B, H, T, D] each
      const att = k.scaledDotProductAttention(q, kk, v, { causal: true }); // [B, H, T, D]
      const merged = k.reshape(k.transpose(att, 1, 2), [B, T, C]); // [B, T, C]
      const x1 = k.add(x0, linear(merged, p.wproj, p.bproj)); // [B, T, C]
      const m = k.gelu(linear(k.layerNorm(x1, [C], p.ln2w, p.ln2b), p.wfc, p.bfc), 'tanh'); // [B, T, 4C]
      const out = k.add(x1, linear(m, p.wfc2, p.bfc2)); // [B, T, C]
      out.backward(upstream);
    },
  };
}
