#!/usr/bin/env python3
"""PyTorch peer for knobs' benchmarks (bench/gemm.ts, op-overhead.ts, mlp.ts, gpt-block.ts).

A long-lived worker so that knobs and PyTorch can be measured interleaved (A B A B …) in one run:
it reads one JSON request per line on stdin and answers one JSON line on stdout.

  {"op": "hello", "threads": 1 | null}        -> {"torch": "1.13.0", "threads": N}
  {"op": "gemm", "n": 512, "iters": 5}         -> {"seconds": [per-iteration seconds, ...]}
  {"op": "add", "n": 16, "iters": 100000}      -> {"seconds": [per-op seconds]} (one timed loop)
  {"op": "mlp", "batch": 128, "iters": 20}     -> {"seconds": [per-step seconds], "loss": float}
  {"op": "gpt_block", "batch": 16, "context": 128, "width": 256, "heads": 4, "iters": 3}
                                               -> {"seconds": [per forward+backward seconds]}
  {"op": "gpt_train", "batch": 16, "iters": 3} -> {"seconds": [per training step seconds], "loss": float}
  {"op": "gpt_lora_train", "batch": 16, "targets": "attn" | "all", "iters": 3} -> the same, a LoRA step (r 8, alpha 16)
  {"op": "llama_train", "config": {LlamaConfig fields}, "batch": 16, "context": 128, "iters": 3}
                                               -> {"seconds": [per training step seconds], "loss": float}
                                                  (the model is bench/torch_train.py's Llama twin)
  {"op": "gpt_generate", "prompt": 16, "tokens": 256, "iters": 1}
                                               -> {"seconds": [per generate() call seconds]}
  {"op": "llama_decode", "config": {LlamaConfig fields}, "prompt": 64, "tokens": 128}
                                               -> {"prefill_s", "decode_s"} of one greedy generate
                                                  (bench/llama_decode_torch.py, the twin of llama-decode.ts)
  {"op": "fashion", "model": "mlp" | "cnn", "batch": 128, "steps": N, "iters": 1}
                                               -> {"seconds": [seconds per N training steps]}
  {"op": "maxrss"}                             -> {"kib": peak resident set size of this process}
  {"op": "save_pt", "safetensors": P, "out": Q} -> {} (the F32 tensors of safetensors file P, torch.save'd to Q)
  {"op": "torch_load", "path": Q}              -> {"seconds", "rss_before_kib", "peak_kib"} of one torch.load(Q)
                                                  (meant for a fresh peer, so the peak is this load's)
  {"op": "threads", "threads": N}              -> {"threads": N} (intra-op threads from now on)

mlp and gpt_block build their model once per configuration and keep it, so warm-up happens once;
they do the same work as bench/workloads.ts (see there for the shapes).

One-core runs start this script under `taskset -c 0` (PyTorch's set_num_threads(1) alone still lets
its BLAS use every core); "threads": 1 also sets the intra-op threads to 1.
"""
import gzip
import json
import math
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def gemm(n, iters):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=g)
    b = torch.rand(n, n, generator=g)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        out.append(time.perf_counter() - t0)
    return out


def gemm_bf16(n, iters):
    # CPU autocast to bfloat16: f32 operands in, cast to bf16 inside, as knobs' bf16 matmul does.
    g = torch.Generator().manual_seed(0)
    a = torch.rand(n, n, generator=g)
    b = torch.rand(n, n, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.mm(a, b)  # warm-up
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            torch.mm(a, b)
            out.append(time.perf_counter() - t0)
    return out


def add(n, iters):
    a = torch.rand(n)
    b = torch.rand(n)
    for _ in range(1000):
        torch.add(a, b)
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.add(a, b)
    return [(time.perf_counter() - t0) / iters]


_models = {}


def timed(step, iters, warmup=1, mode=torch.enable_grad):
    """step() `warmup` times, then `iters` timed calls: (seconds per call, the last call's result)."""
    res = None
    with mode():
        for _ in range(warmup):
            res = step()
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            res = step()
            out.append(time.perf_counter() - t0)
    return out, res


def mlp_model(batch):
    key = ("mlp", batch)
    if key not in _models:
        g = torch.Generator().manual_seed(0)
        sizes = [784, 512, 512, 10]
        params = []
        for i in range(3):
            w = (torch.randn(sizes[i], sizes[i + 1], generator=g) / sizes[i] ** 0.5).requires_grad_()
            b = (torch.randn(sizes[i + 1], generator=g) * 0.01).requires_grad_()
            params += [w, b]
        x = torch.rand(batch, 784, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=True)
        _models[key] = (params, x, y, opt)
    return _models[key]


def mlp(batch, iters):
    params, x, y, opt = mlp_model(batch)

    def step():
        opt.zero_grad(set_to_none=True)
        h = x
        for i in range(3):
            h = torch.addmm(params[2 * i + 1], h, params[2 * i])  # x [B, in] · w [in, out] + b
            if i < 2:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, y)
        loss.backward()
        opt.step()
        return loss

    out, loss = timed(step, iters, warmup=3)
    return out, float(loss)


def gpt_block_model(B, T, C, H):
    key = ("gpt", B, T, C, H)
    if key not in _models:
        g = torch.Generator().manual_seed(0)

        def param(*shape, scale=0.02):
            return (torch.randn(*shape, generator=g) * scale).requires_grad_()

        p = {
            "ln1w": torch.ones(C, requires_grad=True), "ln1b": torch.zeros(C, requires_grad=True),
            "wqkv": param(C, 3 * C), "bqkv": torch.zeros(3 * C, requires_grad=True),
            "wproj": param(C, C), "bproj": torch.zeros(C, requires_grad=True),
            "ln2w": torch.ones(C, requires_grad=True), "ln2b": torch.zeros(C, requires_grad=True),
            "wfc": param(C, 4 * C), "bfc": torch.zeros(4 * C, requires_grad=True),
            "wfc2": param(4 * C, C), "bfc2": torch.zeros(C, requires_grad=True),
        }
        x0 = torch.randn(B, T, C, generator=g).requires_grad_()
        upstream = torch.randn(B, T, C, generator=g)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        _models[key] = (p, x0, upstream, mask)
    return _models[key]


def gpt_block(B, T, C, H, iters):
    p, x0, upstream, mask = gpt_block_model(B, T, C, H)
    D = C // H
    F = torch.nn.functional

    def lin(x, w, b):
        return torch.addmm(b, x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])

    def step():
        for t in [x0, *p.values()]:
            t.grad = None
        h = F.layer_norm(x0, (C,), p["ln1w"], p["ln1b"])
        q, k, v = lin(h, p["wqkv"], p["bqkv"]).split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        att = (q @ k.transpose(-2, -1)) * (1.0 / D ** 0.5)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x1 = x0 + lin(y, p["wproj"], p["bproj"])
        m = F.gelu(lin(F.layer_norm(x1, (C,), p["ln2w"], p["ln2b"]), p["wfc"], p["bfc"]), approximate="tanh")
        out = x1 + lin(m, p["wfc2"], p["bfc2"])
        out.backward(upstream)

    return timed(step, iters)[0]


# --- kjv-gpt (bench/workloads.ts KJV_GPT): GPT-2, byte vocab, 4 layers, 4 heads, width 256, context 128 ---

KJV = dict(vocab=256, positions=128, width=256, layers=4, heads=4)


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def attn(self, x, cache=None, past=0):
        B, T, C = x.shape
        H, D = self.H, C // self.H
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]
        if cache is not None:  # preallocated [B, H, P, D] key/value buffers, filled left to right
            kc, vc = cache
            kc[:, :, past:past + T] = k
            vc[:, :, past:past + T] = v
            k, v = kc[:, :, :past + T], vc[:, :, :past + T]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        if T > 1:
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool).triu(past + 1)
            att = att.masked_fill(mask, float("-inf"))
        y = att.softmax(dim=-1) @ v
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x, cache=None, past=0):
        x = x + self.attn(self.ln_1(x), cache, past)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, positions, width, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(positions, width)
        self.h = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for n, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, ids, caches=None, past=0):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(past, past + T))
        for i, b in enumerate(self.h):
            x = b(x, None if caches is None else caches[i], past)
        return self.ln_f(x) @ self.wte.weight.t()  # tied head


def gpt_train_model(batch):
    key = ("gpt_train", batch)
    if key not in _models:
        torch.manual_seed(0)
        model = GPT(**KJV)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.95), foreach=True)
        ids = torch.randint(0, KJV["vocab"], (batch, KJV["positions"] + 1))
        _models[key] = (model, opt, ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
    return _models[key]


def gpt_train(batch, iters):
    model, opt, x, y = gpt_train_model(batch)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    out, loss = timed(step, iters, warmup=0)  # the bench's first request (1 step) is the warm-up
    return out, float(loss)


class LoraLinear(nn.Module):
    """PEFT's LoRA on an nn.Linear (peft src/peft/tuners/lora/layer.py Linear.forward, dropout 0):
    base(x) + lora_B(lora_A(x)) * scaling; the base is frozen, lora_A kaiming-uniform, lora_B zero."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


def gpt_lora_train_model(batch, targets):
    key = ("gpt_lora_train", batch, targets)
    if key not in _models:
        torch.manual_seed(0)
        model = GPT(**KJV)
        model.requires_grad_(False)
        names = ["c_attn"] if targets == "attn" else ["c_attn", "c_proj", "c_fc", "mlp_proj"]
        for block in model.h:
            for n in names:
                setattr(block, n, LoraLinear(getattr(block, n), 8, 16))
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
        ids = torch.randint(0, KJV["vocab"], (batch, KJV["positions"] + 1))
        _models[key] = (model, opt, trainable, ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
    return _models[key]


def gpt_lora_train(batch, targets, iters):
    model, opt, trainable, x, y = gpt_lora_train_model(batch, targets)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return loss

    out, loss = timed(step, iters, warmup=0)
    return out, float(loss)


def llama_train(config, batch, context, iters):
    key = ("llama_train", json.dumps(config, sort_keys=True), batch, context)
    if key not in _models:
        import torch_train  # the kjv-llama recipe's twin, beside this file
        torch.manual_seed(0)
        model = torch_train.Llama(dict(config, type=config["model_type"]))
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.95), foreach=True)
        ids = torch.randint(0, config["vocab_size"], (batch, context + 1))
        _models[key] = (model, opt, ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
    model, opt, x, y = _models[key]

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    out, loss = timed(step, iters, warmup=0)  # the bench's first request (1 step) is the warm-up
    return out, float(loss)


def gpt_generate(prompt_len, tokens, iters):
    key = ("gpt_gen", prompt_len, tokens)
    if key not in _models:
        torch.manual_seed(0)
        cfg = dict(KJV, positions=max(KJV["positions"], prompt_len + tokens))
        _models[key] = GPT(**cfg).eval()
    model = _models[key]
    prompt = torch.tensor([[(i * 37 + 11) % KJV["vocab"] for i in range(prompt_len)]])
    C, H, L = KJV["width"], KJV["heads"], KJV["layers"]
    P = prompt_len + tokens

    def generate():
        caches = [(torch.empty(1, H, P, C // H), torch.empty(1, H, P, C // H)) for _ in range(L)]
        logits = model(prompt, caches, 0)[:, -1]
        past = prompt_len
        out = []
        for n in range(tokens):
            nxt = int(logits.argmax(-1))
            out.append(nxt)
            if n == tokens - 1:
                break
            logits = model(torch.tensor([[nxt]]), caches, past)[:, -1]
            past += 1
        return out

    return timed(generate, iters, warmup=0, mode=torch.inference_mode)[0]  # the first request warms up


# --- Fashion-MNIST (bench/fashion.ts): MLP 784-256-128-10 and the CNNClassifier default, Adam lr 1e-3 ---

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def fashion_data():
    if "fashion" not in _models:
        with gzip.open(f"{FASHION_DIR}/train-images-idx3-ubyte.gz") as f:
            px = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
        with gzip.open(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz") as f:
            lb = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        x = (torch.from_numpy(px.astype(np.float32)) / 255 - 0.2860) / 0.3530
        _models["fashion"] = [x, torch.from_numpy(lb.astype(np.int64)), torch.randperm(len(lb)), 0]
    return _models["fashion"]


def fashion_model(kind):
    key = ("fashion_model", kind)
    if key not in _models:
        torch.manual_seed(0)
        if kind == "mlp":
            model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        else:
            model = nn.Sequential(
                nn.Unflatten(1, (1, 28, 28)),
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
        _models[key] = (model, torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True))
    return _models[key]


def fashion(kind, batch, steps, iters):
    data = fashion_data()
    x, y = data[0], data[1]
    model, opt = fashion_model(kind)
    n = len(y)

    def run(count):
        for _ in range(count):
            if data[3] + batch > n:  # a new epoch: reshuffle
                data[2], data[3] = torch.randperm(n), 0
            idx = data[2][data[3]:data[3] + batch]
            data[3] += batch
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()

    return timed(lambda: run(steps), iters, warmup=0)[0]  # the bench's first request warms up


def save_pt(safetensors_path, out):
    """Reads an F32 safetensors file by hand (header, then each tensor's range) and torch.save()s the tensors."""
    with open(safetensors_path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            assert info["dtype"] == "F32", info["dtype"]
            begin, end = info["data_offsets"]
            f.seek(8 + n + begin)
            tensors[name] = torch.frombuffer(bytearray(f.read(end - begin)), dtype=torch.float32).reshape(info["shape"])
    torch.save(tensors, out)


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def torch_load(path):
    before = rss_kib()
    t0 = time.perf_counter()
    state = torch.load(path)
    seconds = time.perf_counter() - t0
    assert len(state) > 0
    return {"seconds": seconds, "rss_before_kib": before, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main():
    torch.set_grad_enabled(False)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        op = req.get("op")
        if op == "hello":
            if req.get("threads"):
                torch.set_num_threads(int(req["threads"]))
            res = {"torch": torch.__version__.split("+")[0], "threads": torch.get_num_threads()}
        elif op == "gemm":
            res = {"seconds": gemm(int(req["n"]), int(req["iters"]))}
        elif op == "gemm_bf16":
            res = {"seconds": gemm_bf16(int(req["n"]), int(req["iters"]))}
        elif op == "add":
            res = {"seconds": add(int(req["n"]), int(req["iters"]))}
        elif op == "threads":
            torch.set_num_threads(int(req["threads"]))
            res = {"threads": torch.get_num_threads()}
        elif op == "mlp":
            seconds, loss = mlp(int(req["batch"]), int(req["iters"]))
            res = {"seconds": seconds, "loss": loss}
        elif op == "gpt_block":
            res = {"seconds": gpt_block(int(req["batch"]), int(req["context"]), int(req["width"]), int(req["heads"]),
                                        int(req["iters"]))}
        elif op == "gpt_train":
            seconds, loss = gpt_train(int(req["batch"]), int(req["iters"]))
            res = {"seconds": seconds, "loss": loss}
        elif op == "gpt_lora_train":
            seconds, loss = gpt_lora_train(int(req["batch"]), req["targets"], int(req["iters"]))
            res = {"seconds": seconds, "loss": loss}
        elif op == "llama_train":
            seconds, loss = llama_train(req["config"], int(req["batch"]), int(req["context"]), int(req["iters"]))
            res = {"seconds": seconds, "loss": loss}
        elif op == "gpt_generate":
            res = {"seconds": gpt_generate(int(req["prompt"]), int(req["tokens"]), int(req["iters"]))}
        elif op == "llama_decode":
            import llama_decode_torch  # beside this file
            res = llama_decode_torch.llama_decode(req["config"], int(req["prompt"]), int(req["tokens"]))
        elif op == "fashion":
            res = {"seconds": fashion(req["model"], int(req["batch"]), int(req["steps"]), int(req["iters"]))}
        elif op == "save_pt":
            save_pt(req["safetensors"], req["out"])
            res = {}
        elif op == "torch_load":
            res = torch_load(req["path"])
        elif op == "maxrss":
            res = {"kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
        elif op == "quit":
            break
        else:
            res = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
