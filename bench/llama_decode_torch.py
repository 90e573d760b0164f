"""PyTorch twin of bench/llama-decode.ts: Llama decode (batch 1, greedy) with a preallocated KV cache.

The model is Hugging Face's LlamaForCausalLM written out in eager PyTorch (RMSNorm, rotate-half rope,
grouped-query attention, SwiGLU MLP, untied head), f32, under torch.inference_mode(). The timing
splits the prompt's forward pass (prefill) from the decode steps, as the knobs side does:
decode tokens/s = (new tokens − 1) / (time from the first new token to the last).
bench/peer_torch.py imports this module for the "llama_decode" request.
"""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# The same RMSNorm and rotate-half as the training twin (beside this file).
from torch_train import RMSNorm, rotate_half


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        C, self.H, self.K = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
        self.D = C // self.H
        self.q_proj = nn.Linear(C, self.H * self.D, bias=False)
        self.k_proj = nn.Linear(C, self.K * self.D, bias=False)
        self.v_proj = nn.Linear(C, self.K * self.D, bias=False)
        self.o_proj = nn.Linear(self.H * self.D, C, bias=False)
        self.gate_proj = nn.Linear(C, c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(C, c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], C, bias=False)
        self.input_layernorm = RMSNorm(C, c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(C, c["rms_norm_eps"])

    def attn(self, x, cos, sin, cache, past):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.H, self.D).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.K, self.D).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.K, self.D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        kc, vc = cache
        kc[:, :, past:past + T] = k
        vc[:, :, past:past + T] = v
        g = self.H // self.K
        k = kc[:, :, :past + T].repeat_interleave(g, dim=1)
        v = vc[:, :, :past + T].repeat_interleave(g, dim=1)
        att = (q @ k.transpose(-2, -1)) * (self.D ** -0.5)
        if T > 1:
            mask = torch.ones(T, past + T, dtype=torch.bool).triu(past + 1)
            att = att.masked_fill(mask, float("-inf"))
        y = att.softmax(dim=-1) @ v
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.H * self.D))

    def forward(self, x, cos, sin, cache, past):
        x = x + self.attn(self.input_layernorm(x), cos, sin, cache, past)
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)
        D = c["hidden_size"] // c["num_attention_heads"]
        self.inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2).float() / D))

    def forward(self, ids, caches, past):
        T = ids.shape[1]
        freqs = torch.outer(torch.arange(past, past + T).float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(ids)
        for layer, cache in zip(self.layers, caches):
            x = layer(x, cos, sin, cache, past)
        return self.lm_head(self.norm(x[:, -1:]))[:, -1]


_models = {}


def llama_decode(config, prompt_len, tokens):
    """One greedy generate: {"prefill_s", "decode_s"} (decode_s spans tokens − 1 steps)."""
    key = tuple(sorted(config.items()))
    if key not in _models:
        torch.manual_seed(0)
        _models[key] = Llama(config).eval()
    model = _models[key]
    c = config
    D = c["hidden_size"] // c["num_attention_heads"]
    P = prompt_len + tokens
    prompt = torch.tensor([[(i * 37 + 11) % c["vocab_size"] for i in range(prompt_len)]])
    with torch.inference_mode():
        caches = [(torch.empty(1, c["num_key_value_heads"], P, D), torch.empty(1, c["num_key_value_heads"], P, D))
                  for _ in range(c["num_hidden_layers"])]
        t0 = time.perf_counter()
        nxt = int(model(prompt, caches, 0).argmax(-1))
        t1 = time.perf_counter()
        past = prompt_len
        for _ in range(tokens - 1):
            nxt = int(model(torch.tensor([[nxt]]), caches, past).argmax(-1))
            past += 1
        t2 = time.perf_counter()
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1}
