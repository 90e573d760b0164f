"""Writes test/fixtures/dora/layers.json: DoRA on one Linear and one GPT-2 Conv1D computed by plain
torch (float64) with PEFT's rules, for test/dora.test.ts.

Run: /usr/bin/python3 scripts/gen_dora_fixtures.py   (torch 1.13; PEFT is not installed, so its
rules are applied here directly, independently of knobs' code and its norm expansion.)

PEFT's rules, huggingface/peft at commit 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40:
  src/peft/tuners/lora/dora.py DoraLinearLayer.get_weight_norm: the norm of
      transpose(W, fan_in_fan_out) + scaling * (B @ A) over dim=1 (one per output);
  DoraLinearLayer.forward: the norm detached, mag_norm_scale = magnitude / norm,
      result = base(x) + (mag_norm_scale - 1) * (x @ W^T) + mag_norm_scale * scaling * B(A(x));
  src/peft/tuners/lora/variants.py DoraLinearVariant.merge_safe: merged weight
      (magnitude / norm) * (W + scaling * B @ A), row by row ([out, in]; transposed for Conv1D).
"""
import json
import os
import platform

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "test", "fixtures", "dora", "layers.json")
torch.manual_seed(0)


def layer_header(name, in_f, out_f, r, alpha, conv1d, stored):
    """The fields every layer case starts with (shared with gen_pissa_fixtures.py)."""
    return {"name": name, "in": in_f, "out": out_f, "r": r, "lora_alpha": alpha, "conv1d": conv1d,
            "weight": stored.detach().reshape(-1).tolist()}


def case(name, in_f, out_f, r, alpha, bias, conv1d):
    dt = torch.float64
    w_oi = torch.randn(out_f, in_f, dtype=dt) * 0.3
    stored = w_oi.t().contiguous() if conv1d else w_oi  # GPT-2 Conv1D stores [in, out]
    b = torch.randn(out_f, dtype=dt) * 0.1 if bias else None
    A = (torch.randn(r, in_f, dtype=dt) * 0.2).requires_grad_()
    B = (torch.randn(out_f, r, dtype=dt) * 0.2).requires_grad_()
    scaling = alpha / r
    with torch.no_grad():
        norm0 = torch.linalg.norm(w_oi + scaling * (B @ A), dim=1)
    # a trained magnitude: the initial norm moved a little
    m = (norm0 * (1 + 0.1 * torch.randn(out_f, dtype=dt))).requires_grad_()
    x = torch.randn(3, 4, in_f, dtype=dt).requires_grad_()
    g = torch.randn(3, 4, out_f, dtype=dt)

    norm = torch.linalg.norm(w_oi + scaling * (B @ A).detach(), dim=1).detach()
    scale = (m / norm).view(1, -1)
    base_nb = x @ w_oi.t()
    base = base_nb + (b if b is not None else 0)
    y = base + (scale - 1) * base_nb + scale * ((x @ A.t()) @ B.t()) * scaling
    (y * g).sum().backward()
    with torch.no_grad():
        merged = (m / norm).view(-1, 1) * (w_oi + scaling * (B @ A))
        merged_stored = merged.t() if conv1d else merged

    flat = lambda t: t.detach().reshape(-1).tolist()
    return {
        **layer_header(name, in_f, out_f, r, alpha, conv1d, stored),
        "bias": flat(b) if b is not None else None,
        "lora_A": flat(A),
        "lora_B": flat(B),
        "magnitude": flat(m),
        "initial_norm": flat(norm0),
        "x_shape": list(x.shape),
        "x": flat(x),
        "grad_output": flat(g),
        "y": flat(y),
        "grad_x": flat(x.grad),
        "grad_lora_A": flat(A.grad),
        "grad_lora_B": flat(B.grad),
        "grad_magnitude": flat(m.grad),
        "merged_weight": flat(merged_stored),
    }


def main():
    cases = [
        case("linear", in_f=40, out_f=24, r=4, alpha=16, bias=False, conv1d=False),
        case("conv1d-bias", in_f=32, out_f=48, r=2, alpha=8, bias=True, conv1d=True),
    ]
    with open(OUT, "w") as f:
        json.dump(
            {
                "generator": "scripts/gen_dora_fixtures.py",
                "torch": torch.__version__,
                "python": platform.python_version(),
                "peft_commit": "5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40",
                "cases": cases,
            },
            f,
        )
        f.write("\n")
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
