#!/usr/bin/env python3
"""Reference statistics for `knobs inspect --stats` (test/inspect.test.ts), computed in float64 numpy.

Writes test/fixtures/inspect/nonfinite.safetensors (NaN/Inf, an all-NaN tensor, F16/BF16, tensors
over one 65,536-element block with a large offset) and test/fixtures/inspect/stats.expected.json:
per file and tensor, mean, std (population, ddof=0), min, max, zero_fraction and nonfinite over
the finite values, and np.histogram(finite, bins=16, range=(min, max)). Files are read here with a
small safetensors parser of this script's own, not with knobs.

Run: /usr/bin/python3 scripts/gen_inspect_fixtures.py
"""
import datetime
import json
import math
import os
import platform
import struct
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "test", "fixtures", "inspect")
BINS = 16

# Existing fixtures, reused, plus the one this script writes.
FILES = [
    "test/fixtures/safetensors/torch_basic.safetensors",
    "test/fixtures/hf/gpt2-tiny/model.safetensors",
    "test/fixtures/hf/gpt2-prefix-f16-shards/model-00001-of-00002.safetensors",
    "test/fixtures/hf/gpt2-prefix-f16-shards/model-00002-of-00002.safetensors",
    "test/fixtures/hf/llama-gqa-bf16-llama3/model.safetensors",
    "test/fixtures/inspect/nonfinite.safetensors",
]

NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "U16": "<u2",
         "U32": "<u4", "U64": "<u8", "I8": "i1", "U8": "u1", "BOOL": "u1"}


def bits_of(t):
    """The little-endian bytes of a torch tensor (bfloat16 through its int16 view)."""
    if t.dtype == torch.bfloat16:
        return t.contiguous().view(torch.int16).numpy().tobytes()
    return t.contiguous().numpy().tobytes()


def write_safetensors(path, tensors):
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors:
        b = bits_of(t)
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_nonfinite():
    g = torch.Generator().manual_seed(10)
    mixed = torch.randn(100, generator=g)
    mixed[[3, 17]] = float("nan")
    mixed[40] = float("inf")
    mixed[41] = float("-inf")
    mixed[50:55] = 0.0
    f16 = torch.randn(8, 8, generator=g).half()
    f16[0, 0] = float("inf")
    f16[7, 7] = 0.0
    bf16 = torch.randn(3, 50, generator=g).bfloat16()
    bf16[1, 1] = float("nan")
    tensors = [
        ("all_nan", torch.full((4, 8), float("nan"))),
        ("mixed", mixed),
        ("h.0.f16_inf", f16),
        ("h.1.bf16_nan", bf16),
        ("constant", torch.full((6,), 3.5)),
        # Over one block, around a large mean: the std must not cancel.
        ("big.offset_f32", 1000.0 + 0.01 * torch.randn(70_000, generator=g)),
        ("big.bf16", torch.randn(66_000, generator=g).bfloat16()),
    ]
    write_safetensors(os.path.join(OUT, "nonfinite.safetensors"), tensors)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        raw = data[base + begin:base + end]
        if e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            values = u.view(np.float32).astype(np.float64)
        else:
            values = np.frombuffer(raw, dtype=NUMPY[e["dtype"]]).astype(np.float64)
        out[name] = values
    return out


def number(v):
    v = float(v)
    return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))


def stats_of(x):
    finite = x[np.isfinite(x)]
    with np.errstate(over="ignore", invalid="ignore"):
        if finite.size == 0:
            s = {"mean": None, "std": None, "min": None, "max": None}
            hist = [0] * BINS
        else:
            lo, hi = finite.min(), finite.max()
            s = {"mean": number(finite.mean()), "std": number(finite.std()), "min": number(lo), "max": number(hi)}
            hist = np.histogram(finite, bins=BINS, range=(lo, hi))[0].tolist()
    s["zero_fraction"] = float((x == 0).mean()) if x.size else None
    s["nonfinite"] = int(x.size - finite.size)
    return {"stats": s, "histogram": hist}


def main():
    os.makedirs(OUT, exist_ok=True)
    make_nonfinite()
    files = {}
    for rel in FILES:
        files[rel] = {name: stats_of(x) for name, x in read_safetensors(os.path.join(ROOT, rel)).items()}
    result = {
        "generator": "scripts/gen_inspect_fixtures.py",
        "command": "/usr/bin/python3 scripts/gen_inspect_fixtures.py",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reference_dtype": "float64",
        "files": files,
    }
    with open(os.path.join(OUT, "stats.expected.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {OUT}/nonfinite.safetensors and stats.expected.json ({sum(len(v) for v in files.values())} tensors)", file=sys.stderr)


if __name__ == "__main__":
    main()
