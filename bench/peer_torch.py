#!/usr/bin/env python3
"""PyTorch peer for knobs' benchmarks (bench/gemm.ts, bench/op-overhead.ts).

A long-lived worker so that knobs and PyTorch can be measured interleaved (A B A B …) in one run:
it reads one JSON request per line on stdin and answers one JSON line on stdout.

  {"op": "hello", "threads": 1 | null}        -> {"torch": "1.13.0", "threads": N}
  {"op": "gemm", "n": 512, "iters": 5}         -> {"seconds": [per-iteration seconds, ...]}
  {"op": "add", "n": 16, "iters": 100000}      -> {"seconds": [per-op seconds]} (one timed loop)

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
        elif op == "quit":
            break
        else:
            res = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
