#!/usr/bin/python3
"""PyTorch fixtures for knobs' nn / models / optim tests; run by hand, outputs committed.

    /usr/bin/python3 scripts/gen_train_fixtures.py

writes
  test/fixtures/train/gpt_tiny.json    one GPT-2 training step and 10 AdamW steps on a tiny config
  test/fixtures/train/optim.json       SGD / SGD-momentum / Nesterov / Adam / AdamW trajectories on
                                       a small least-squares problem, and CosineAnnealingLR values

The tests (test/models-gpt.test.ts, test/optim.test.ts) read them and never need Python.
Deterministic for a given torch version (torch.manual_seed). Float32 values are written as the
shortest decimal that rounds back to the same float32 (read them with Math.fround); integers as
integers; the large arrays (weights, gradients) as base64 of little-endian float32 bytes
(keys ending in f32_b64).

gpt_tiny.json
  config        GPT2Config fields (dropouts 0)
  weights       {gpt2 name: {shape, f32_b64}}: the initial weights (random, not GPT-2's init, so
                that biases and norm parameters are non-trivial); Conv1D weights are [in, out]
  batches       10 batches of token ids, each [B, T+1]: inputs are [:, :-1], targets [:, 1:]
  step0         {loss, logits [B,T,V] flat, grads_f32_b64 {name: flat}} for batches[0] at the
                initial weights
  adamw         {lr, betas, eps, weight_decay (on tensors of rank >= 2, 0 on the rest), clip,
                 losses[10] (loss of step s on batches[s], before its update), grad_norms[10]
                 (global norm before clipping), final_loss (batches[0] after 10 updates),
                 final_checksums {name: [sum, sum of squares]}, key_bias_checksums {c_attn bias
                 name: [sum, sum of squares] of its key third, whose updates are rounding noise}}
  greedy        {prompt, tokens}: 20 greedy tokens after the prompt at the initial weights
                (no cache: the last n_positions tokens recomputed each step, nanoGPT's crop)

optim.json
  problem       {W [4,3], b [3], X [5,4], Y [5,3]}; loss = mean((X @ W + b - Y)^2)
  runs          [{name, optimizer, options, params_after[5] ([W flat, b flat] after each step),
                  losses[5]}]
  cosine        {lr, eta_min, t_max, lrs}: CosineAnnealingLR's lr for steps 0..t_max
"""
import base64
import json
import math
import os
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'test', 'fixtures', 'train')


def f32(values):
    """Flat float32 values as the shortest round-tripping decimals."""
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    return [float(repr(v)) for v in arr]


def f32_b64(values):
    """Flat float32 values, little-endian bytes, base64 (for the large weight/gradient arrays)."""
    arr = np.asarray(values, dtype='<f4').reshape(-1)
    return base64.b64encode(arr.tobytes()).decode('ascii')


def provenance():
    return {
        'generator': 'scripts/gen_train_fixtures.py',
        'command': '/usr/bin/python3 scripts/gen_train_fixtures.py',
        'torch_version': torch.__version__,
        'numpy_version': np.__version__,
        'python_version': platform.python_version(),
    }


# ---- a GPT-2 written out (transformers' GPT2LMHeadModel semantics, dropouts 0) ----

class TinyGPT2(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        V, P, C, L = cfg['vocab_size'], cfg['n_positions'], cfg['n_embd'], cfg['n_layer']
        self.params = torch.nn.ParameterDict()  # keys use '/' for '.' (ParameterDict forbids dots)
        shapes = {'wte.weight': [V, C], 'wpe.weight': [P, C]}
        for i in range(L):
            h = f'h.{i}.'
            shapes.update({
                h + 'ln_1.weight': [C], h + 'ln_1.bias': [C],
                h + 'attn.c_attn.weight': [C, 3 * C], h + 'attn.c_attn.bias': [3 * C],
                h + 'attn.c_proj.weight': [C, C], h + 'attn.c_proj.bias': [C],
                h + 'ln_2.weight': [C], h + 'ln_2.bias': [C],
                h + 'mlp.c_fc.weight': [C, 4 * C], h + 'mlp.c_fc.bias': [4 * C],
                h + 'mlp.c_proj.weight': [4 * C, C], h + 'mlp.c_proj.bias': [C],
            })
        shapes.update({'ln_f.weight': [C], 'ln_f.bias': [C]})
        self.names = list(shapes)
        for name, shape in shapes.items():
            t = torch.randn(shape) * 0.08
            if name.endswith('ln_1.weight') or name.endswith('ln_2.weight') or name == 'ln_f.weight':
                t = 1 + torch.randn(shape) * 0.1
            self.params[name.replace('.', '/')] = torch.nn.Parameter(t)

    def p(self, name):
        return self.params[name.replace('.', '/')]

    def named(self):
        return [(n, self.p(n)) for n in self.names]

    def forward(self, ids):
        cfg = self.cfg
        B, T = ids.shape
        C, H = cfg['n_embd'], cfg['n_head']
        D = C // H
        eps = cfg['layer_norm_epsilon']
        x = self.p('wte.weight')[ids] + self.p('wpe.weight')[torch.arange(T)]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for i in range(cfg['n_layer']):
            h = f'h.{i}.'
            a = F.layer_norm(x, (C,), self.p(h + 'ln_1.weight'), self.p(h + 'ln_1.bias'), eps)
            qkv = a @ self.p(h + 'attn.c_attn.weight') + self.p(h + 'attn.c_attn.bias')
            q, k, v = qkv.split(C, dim=2)
            q, k, v = [t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v)]
            att = (q @ k.transpose(-2, -1)) / math.sqrt(D)
            att = att.masked_fill(~mask, float('-inf')).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + (y @ self.p(h + 'attn.c_proj.weight') + self.p(h + 'attn.c_proj.bias'))
            m = F.layer_norm(x, (C,), self.p(h + 'ln_2.weight'), self.p(h + 'ln_2.bias'), eps)
            m = F.gelu(m @ self.p(h + 'mlp.c_fc.weight') + self.p(h + 'mlp.c_fc.bias'), approximate='tanh')
            x = x + (m @ self.p(h + 'mlp.c_proj.weight') + self.p(h + 'mlp.c_proj.bias'))
        x = F.layer_norm(x, (C,), self.p('ln_f.weight'), self.p('ln_f.bias'), eps)
        return x @ self.p('wte.weight').t()  # tied head

    def loss(self, batch):
        logits = self.forward(batch[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def gpt_fixture():
    torch.manual_seed(1234)
    cfg = {'vocab_size': 64, 'n_positions': 16, 'n_embd': 32, 'n_layer': 2, 'n_head': 2,
           'layer_norm_epsilon': 1e-5, 'embd_pdrop': 0.0, 'attn_pdrop': 0.0, 'resid_pdrop': 0.0}
    B, T = 2, 8
    model = TinyGPT2(cfg)
    weights = {n: {'shape': list(p.shape), 'f32_b64': f32_b64(p.detach())} for n, p in model.named()}
    batches = [torch.randint(0, cfg['vocab_size'], (B, T + 1)) for _ in range(10)]

    # greedy continuation at the initial weights (no cache: the whole context every step)
    prompt = [60, 2]
    ctx = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            logits = model(torch.tensor([ctx[-cfg['n_positions']:]]))  # nanoGPT's crop
            ctx.append(int(logits[0, -1].argmax()))
    greedy = {'prompt': prompt, 'tokens': ctx[len(prompt):]}

    logits = model(batches[0][:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, cfg['vocab_size']), batches[0][:, 1:].reshape(-1))
    loss.backward()
    step0 = {'loss': float(loss), 'logits': f32(logits.detach()),
             'grads_f32_b64': {n: f32_b64(p.grad) for n, p in model.named()}}

    lr, betas, eps, wd, clip = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0
    decay = [p for _, p in model.named() if p.dim() >= 2]
    no_decay = [p for _, p in model.named() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': wd}, {'params': no_decay, 'weight_decay': 0.0}],
                            lr=lr, betas=betas, eps=eps)
    losses, norms = [], []
    for s in range(10):
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batches[s])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([p for _, p in model.named()], clip)
        opt.step()
        losses.append(float(loss))
        norms.append(float(norm))
    with torch.no_grad():
        final_loss = float(model.loss(batches[0]))
    checksums = {n: [float(p.detach().double().sum()), float((p.detach().double() ** 2).sum())] for n, p in model.named()}
    # the key third of each c_attn bias: its gradient is zero in exact arithmetic (a bias on the keys
    # adds q·b to a whole row of scores, which softmax ignores), so AdamW steps it by rounding noise
    C = cfg['n_embd']
    key_bias = {n: [float(p.detach().double()[C:2 * C].sum()), float((p.detach().double()[C:2 * C] ** 2).sum())]
                for n, p in model.named() if n.endswith('attn.c_attn.bias')}
    return {
        **provenance(),
        'config': cfg, 'B': B, 'T': T,
        'weights': weights,
        'batches': [b.tolist() for b in batches],
        'step0': step0,
        'adamw': {'lr': lr, 'betas': list(betas), 'eps': eps, 'weight_decay': wd, 'clip': clip,
                  'losses': losses, 'grad_norms': norms, 'final_loss': final_loss, 'final_checksums': checksums,
                  'key_bias_checksums': key_bias},
        'greedy': greedy,
    }


def optim_fixture():
    torch.manual_seed(7)
    W0 = torch.randn(4, 3)
    b0 = torch.randn(3)
    X = torch.randn(5, 4)
    Y = torch.randn(5, 3)
    configs = [
        ('sgd_plain', 'sgd', {'lr': 0.1}),
        ('sgd_momentum', 'sgd', {'lr': 0.1, 'momentum': 0.9, 'dampening': 0.1, 'weight_decay': 0.01}),
        ('sgd_nesterov', 'sgd', {'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'weight_decay': 0.01}),
        ('adam', 'adam', {'lr': 0.05, 'betas': [0.9, 0.999], 'eps': 1e-8, 'weight_decay': 0.01}),
        ('adamw', 'adamw', {'lr': 0.05, 'betas': [0.9, 0.95], 'eps': 1e-8, 'weight_decay': 0.1}),
    ]
    runs = []
    for name, kind, options in configs:
        W = W0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        kw = dict(options)
        if 'betas' in kw:
            kw['betas'] = tuple(kw['betas'])
        cls = {'sgd': torch.optim.SGD, 'adam': torch.optim.Adam, 'adamw': torch.optim.AdamW}[kind]
        opt = cls([W, b], **kw)  # one group: every parameter decays
        after, losses = [], []
        for _ in range(5):
            opt.zero_grad(set_to_none=True)
            loss = ((X @ W + b - Y) ** 2).mean()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            after.append([f32(W.detach()), f32(b.detach())])
        runs.append({'name': name, 'optimizer': kind, 'options': options, 'params_after': after, 'losses': losses})

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=1e-4)
    lrs = []
    for _ in range(11):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    return {
        **provenance(),
        'problem': {'W': f32(W0), 'b': f32(b0), 'X': f32(X), 'Y': f32(Y)},
        'runs': runs,
        'cosine': {'lr': 1e-3, 'eta_min': 1e-4, 't_max': 10, 'lrs': lrs},
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, build in [('gpt_tiny.json', gpt_fixture), ('optim.json', optim_fixture)]:
        data = build()
        path = os.path.join(OUT, name)
        with open(path, 'w') as f:
            json.dump(data, f, separators=(',', ':'))
            f.write('\n')
        print(f'wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)', file=sys.stderr)


if __name__ == '__main__':
    main()
