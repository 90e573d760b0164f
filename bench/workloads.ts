/**
 * The training workloads the benches time, written with knobs' public ops; bench/peer_torch.py
 * does the identical work in PyTorch.
 *
 *   mlp:       784-512-512-10 ReLU MLP, batch 128: forward, cross-entropy, backward, AdamW step
 *              (knobs' public optimizer, which runs the backend's fused Adam kernel).
 *   gpt-block: one GPT-2 block (pre-LN, causal attention, tanh-GELU MLP, residuals), width 256,
 *              4 heads, context 128, batch 16: forward + backward from a fixed upstream gradient.
 *   gpt-train / gpt-generate: the kjv-gpt model through GPT, AdamW, clipGradNorm, GPT.generate.
 *   llama-train: the kjv-llama recipe's model (recipes/kjv-llama.json) through Llama, AdamW, clipGradNorm.
 *   fashion:   Fashion-MNIST MLP / CNN training steps through ImageLoader and Adam.
 */
import { fileURLToPath } from 'node:url';
import * as k from '../src/index.js';
import type { Tensor } from '../src/index.js';
import { buildModel } from '../src/train/build.js';

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

export function mlpWorkload(batch = 128): Workload {
  const g = new k.Generator(0);
  const sizes = [784, 512, 512, 10];
  const params: Tensor[] = [];
  for (let i = 0; i < 3; i++) {
    params.push(param([sizes[i]!, sizes[i + 1]!], 1 / Math.sqrt(sizes[i]!), g), param([sizes[i + 1]!], 0.01, g));
  }
  const x = k.rand([batch, 784], { generator: g });
  const y = k.randint(0, 10, [batch], { generator: g });
  // torch.optim.AdamW's defaults (betas 0.9/0.999, eps 1e-8, wd 0.01 on every tensor, as the peer)
  const opt = new k.AdamW(params, { lr: 1e-3, decay: () => true });
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

export interface GptBlockConfig {
  batch: number;
  context: number;
  width: number;
  heads: number;
}
export const GPT_BLOCK: GptBlockConfig = { batch: 16, context: 128, width: 256, heads: 4 };

export function gptBlockWorkload(cfg: GptBlockConfig = GPT_BLOCK): Workload {
  const { batch: B, context: T, width: C, heads: H } = cfg;
  const D = C / H;
  const g = new k.Generator(0);
  const ones = () => k.ones([C]).requiresGrad_();
  const zeros = (n: number) => k.zeros([n]).requiresGrad_();
  const p = {
    ln1w: ones(),
    ln1b: zeros(C),
    wqkv: param([C, 3 * C], 0.02, g),
    bqkv: zeros(3 * C),
    wproj: param([C, C], 0.02, g),
    bproj: zeros(C),
    ln2w: ones(),
    ln2b: zeros(C),
    wfc: param([C, 4 * C], 0.02, g),
    bfc: zeros(4 * C),
    wfc2: param([4 * C, C], 0.02, g),
    bfc2: zeros(C),
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

/** The kjv-gpt recipe's model: byte vocabulary, 4 layers, 4 heads, width 256, context 128. */
export const KJV_GPT = { vocab_size: 256, n_positions: 128, n_embd: 256, n_layer: 4, n_head: 4, dropout: 0 } as const;
export const KJV_BATCH = 16;
/** The wide shape of the speed issue: 4 layers, width 768, 12 heads, context 512 (batch 8). */
export const WIDE_GPT = { vocab_size: 256, n_positions: 512, n_embd: 768, n_layer: 4, n_head: 12, dropout: 0 } as const;
export const WIDE_BATCH = 8;

/**
 * A full GPT training step through the public API: GPT.loss (embeddings, 4 blocks, ln_f, tied
 * head, cross-entropy), backward, clipGradNorm(1.0), AdamW (lr 1e-3, betas 0.9/0.95, wd 0.1 on
 * matrices only) — the kjv-gpt recipe on random bytes.
 */
export function gptTrainWorkload(batch = KJV_BATCH, config: typeof KJV_GPT | typeof WIDE_GPT = KJV_GPT): Workload {
  const T = config.n_positions;
  const model = new k.GPT(config, { seed: 0 });
  model.train();
  const g = new k.Generator(1);
  const ids = k.randint(0, config.vocab_size, [batch, T + 1], { generator: g });
  const x = k.slice(ids, 1, 0, T).contiguous();
  const y = k.slice(ids, 1, 1, T + 1).contiguous();
  const opt = new k.AdamW(model, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
  return {
    items: batch * T,
    step() {
      opt.zeroGrad();
      model.loss(x, y).backward();
      k.clipGradNorm(model, 1.0);
      opt.step();
    },
  };
}

/**
 * A full Llama training step at recipes/kjv-llama.json's model, batch, context and optimizer
 * (random bytes instead of the text): Llama.loss, backward, clipGradNorm, AdamW. `config` is the
 * model's complete Hugging Face config, which the peer builds its twin from.
 */
export async function llamaTrainWorkload(): Promise<Workload & { config: k.LlamaConfig; batch: number }> {
  const recipe = await k.loadRecipe(fileURLToPath(new URL('../../recipes/kjv-llama.json', import.meta.url)));
  const model = buildModel(recipe, new k.Generator(0));
  if (!(model instanceof k.Llama)) throw new Error('recipes/kjv-llama.json does not build a Llama');
  const batch = recipe.batch_size;
  const T = recipe.context ?? model.config.max_position_embeddings;
  model.train();
  const ids = k.randint(0, model.config.vocab_size, [batch, T + 1], { generator: new k.Generator(1) });
  const x = k.slice(ids, 1, 0, T).contiguous();
  const y = k.slice(ids, 1, 1, T + 1).contiguous();
  const o = recipe.optimizer;
  if (o.type !== 'adamw') throw new Error('recipes/kjv-llama.json: the bench expects AdamW');
  const opt = new k.AdamW(model, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
  const clip = recipe.clip_grad_norm ?? Infinity;
  return {
    config: model.config,
    batch,
    items: batch * T,
    step() {
      opt.zeroGrad();
      model.loss(x, y).backward();
      k.clipGradNorm(model, clip);
      opt.step();
    },
  };
}

/** Greedy generation with the KV cache: `prompt` tokens in, `tokens` new ones out (batch 1). */
export function gptGenerateWorkload(promptLength = 16, tokens = 256): Workload & { model: k.GPT } {
  // n_positions must hold prompt + generated tokens so the cache is never cropped
  const model = new k.GPT(
    { ...KJV_GPT, n_positions: Math.max(KJV_GPT.n_positions, promptLength + tokens) },
    { seed: 0 },
  );
  const prompt = Array.from({ length: promptLength }, (_, i) => (i * 37 + 11) % KJV_GPT.vocab_size);
  return {
    model,
    items: tokens,
    step() {
      const r = model.generate(prompt, { maxNewTokens: tokens, temperature: 0, eosTokenId: null });
      if (r.tokens.length !== tokens) throw new Error(`generate made ${r.tokens.length} tokens, expected ${tokens}`);
    },
  };
}

/**
 * Fashion-MNIST training, `steps` Adam (lr 1e-3) steps of `batch` images per `step()` call,
 * through the public API: ImageLoader (shuffled each epoch, normalised), MLPClassifier
 * 784-256-128-10 or CNNClassifier (default config: conv 32, conv 64, 3×3 'same', 2×2 max pools,
 * fc 128), crossEntropy, backward, Adam.
 */
export function fashionWorkload(kind: 'mlp' | 'cnn', data: k.ImageDataset, batch: number, steps: number): Workload {
  const model =
    kind === 'mlp' ? new k.MLPClassifier({ hidden: [256, 128] }, { seed: 0 }) : new k.CNNClassifier({}, { seed: 0 });
  model.train();
  const loader = new k.ImageLoader(data, {
    batchSize: batch,
    seed: 0,
    dropLast: true,
    normalize: { mean: 0.286, std: 0.353 },
    layout: kind === 'mlp' ? 'flat' : 'nchw',
  });
  const opt = new k.Adam(model, { lr: 1e-3 });
  return {
    items: steps * batch,
    step() {
      for (let i = 0; i < steps; i++) {
        const { inputs, labels } = loader.next();
        opt.zeroGrad();
        k.crossEntropy(model.forward(inputs), labels).backward();
        opt.step();
      }
    },
  };
}
