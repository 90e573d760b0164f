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
  {"op": "threads", "threads": N}              -> {"threads": N} (intra-op threads from now on)

mlp and gpt_block build their model once per configuration and keep it, so warm-up happens once;
they do the same work as bench/workloads.ts (see there for the shapes).

One-core runs start this script under `taskset -c 0` (PyTorch's set_num_threads(1) alone still lets
its BLAS use every core); "threads": 1 also sets the intra-op threads to 1.
"""
import json
import sys
import time

import torch


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

    with torch.enable_grad():
        for _ in range(3):
            step()
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            loss = step()
            out.append(time.perf_counter() - t0)
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

    with torch.enable_grad():
        step()
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            step()
            out.append(time.perf_counter() - t0)
    return out


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
        elif op == "quit":
            break
        else:
            res = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
