#!/usr/bin/python3
"""Runs a knobs training recipe in PyTorch (1.13, Debian's python3-torch), as the reference for
knobs' own `knobs train`.

    /usr/bin/python3 bench/torch_train.py RECIPE.json [--steps N | --epochs N] [--seed S]
        [--data PATH] [--out DIR] [--threads N] [--quiet]

Same as knobs (src/train/*, src/models/*, src/optim/*, src/data/*):
  * recipe defaults: those of the zod schema in src/train/recipe.ts (unknown fields are errors);
  * architectures and parameter names: MLPClassifier, CNNClassifier, GPT (GPT-2: pre-LN blocks,
    Conv1D [in, out] weights, tanh GELU, tied head), Llama / Qwen2 (LlamaForCausalLM: RMSNorm,
    rotate-half RoPE with linear / llama3 scaling, SwiGLU, grouped-query attention, tied or untied
    head; Qwen2 adds q/k/v biases); init: PyTorch defaults for the classifiers, GPT-2's
    N(0, 0.02) / N(0, 0.02/sqrt(2L)) for c_proj, zero biases, unit norms for GPT, and
    N(0, initializer_range) for every Llama matrix and embedding, zero biases, unit norms;
  * data split and normalisation: IDX train/test, pixels (v/255 - 0.2860)/0.3530, training
    drops the last partial batch and reshuffles each epoch; text: the last
    floor(size * validation_fraction) bytes validate, training draws random windows of
    context + 1 bytes from the train split;
  * optimizer: SGD / Adam (L2 on every parameter) / AdamW (decoupled decay on rank >= 2
    parameters only: matrices, conv kernels, embeddings; never biases or LayerNorm weights);
  * schedule: lr(s) for 0-based step s: warm-up lr*(s+1)/W for s < W, then cosine
    min_lr + (lr - min_lr)(1 + cos(pi (s-W)/(N-W)))/2 (N = max(total steps, W)), or constant;
  * step = grad_accum_steps micro-batches (loss / accum), clip_grad_norm_ (global L2), update;
    total steps = steps, or ceil(epochs * batches per epoch / grad_accum_steps);
  * evaluation at every eval_every steps and at the last step: classifiers on the whole test
    split (mean loss over examples, accuracy); language models on eval_batches batches of
    consecutive validation windows (every `context` bytes, batch_size windows a batch), mean loss
    per byte in nats and bits_per_byte = loss / ln 2;
  * metrics.jsonl rows: {"step","loss","lr","grad_norm","samples_per_s"|"tokens_per_s","elapsed_s"}
    every log_every steps and at the last, {"step","eval_loss","accuracy"|"bits_per_byte","elapsed_s"}.
Different from knobs: the random streams (init values, dropout masks, data order) come from
torch's generators, so runs agree with knobs in distribution, not bit for bit.

Prints a summary JSON on stdout (also written to OUT/summary.json with --out); progress on stderr.
"""
import argparse
import gzip
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FASHION_MEAN, FASHION_STD = 0.2860, 0.3530

# ---------------------------------------------------------------------------------------------
# Recipe: the zod schema's fields and defaults (src/train/recipe.ts).


class RecipeError(Exception):
    pass


LANGUAGE_MODELS = ('gpt', 'llama', 'qwen2')


def _obj(d, where, allowed):
    if not isinstance(d, dict):
        raise RecipeError(f'{where}: expected an object')
    extra = set(d) - set(allowed)
    if extra:
        raise RecipeError(f'{where}: unknown field(s) {sorted(extra)}')
    return dict(d)


def fill_defaults(r):
    top = ['name', 'description', 'model', 'data', 'optimizer', 'schedule', 'batch_size', 'context', 'steps', 'epochs',
           'grad_accum_steps', 'clip_grad_norm', 'seed', 'log_every', 'eval_every', 'eval_batches', 'checkpoint_every',
           'tokenizer']
    r = _obj(r, 'recipe', top)
    m = r['model']
    t = m.get('type')
    if t == 'mlp':
        m = _obj(m, 'model', ['type', 'input', 'hidden', 'classes', 'dropout'])
        m = {'input': 784, 'classes': 10, 'dropout': 0, **m}
        if 'hidden' not in m:
            raise RecipeError('model.hidden: required')
    elif t == 'cnn':
        m = _obj(m, 'model', ['type', 'in_channels', 'image_size', 'channels', 'kernel_size', 'hidden', 'classes', 'dropout'])
        m = {'in_channels': 1, 'image_size': 28, 'channels': [32, 64], 'kernel_size': 3, 'hidden': 128, 'classes': 10, 'dropout': 0, **m}
    elif t == 'gpt':
        m = _obj(m, 'model', ['type', 'vocab_size', 'n_positions', 'n_embd', 'n_layer', 'n_head', 'layer_norm_epsilon', 'dropout'])
        m = {'vocab_size': 256, 'layer_norm_epsilon': 1e-5, 'dropout': 0, **m}
        for k in ('n_positions', 'n_embd', 'n_layer', 'n_head'):
            if k not in m:
                raise RecipeError(f'model.{k}: required')
        if m['n_embd'] % m['n_head']:
            raise RecipeError('model.n_head: n_embd must be divisible by n_head')
    elif t in ('llama', 'qwen2'):
        m = _obj(m, 'model', ['type', 'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads',
                              'num_key_value_heads', 'head_dim', 'max_position_embeddings', 'rms_norm_eps', 'rope_theta', 'rope_scaling',
                              'tie_word_embeddings', 'initializer_range', 'bos_token_id', 'eos_token_id'])
        for k in ('hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings'):
            if k not in m:
                raise RecipeError(f'model.{k}: required')
        m = {'vocab_size': 256, 'num_key_value_heads': m['num_attention_heads'], 'head_dim': m['hidden_size'] // m['num_attention_heads'],
             'rms_norm_eps': 1e-6, 'rope_theta': 10000, 'rope_scaling': None, 'tie_word_embeddings': False, 'initializer_range': 0.02,
             'bos_token_id': None, 'eos_token_id': None, **m}
        if m['num_attention_heads'] % m['num_key_value_heads']:
            raise RecipeError('model.num_key_value_heads: must divide num_attention_heads')
        if m['head_dim'] * m['num_attention_heads'] != m['hidden_size']:
            raise RecipeError('model.head_dim: must equal hidden_size / num_attention_heads')
    else:
        raise RecipeError(f'model.type: unknown {t!r}')
    if r.get('tokenizer', 'bytes') != 'bytes':
        raise RecipeError('tokenizer: must be "bytes"')
    r['tokenizer'] = 'bytes'
    r['model'] = m
    d = r['data']
    if d.get('type') == 'idx':
        d = _obj(d, 'data', ['type', 'train_images', 'train_labels', 'test_images', 'test_labels', 'layout', 'hint'])
        d = {'layout': 'flat', **d}
    elif d.get('type') == 'text':
        d = _obj(d, 'data', ['type', 'path', 'validation_fraction', 'hint'])
        d = {'validation_fraction': 0.05, **d}
    else:
        raise RecipeError(f'data.type: unknown {d.get("type")!r}')
    if (m['type'] in LANGUAGE_MODELS) != (d['type'] == 'text'):
        raise RecipeError('data.type: gpt, llama and qwen2 models train on text data; mlp and cnn models on idx data')
    r['data'] = d
    o = r['optimizer']
    if o.get('type') == 'sgd':
        o = {'momentum': 0, 'nesterov': False, 'weight_decay': 0, **_obj(o, 'optimizer', ['type', 'lr', 'momentum', 'nesterov', 'weight_decay'])}
    elif o.get('type') in ('adam', 'adamw'):
        o = {'betas': [0.9, 0.999], 'eps': 1e-8, 'weight_decay': 0, **_obj(o, 'optimizer', ['type', 'lr', 'betas', 'eps', 'weight_decay'])}
    else:
        raise RecipeError(f'optimizer.type: unknown {o.get("type")!r}')
    r['optimizer'] = o
    s = r.get('schedule', {'type': 'constant', 'warmup_steps': 0})
    if s.get('type') == 'constant':
        s = {'warmup_steps': 0, **_obj(s, 'schedule', ['type', 'warmup_steps'])}
    elif s.get('type') == 'cosine':
        s = {'warmup_steps': 0, 'min_lr': 0, **_obj(s, 'schedule', ['type', 'warmup_steps', 'min_lr'])}
        if s['min_lr'] > o['lr']:
            raise RecipeError('schedule.min_lr: above optimizer.lr')
    else:
        raise RecipeError(f'schedule.type: unknown {s.get("type")!r}')
    r['schedule'] = s
    defaults = {'grad_accum_steps': 1, 'seed': 0, 'log_every': 10, 'eval_batches': 20}
    r = {**defaults, **r}
    if ('steps' in r) == ('epochs' in r):
        raise RecipeError('steps: give exactly one of "steps" or "epochs"')
    if m['type'] in LANGUAGE_MODELS:
        positions = m['n_positions'] if m['type'] == 'gpt' else m['max_position_embeddings']
        r.setdefault('context', positions)
        if r['context'] > positions:
            raise RecipeError("context: must be at most the model's positions")
    return r


# ---------------------------------------------------------------------------------------------
# Models (src/models/*.ts), with knobs' parameter names.


class MLPClassifier(nn.Module):
    def __init__(self, c):
        super().__init__()
        widths = [c['input'], *c['hidden']]
        self.layers = nn.ModuleList(nn.Linear(widths[i], h) for i, h in enumerate(c['hidden']))
        self.drop = nn.Dropout(c['dropout'])
        self.head = nn.Linear(widths[-1], c['classes'])

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.layers:
            h = self.drop(F.relu(layer(h)))
        return self.head(h)


class CNNClassifier(nn.Module):
    """(Conv2d 'same' -> ReLU -> MaxPool 2x2) per channel entry, flatten, fc -> ReLU -> Dropout, head."""

    def __init__(self, c):
        super().__init__()
        k = c['kernel_size']
        pad = k // 2
        ins = [c['in_channels'], *c['channels']]
        self.convs = nn.ModuleList(nn.Conv2d(ins[i], ch, k, padding=pad) for i, ch in enumerate(c['channels']))
        s = c['image_size']
        for _ in c['channels']:
            s = (s + 2 * pad - k + 1) // 2
        self.fc = nn.Linear(c['channels'][-1] * s * s, c['hidden'])
        self.drop = nn.Dropout(c['dropout'])
        self.head = nn.Linear(c['hidden'], c['classes'])

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = F.max_pool2d(F.relu(conv(h)), 2)
        h = h.flatten(1)
        return self.head(self.drop(F.relu(self.fc(h))))


class Conv1D(nn.Module):
    """GPT-2's Conv1D: y = x W + b with W stored [in, out]."""

    def __init__(self, nin, nout):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nin, nout))
        self.bias = nn.Parameter(torch.zeros(nout))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.n_head = c['n_head']
        C = c['n_embd']
        self.c_attn = Conv1D(C, 3 * C)
        self.c_proj = Conv1D(C, C)
        self.attn_dropout = nn.Dropout(c['dropout'])
        self.resid_dropout = nn.Dropout(c['dropout'])
        P = c['n_positions']
        self.register_buffer('mask', torch.tril(torch.ones(P, P, dtype=torch.bool)), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        H = self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # q, k, v side by side, in that order
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = att.masked_fill(~self.mask[:T, :T], float('-inf'))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        C = c['n_embd']
        eps = c['layer_norm_epsilon']
        self.ln_1 = nn.LayerNorm(C, eps=eps)
        self.attn = Attention(c)
        self.ln_2 = nn.LayerNorm(C, eps=eps)
        self.mlp = nn.Module()
        self.mlp.c_fc = Conv1D(C, 4 * C)
        self.mlp.c_proj = Conv1D(4 * C, C)
        self.mlp.dropout = nn.Dropout(c['dropout'])

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        h = F.gelu(self.mlp.c_fc(self.ln_2(x)), approximate='tanh')
        return x + self.mlp.dropout(self.mlp.c_proj(h))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c['vocab_size'], c['n_embd'])
        self.wpe = nn.Embedding(c['n_positions'], c['n_embd'])
        self.drop = nn.Dropout(c['dropout'])
        self.h = nn.ModuleList(Block(c) for _ in range(c['n_layer']))
        self.ln_f = nn.LayerNorm(c['n_embd'], eps=c['layer_norm_epsilon'])
        # GPT.initWeights: norms 1, biases 0, c_proj N(0, 0.02/sqrt(2L)), everything else N(0, 0.02).
        std = 0.02
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(('ln_1.weight', 'ln_2.weight')) or name == 'ln_f.weight':
                    p.fill_(1.0)
                elif name.endswith('.bias'):
                    p.zero_()
                else:
                    p.normal_(0.0, std / math.sqrt(2 * c['n_layer']) if name.endswith('.c_proj.weight') else std)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.drop(self.wte(ids) + self.wpe(torch.arange(T, device=ids.device)))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied head


def rope_inverse_frequencies(c):
    """transformers' default / linear / llama3 RoPE frequencies (src/models/llama.ts ropeInverseFrequencies)."""
    D = c['head_dim']
    inv = 1.0 / (c['rope_theta'] ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    s = c['rope_scaling']
    if s is None:
        return inv
    if s['rope_type'] == 'linear':
        return inv / s['factor']
    factor, low, high, old = s['factor'], s['low_freq_factor'], s['high_freq_factor'], s['original_max_position_embeddings']
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


class RMSNorm(nn.Module):
    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, H, K, D = c['hidden_size'], c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
        bias = c['type'] == 'qwen2'
        self.H, self.K, self.D = H, K, D
        self.q_proj = nn.Linear(C, H * D, bias=bias)
        self.k_proj = nn.Linear(C, K * D, bias=bias)
        self.v_proj = nn.Linear(C, K * D, bias=bias)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        P = c['max_position_embeddings']
        self.register_buffer('mask', torch.tril(torch.ones(P, P, dtype=torch.bool)), persistent=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, K, D = self.H, self.K, self.D
        q = self.q_proj(x).view(B, T, H, D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, K, D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, K, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if K != H:  # repeat_kv: query head j reads key/value head j // (H / K)
            k = k[:, :, None].expand(B, K, H // K, T, D).reshape(B, H, T, D)
            v = v[:, :, None].expand(B, K, H // K, T, D).reshape(B, H, T, D)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        att = F.softmax(att.masked_fill(~self.mask[:T, :T], float('-inf')), dim=-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(B, T, H * D))


class LlamaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, Fw = c['hidden_size'], c['intermediate_size']
        self.self_attn = LlamaAttention(c)
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(C, Fw, bias=False)
        self.mlp.up_proj = nn.Linear(C, Fw, bias=False)
        self.mlp.down_proj = nn.Linear(Fw, C, bias=False)
        self.input_layernorm = RMSNorm(C, c['rms_norm_eps'])
        self.post_attention_layernorm = RMSNorm(C, c['rms_norm_eps'])

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        h = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class Llama(nn.Module):
    """LlamaForCausalLM (Qwen2ForCausalLM for type qwen2) with Hugging Face's parameter names."""

    def __init__(self, c):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c['vocab_size'], c['hidden_size'])
        self.model.layers = nn.ModuleList(LlamaLayer(c) for _ in range(c['num_hidden_layers']))
        self.model.norm = RMSNorm(c['hidden_size'], c['rms_norm_eps'])
        self.lm_head = None if c['tie_word_embeddings'] else nn.Linear(c['hidden_size'], c['vocab_size'], bias=False)
        freqs = torch.arange(c['max_position_embeddings']).float()[:, None] * rope_inverse_frequencies(c)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # [P, D]
        self.register_buffer('cos', emb.cos(), persistent=False)
        self.register_buffer('sin', emb.sin(), persistent=False)
        # Llama.initWeights: norms 1, biases 0, every matrix and embedding N(0, initializer_range).
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith('norm.weight'):
                    p.fill_(1.0)
                elif name.endswith('.bias'):
                    p.zero_()
                else:
                    p.normal_(0.0, c['initializer_range'])

    def forward(self, ids):
        T = ids.shape[1]
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        x = self.model.norm(x)
        return self.lm_head(x) if self.lm_head is not None else x @ self.model.embed_tokens.weight.t()


def build_model(r):
    m = r['model']
    return {'mlp': MLPClassifier, 'cnn': CNNClassifier, 'gpt': GPT, 'llama': Llama, 'qwen2': Llama}[m['type']](m)


def model_loss(model, is_lm, x, y):
    logits = model(x)
    if is_lm:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return F.cross_entropy(logits, y)


# ---------------------------------------------------------------------------------------------
# Optimizer and schedule (src/optim, src/train/build.ts).


def build_optimizer(r, model):
    o = r['optimizer']
    params = list(model.parameters())
    if o['type'] == 'sgd':
        return torch.optim.SGD(params, lr=o['lr'], momentum=o['momentum'], nesterov=o['nesterov'], weight_decay=o['weight_decay'])
    if o['type'] == 'adam':
        return torch.optim.Adam(params, lr=o['lr'], betas=tuple(o['betas']), eps=o['eps'], weight_decay=o['weight_decay'])
    # AdamW: decayMatricesOnly (rank >= 2 decays; biases, norm weights do not).
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{'params': decay, 'weight_decay': o['weight_decay']}, {'params': no_decay, 'weight_decay': 0.0}]
    return torch.optim.AdamW(groups, lr=o['lr'], betas=tuple(o['betas']), eps=o['eps'])


def build_schedule(r, total_steps):
    s = r['schedule']
    lr = r['optimizer']['lr']
    W = s['warmup_steps']

    def warm(step):
        return lr * (step + 1) / W if step < W else None

    if s['type'] == 'constant':
        return lambda step: warm(step) if warm(step) is not None else lr
    N = max(total_steps, W)
    min_lr = s['min_lr']

    def cosine(step):
        w = warm(step)
        if w is not None:
            return w
        if step >= N:
            return min_lr
        ratio = (step - W) / (N - W)
        return min_lr + 0.5 * (1 + math.cos(math.pi * ratio)) * (lr - min_lr)

    return cosine


# ---------------------------------------------------------------------------------------------
# Data (src/data/idx.ts, images.ts, text.ts; src/train/sources.ts, evaluate.ts).


def read_idx(path):
    with open(path, 'rb') as f:
        raw = f.read()
    if raw[:2] == b'\x1f\x8b':
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f'{path}: not a u8 IDX file')
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], 'big') for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f'{path}: {data.size} bytes of data for shape {dims}')
    return data.reshape(dims)


class ImageData:
    def __init__(self, r, seed):
        d = r['data']
        lut = ((np.arange(256, dtype=np.float64) / 255 - FASHION_MEAN) / FASHION_STD).astype(np.float32)

        def load(images, labels):
            x = torch.from_numpy(lut[read_idx(images)])  # [N, H, W] f32
            y = torch.from_numpy(read_idx(labels).astype(np.int64))
            if x.shape[0] != y.shape[0]:
                raise ValueError(f'{images}: {x.shape[0]} images but {y.shape[0]} labels')
            shape = (x.shape[0], 1, x.shape[1], x.shape[2]) if d['layout'] == 'image' else (x.shape[0], x.shape[1] * x.shape[2])
            return x.reshape(shape).contiguous(), y

        self.train_x, self.train_y = load(d['train_images'], d['train_labels'])
        self.test_x, self.test_y = load(d['test_images'], d['test_labels'])
        self.B = r['batch_size']
        n = self.train_x.shape[0]
        self.batches_per_epoch = n // self.B  # drop the last partial batch
        self.unit = 'samples'
        self.gen = torch.Generator().manual_seed(seed)
        self.order = None
        self.pos = self.batches_per_epoch

    def next(self):
        if self.pos >= self.batches_per_epoch:
            self.order = torch.randperm(self.train_x.shape[0], generator=self.gen)
            self.pos = 0
        idx = self.order[self.pos * self.B:(self.pos + 1) * self.B]
        self.pos += 1
        return self.train_x[idx], self.train_y[idx], len(idx)

    @torch.no_grad()
    def evaluate(self, model, r):
        loss_sum, correct, n = 0.0, 0, self.test_x.shape[0]
        for i in range(0, n, self.B):
            x, y = self.test_x[i:i + self.B], self.test_y[i:i + self.B]
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction='sum').item()
            correct += (logits.argmax(1) == y).sum().item()
        return {'eval_loss': loss_sum / n, 'accuracy': correct / n, 'examples': n}


class TextData:
    def __init__(self, r, seed):
        d = r['data']
        with open(d['path'], 'rb') as f:
            data = np.frombuffer(f.read(), dtype=np.uint8)
        size = data.size
        vbytes = math.floor(size * d['validation_fraction'])
        self.bytes = torch.from_numpy(data.astype(np.int64))
        self.train = (0, size - vbytes)
        self.val = (size - vbytes, size)
        self.B, self.T = r['batch_size'], r['context']
        for name, (a, b) in (('train', self.train), ('validation', self.val)):
            if b - a < self.T + 1:
                raise ValueError(f'{d["path"]}: the {name} split has {b - a} bytes, fewer than context + 1')
        self.batches_per_epoch = max(1, (self.train[1] - self.train[0]) // (self.B * self.T))
        self.unit = 'tokens'
        self.gen = torch.Generator().manual_seed(seed)
        self.ar = torch.arange(self.T + 1)

    def windows(self, starts):
        w = self.bytes[starts[:, None] + self.ar[None, :]]  # [B, T + 1]
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    def next(self):
        a, b = self.train
        span = b - a - self.T  # starts a .. b - (T + 1), uniform
        starts = a + torch.randint(0, span, (self.B,), generator=self.gen)
        x, y = self.windows(starts)
        return x, y, x.numel()

    @torch.no_grad()
    def evaluate(self, model, r):
        a, b = self.val
        n_windows = (b - a - 1) // self.T
        loss_sum, tokens, batches = 0.0, 0, 0
        for w in range(0, n_windows, self.B):
            if batches >= r['eval_batches']:
                break
            starts = a + self.T * torch.arange(w, min(n_windows, w + self.B))
            x, y = self.windows(starts)
            logits = model(x)
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction='sum').item()
            tokens += x.numel()
            batches += 1
        loss = loss_sum / tokens
        return {'eval_loss': loss, 'bits_per_byte': loss / math.log(2), 'tokens': tokens}


def with_data_path(d, path):
    if path is None:
        return d
    d = dict(d)
    if d['type'] == 'text':
        d['path'] = path
    else:
        for k in ('train_images', 'train_labels', 'test_images', 'test_labels'):
            d[k] = os.path.join(path, os.path.basename(d[k]))
    return d


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('recipe')
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--steps', type=int)
    g.add_argument('--epochs', type=int)
    ap.add_argument('--seed', type=int)
    ap.add_argument('--data', help='text file, or a directory holding the recipe\'s IDX file names')
    ap.add_argument('--out', help='directory for metrics.jsonl, summary.json, recipe.json')
    ap.add_argument('--threads', type=int, default=1, help='torch intra-op threads (default 1)')
    ap.add_argument('--quiet', action='store_true', help='no progress on stderr')
    a = ap.parse_args(argv)

    with open(a.recipe) as f:
        raw = json.load(f)
    if a.steps is not None:
        raw.pop('epochs', None)
        raw['steps'] = a.steps
    if a.epochs is not None:
        raw.pop('steps', None)
        raw['epochs'] = a.epochs
    if a.seed is not None:
        raw['seed'] = a.seed
    r = fill_defaults(raw)
    r['data'] = with_data_path(r['data'], a.data)
    for k, v in (('batch_size', r['batch_size']), ('grad_accum_steps', r['grad_accum_steps']), ('log_every', r['log_every'])):
        if not (isinstance(v, int) and v > 0):
            raise RecipeError(f'{k}: must be a positive integer')

    torch.set_num_threads(a.threads)
    seed = r['seed']
    torch.manual_seed(seed)  # init and dropout
    is_lm = r['model']['type'] in LANGUAGE_MODELS  # next-token loss on text
    data = (TextData if is_lm else ImageData)(r, seed * 1000003 + 2)  # the data order: a separate stream
    model = build_model(r)
    opt = build_optimizer(r, model)
    total = r['steps'] if 'steps' in r else math.ceil(r['epochs'] * data.batches_per_epoch / r['grad_accum_steps'])
    sched = build_schedule(r, total)
    params = [p for p in model.parameters()]
    n_params = sum(p.numel() for p in params)

    out_rows = []
    metrics_f = None
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        metrics_f = open(os.path.join(a.out, 'metrics.jsonl'), 'w')
        with open(os.path.join(a.out, 'recipe.json'), 'w') as f:
            json.dump(r, f, indent=2)

    def emit(row):
        out_rows.append(row)
        if metrics_f:
            metrics_f.write(json.dumps(row) + '\n')
            metrics_f.flush()
        if not a.quiet:
            print(' '.join(f'{k} {v:.6g}' if isinstance(v, float) else f'{k} {v}' for k, v in row.items()), file=sys.stderr, flush=True)

    unit_key = 'tokens_per_s' if data.unit == 'tokens' else 'samples_per_s'
    started = time.perf_counter()
    train_seconds = 0.0
    win_s, win_n = 0.0, 0
    evals = []
    model.train()
    step = 0
    while step < total:
        t0 = time.perf_counter()
        lr = sched(step)
        for group in opt.param_groups:
            group['lr'] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum, count = 0.0, 0
        accum = r['grad_accum_steps']
        for _ in range(accum):
            x, y, n = data.next()
            loss = model_loss(model, is_lm, x, y)
            (loss / accum).backward()
            loss_sum += loss.item()
            count += n
        if r.get('clip_grad_norm') is not None:
            gn = float(torch.nn.utils.clip_grad_norm_(params, r['clip_grad_norm']))
        else:
            gn = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None])))
        opt.step()
        step += 1
        dt = time.perf_counter() - t0
        win_s += dt
        win_n += count
        train_seconds += dt
        if step % r['log_every'] == 0 or step == total:
            emit({'step': step, 'loss': loss_sum / accum, 'lr': lr, 'grad_norm': gn, unit_key: win_n / win_s if win_s > 0 else 0.0,
                  'elapsed_s': time.perf_counter() - started})
            win_s, win_n = 0.0, 0
        if (r.get('eval_every') is not None and step % r['eval_every'] == 0) or step == total:
            model.eval()
            res = data.evaluate(model, r)
            model.train()
            row = {'step': step, 'eval_loss': res['eval_loss']}
            row.update({'accuracy': res['accuracy']} if 'accuracy' in res else {'bits_per_byte': res['bits_per_byte']})
            row['elapsed_s'] = time.perf_counter() - started
            emit(row)
            evals.append({**row, **{k: v for k, v in res.items() if k in ('examples', 'tokens')}})

    wall = time.perf_counter() - started
    if metrics_f:
        metrics_f.close()
    summary = {
        'recipe': r['name'], 'seed': seed, 'steps': total, 'epochs': r.get('epochs'), 'batch_size': r['batch_size'],
        'params': n_params, 'final': evals[-1] if evals else None, 'evals': evals,
        'wall_s': round(wall, 1), 'train_s': round(train_seconds, 1),
        'peer': f'torch {torch.__version__}', 'threads': torch.get_num_threads(),
        'machine': f'{platform.machine()} {os.cpu_count()} cpus', 'python': platform.python_version(),
    }
    if a.out:
        with open(os.path.join(a.out, 'summary.json'), 'w') as f:
            json.dump(summary, f, indent=2)
            f.write('\n')
    print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except RecipeError as e:
        print(f'torch_train.py: invalid recipe: {e}', file=sys.stderr)
        sys.exit(2)
