"""Goldens for src/finetune/svd.ts: numpy's SVD of a few matrices shaped like LoRA weight deltas.

Run: /usr/bin/python3 scripts/gen_svd_fixtures.py  (writes test/fixtures/svd/svd.json)

Each case is a matrix with a decaying spectrum (a low-rank product plus small noise, as a
fine-tuning difference is), tall, wide and square, plus an exactly rank-deficient one. numpy's
LAPACK SVD (gesdd) gives the singular values; the best rank-r Frobenius error is
sqrt(sum of the squared singular values past r) (Eckart–Young).
"""
import json
import platform

import numpy as np

rng = np.random.default_rng(20261130)


def case(name, rows, cols, true_rank, noise, r):
    a = rng.standard_normal((rows, true_rank)) * np.linspace(3.0, 0.5, true_rank)
    m = a @ rng.standard_normal((true_rank, cols)) / np.sqrt(cols)
    m = m + noise * rng.standard_normal((rows, cols))
    m = m.astype(np.float64)
    s = np.linalg.svd(m, compute_uv=False)
    return {
        "name": name,
        "rows": rows,
        "cols": cols,
        "r": r,
        "matrix": [float(x) for x in m.reshape(-1)],
        "singular_values": [float(x) for x in s],
        "best_error": float(np.sqrt(np.sum(s[r:] ** 2))),
        "energy_share": float(np.sum(s[:r] ** 2) / np.sum(s ** 2)),
    }


cases = [
    case("tall-decaying", 96, 40, 12, 1e-3, 8),
    case("wide-decaying", 32, 120, 10, 1e-3, 6),
    case("square-noisy", 48, 48, 20, 5e-2, 16),
    case("rank-deficient", 30, 50, 4, 0.0, 4),
]
out = {
    "generator": "scripts/gen_svd_fixtures.py",
    "command": "/usr/bin/python3 scripts/gen_svd_fixtures.py",
    "numpy_version": np.__version__,
    "python_version": platform.python_version(),
    "cases": cases,
}
with open("test/fixtures/svd/svd.json", "w") as f:
    json.dump(out, f)
print("wrote test/fixtures/svd/svd.json", [c["name"] for c in cases])
