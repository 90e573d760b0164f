"""Writes test/fixtures/pissa/layers.json: PiSSA's and OLoRA's initialisations computed by plain
torch, for test/pissa.test.ts.

Run: /usr/bin/python3 scripts/gen_pissa_fixtures.py   (torch 1.13; PEFT is not installed, so its
rule is applied here directly.)

PEFT's rule, huggingface/peft at commit 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40,
src/peft/tuners/lora/layer.py LoraLayer.pissa_init: V, S, Uh = torch.linalg.svd(W [out, in]),
Sr = S[:r] / scaling, lora_A = diag(sqrt(Sr)) @ Uh[:r], lora_B = V[:, :r] @ diag(sqrt(Sr)),
base weight := W - scaling * lora_B @ lora_A (transposed back for a Conv1D, fan_in_fan_out).
LoraLayer.olora_init: Q, R = torch.linalg.qr(W as stored), lora_A = R[:r], lora_B = Q[:, :r], base
weight := W - scaling * lora_B @ lora_A (Linear cases only: knobs refuses OLoRA on a Conv1D).
Singular vectors and QR factors are defined up to sign, so the fixture holds the sign-free results: the product
scaling * lora_B @ lora_A, the residual, and the row norms of lora_A (= sqrt(S_r / scaling)).
"""
import json
import os
import platform

import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from gen_dora_fixtures import layer_header  # noqa: E402
OUT = os.path.join(HERE, "..", "test", "fixtures", "pissa", "layers.json")
torch.manual_seed(0)


def case(name, in_f, out_f, r, alpha, conv1d, init="pissa"):
    w_oi = torch.randn(out_f, in_f, dtype=torch.float64) * 0.3
    stored = w_oi.t().contiguous() if conv1d else w_oi
    scaling = alpha / r
    if init == "pissa":
        V, S, Uh = torch.linalg.svd(w_oi, full_matrices=False)
        Sr = S[:r] / scaling
        A = torch.diag(torch.sqrt(Sr)) @ Uh[:r]
        B = V[:, :r] @ torch.diag(torch.sqrt(Sr))
    else:
        Q, R = torch.linalg.qr(w_oi)
        A, B = R[:r], Q[:, :r]
    residual = w_oi - scaling * B @ A
    flat = lambda t: t.reshape(-1).tolist()
    return {
        **layer_header(name, in_f, out_f, r, alpha, conv1d, stored),
        "init": init,
        "delta": flat(scaling * B @ A),  # [out, in]
        "residual": flat(residual.t() if conv1d else residual),  # stored layout
        "lora_A_row_norms": flat(torch.linalg.norm(A, dim=1)),
    }


cases = [
    case("linear", in_f=20, out_f=12, r=3, alpha=6, conv1d=False),
    case("conv1d", in_f=16, out_f=24, r=4, alpha=16, conv1d=True),
    case("olora-linear", in_f=20, out_f=12, r=3, alpha=6, conv1d=False, init="olora"),
]
with open(OUT, "w") as f:
    json.dump({"generator": "scripts/gen_pissa_fixtures.py", "torch": torch.__version__,
               "python": platform.python_version(), "cases": cases}, f)
    f.write("\n")
print(OUT, os.path.getsize(OUT), "bytes")
