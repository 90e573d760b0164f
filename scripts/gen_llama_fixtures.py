#!/usr/bin/python3
"""PyTorch fixtures for knobs' Llama-family model (src/models/llama.ts); run by hand, outputs committed.

    /usr/bin/python3 scripts/gen_llama_fixtures.py

writes test/fixtures/train/llama_tiny.json with two cases, each computed by LlamaForCausalLM's
published math written out in torch below (transformers is not installed here):

  llama   grouped-query attention (4 query heads, 2 key/value heads), untied lm_head,
          rope_scaling {rope_type: llama3} with one frequency in each of its three bands
  qwen2   biases on q/k/v (not o), tied head, rope_scaling {rope_type: linear}

Each case holds
  config        LlamaConfig fields (Hugging Face names)
  weights       {hf name: {shape, f32_b64}}: random initial weights (norm weights 1 + noise, so
                they matter); Linear weights [out, in]
  batches       5 batches of token ids [B, T+1]: inputs [:, :-1], targets [:, 1:]
  step0         {loss, logits [B,T,V] flat, grads_f32_b64 {name: flat}} on batches[0]
  adamw         {lr, betas, eps, weight_decay (rank >= 2 only), clip, losses[5], grad_norms[5],
                 final_loss (batches[0] after 5 updates), final_checksums {name: [sum, sum of squares]}}
  greedy        {prompt, tokens, min_margin}: greedy tokens recomputing the whole context each step,
                and the smallest top-1 minus top-2 logit gap among them (a tie would make the
                comparison meaningless)
Float32 arrays are base64 of little-endian bytes (keys ending in f32_b64) or shortest decimals.
"""
import json
import math
import os
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

from gen_train_fixtures import f32, f32_b64  # same encodings as the GPT fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'train', 'llama_tiny.json')


def inv_frequencies(cfg):
    """transformers' rope init functions (default, linear, llama3), in float32."""
    D = cfg['head_dim']
    inv = 1.0 / (cfg['rope_theta'] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    s = cfg['rope_scaling']
    if s is None:
        return inv
    if s['rope_type'] == 'linear':
        return inv / s['factor']
    assert s['rope_type'] == 'llama3'
    factor, low, high, old = s['factor'], s['low_freq_factor'], s['high_freq_factor'], s['original_max_position_embeddings']
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class TinyLlama(torch.nn.Module):
    """LlamaForCausalLM / Qwen2ForCausalLM with parameters named as Hugging Face names them."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        V, C, F_, L = cfg['vocab_size'], cfg['hidden_size'], cfg['intermediate_size'], cfg['num_hidden_layers']
        H, K, D = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim']
        bias = cfg['model_type'] == 'qwen2'
        shapes = {'model.embed_tokens.weight': [V, C]}
        for i in range(L):
            p = f'model.layers.{i}.'
            # LlamaDecoderLayer registers self_attn, mlp, input_layernorm, post_attention_layernorm
            for name, rows in (('q', H * D), ('k', K * D), ('v', K * D)):
                shapes[p + f'self_attn.{name}_proj.weight'] = [rows, C]
                if bias:
                    shapes[p + f'self_attn.{name}_proj.bias'] = [rows]
            shapes[p + 'self_attn.o_proj.weight'] = [C, H * D]
            shapes[p + 'mlp.gate_proj.weight'] = [F_, C]
            shapes[p + 'mlp.up_proj.weight'] = [F_, C]
            shapes[p + 'mlp.down_proj.weight'] = [C, F_]
            shapes[p + 'input_layernorm.weight'] = [C]
            shapes[p + 'post_attention_layernorm.weight'] = [C]
        shapes['model.norm.weight'] = [C]
        if not cfg['tie_word_embeddings']:
            shapes['lm_head.weight'] = [V, C]
        self.names = list(shapes)
        self.params = torch.nn.ParameterDict()
        for name, shape in shapes.items():
            if name.endswith('norm.weight'):
                t = 1 + torch.randn(shape) * 0.1
            else:
                t = torch.randn(shape) * (0.05 if name.endswith('.bias') else 0.15)
            self.params[name.replace('.', '/')] = torch.nn.Parameter(t)
        self.inv_freq = inv_frequencies(cfg)

    def p(self, name):
        return self.params[name.replace('.', '/')]

    def named(self):
        return [(n, self.p(n)) for n in self.names]

    def rms_norm(self, x, name):
        eps = self.cfg['rms_norm_eps']
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * self.p(name)

    def linear(self, x, name):
        y = x @ self.p(name + '.weight').t()
        if name + '.bias' in self.names:
            y = y + self.p(name + '.bias')
        return y

    def forward(self, ids):
        cfg = self.cfg
        B, T = ids.shape
        H, K, D = cfg['num_attention_heads'], cfg['num_key_value_heads'], cfg['head_dim']
        freqs = (self.inv_freq[:, None] @ torch.arange(T).float()[None, :]).t()  # [T, D/2], float32
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        x = self.p('model.embed_tokens.weight')[ids]
        for i in range(cfg['num_hidden_layers']):
            p = f'model.layers.{i}.'
            h = self.rms_norm(x, p + 'input_layernorm.weight')
            q = self.linear(h, p + 'self_attn.q_proj').view(B, T, H, D).transpose(1, 2)
            k = self.linear(h, p + 'self_attn.k_proj').view(B, T, K, D).transpose(1, 2)
            v = self.linear(h, p + 'self_attn.v_proj').view(B, T, K, D).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            # repeat_kv: query head j reads key/value head j // (H / K)
            k = k[:, :, None].expand(B, K, H // K, T, D).reshape(B, H, T, D)
            v = v[:, :, None].expand(B, K, H // K, T, D).reshape(B, H, T, D)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
            att = att.masked_fill(~mask, float('-inf')).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, H * D)
            x = x + self.linear(y, p + 'self_attn.o_proj')
            h = self.rms_norm(x, p + 'post_attention_layernorm.weight')
            x = x + self.linear(F.silu(self.linear(h, p + 'mlp.gate_proj')) * self.linear(h, p + 'mlp.up_proj'), p + 'mlp.down_proj')
        x = self.rms_norm(x, 'model.norm.weight')
        head = self.p('model.embed_tokens.weight') if cfg['tie_word_embeddings'] else self.p('lm_head.weight')
        return x @ head.t()

    def loss(self, batch):
        logits = self.forward(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def case(cfg, seed, B=2, T=6, steps=5, new_tokens=10):
    torch.manual_seed(seed)
    model = TinyLlama(cfg)
    weights = {n: {'shape': list(p.shape), 'f32_b64': f32_b64(p.detach())} for n, p in model.named()}
    batches = [torch.randint(0, cfg['vocab_size'], (B, T + 1)) for _ in range(steps)]

    prompt = [3, 1, 4]
    ctx, margins = list(prompt), []
    with torch.no_grad():
        for _ in range(new_tokens):
            last = model(torch.tensor([ctx]))[0, -1]
            top = last.topk(2).values
            margins.append(float(top[0] - top[1]))
            ctx.append(int(last.argmax()))
    greedy = {'prompt': prompt, 'tokens': ctx[len(prompt):], 'min_margin': min(margins)}

    logits = model(batches[0][:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, cfg['vocab_size']), batches[0][:, 1:].reshape(-1))
    loss.backward()
    step0 = {'loss': float(loss), 'logits': f32(logits.detach()), 'grads_f32_b64': {n: f32_b64(p.grad) for n, p in model.named()}}

    lr, betas, eps, wd, clip = 3e-3, (0.9, 0.95), 1e-8, 0.1, 1.0
    decay = [p for _, p in model.named() if p.dim() >= 2]
    no_decay = [p for _, p in model.named() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': wd}, {'params': no_decay, 'weight_decay': 0.0}], lr=lr, betas=betas, eps=eps)
    losses, norms = [], []
    for s in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batches[s])
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_([p for _, p in model.named()], clip)))
        opt.step()
        losses.append(float(loss))
    with torch.no_grad():
        final_loss = float(model.loss(batches[0]))
    checksums = {n: [float(p.detach().double().sum()), float((p.detach().double() ** 2).sum())] for n, p in model.named()}
    return {
        'config': cfg, 'B': B, 'T': T, 'weights': weights, 'batches': [b.tolist() for b in batches], 'step0': step0,
        'adamw': {'lr': lr, 'betas': list(betas), 'eps': eps, 'weight_decay': wd, 'clip': clip, 'losses': losses,
                  'grad_norms': norms, 'final_loss': final_loss, 'final_checksums': checksums},
        'greedy': greedy,
    }


LLAMA = {
    'model_type': 'llama', 'vocab_size': 32, 'hidden_size': 16, 'intermediate_size': 24, 'num_hidden_layers': 2,
    'num_attention_heads': 4, 'num_key_value_heads': 2, 'head_dim': 4, 'rms_norm_eps': 1e-5,
    'rope_theta': 10000.0, 'max_position_embeddings': 32, 'tie_word_embeddings': False, 'hidden_act': 'silu',
    'bos_token_id': None, 'eos_token_id': None,
    # head_dim 4 has frequencies 1 and 0.01 (wavelengths 6.3 and 628): with these factors the first
    # is kept (below 16) and the second stretched (above 64); see also LLAMA_D8 for the middle band.
    'rope_scaling': {'rope_type': 'llama3', 'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                     'original_max_position_embeddings': 64},
}

# head_dim 8 (frequencies 1, 0.1, 0.01, 0.001): wavelength 62.8 falls in llama3's smoothed band.
LLAMA_D8 = dict(LLAMA, hidden_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=8, num_hidden_layers=1)

QWEN2 = {
    'model_type': 'qwen2', 'vocab_size': 32, 'hidden_size': 16, 'intermediate_size': 24, 'num_hidden_layers': 1,
    'num_attention_heads': 4, 'num_key_value_heads': 2, 'head_dim': 4, 'rms_norm_eps': 1e-6,
    'rope_theta': 1000000.0, 'max_position_embeddings': 32, 'tie_word_embeddings': True, 'hidden_act': 'silu',
    'bos_token_id': None, 'eos_token_id': None, 'rope_scaling': {'rope_type': 'linear', 'factor': 2.0},
}


def first_clear_case(cfg, seed, **kw):
    """The case of the first seed from `seed` on whose greedy steps all have a top-2 margin >= 1e-2."""
    for s in range(seed, seed + 100):
        c = case(cfg, s, **kw)
        if c['greedy']['min_margin'] >= 1e-2:
            return dict(c, seed=s)
    raise SystemExit(f'no seed in [{seed}, {seed + 100}) gives greedy margins >= 1e-2')


def main():
    data = {
        'generator': 'scripts/gen_llama_fixtures.py',
        'command': '/usr/bin/python3 scripts/gen_llama_fixtures.py',
        'torch_version': torch.__version__,
        'numpy_version': np.__version__,
        'python_version': platform.python_version(),
        'cases': {'llama': first_clear_case(LLAMA, 100), 'llama_d8': first_clear_case(LLAMA_D8, 200, steps=2),
                  'qwen2': first_clear_case(QWEN2, 300)},
    }
    with open(OUT, 'w') as f:
        json.dump(data, f, separators=(',', ':'))
        f.write('\n')
    print(f'wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)', file=sys.stderr)


if __name__ == '__main__':
    main()
