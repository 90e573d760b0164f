#!/usr/bin/python3
"""PyTorch golden fixtures for knobs' op conformance suite; run by hand, outputs committed.

    /usr/bin/python3 scripts/gen_goldens.py

writes test/fixtures/goldens/<family>.json (elementwise, reduce, linalg, nn, shape, conv). The
suite (test/conformance.test.ts, test/gradcheck.test.ts) reads them and never needs Python.
Output is deterministic for a given torch/numpy version: inputs come from numpy's PCG64 seeded
with SEED, and every case is computed twice by torch, once in float32 and once in float64, from
the same float32-rounded inputs and upstream gradients.

File layout
-----------
    {"format": 1, "generator": ..., "command": ..., "torch_version": ..., "numpy_version": ...,
     "python_version": ..., "seed": ..., "family": ..., "cases": [CASE, ...]}

CASE
    id         unique "op/what_it_tests"
    op         the knobs function the harness calls (test/harness/ops.ts maps op + attrs to a call)
    attrs      keyword attributes, named as in the knobs API (axis, keepdim, eps, ...). Two generic
               ones: "scalar" + "scalar_pos" mean a JS number is passed as argument number
               scalar_pos (0-based) and the tensor inputs fill the other positions in order,
               e.g. {"scalar": 2.5, "scalar_pos": 0} with inputs [x] is sub(2.5, x).
    tol        tolerance family of the forward outputs: exact | elementwise | reduction
               (gradients always use the gradient family; see test/harness/tolerance.ts)
    tags       edge-case labels: broadcast, scalar, rank_mismatch, empty, view, large, nonfinite, ties,
               aliasing (one leaf used as several inputs)
    gradcheck  false when the case is unsuitable for finite differences (non-smooth point, ties,
               non-finite values, huge magnitudes); "gradcheck_why" says why
    inputs     [{shape, dtype, data, requires_grad, view?}] or [{shape, dtype, same_as, requires_grad: false, view?}]
               same_as: j reuses input j's leaf tensor (no data of its own; its view, if any, applies
               to that leaf), so the gradients of both uses accumulate in grads[j].
               dtype: "float" (the dtype of the run: f32 or f64), "i32" or "bool" (0/1)
               data: flat row-major values of the input's *base* tensor (see view)
               view (optional): the op sees a non-contiguous view of a contiguous base tensor.
                 base_shape is the shape `data` fills; `shape` is the shape after the view:
                 {"kind": "transpose", "base_shape", "dims": [a, b]}   base.transpose(a, b)
                 {"kind": "permute",   "base_shape", "dims": [...]}    base.permute(dims)
                 {"kind": "slice",     "base_shape", "axis", "start", "end", "step"}
                                                       base.slice(axis, start, end, step)
                 {"kind": "expand",    "base_shape"}                   base.expand(shape)
               The base is the leaf: gradients are with respect to the base (shape base_shape).
    outputs    [{shape, dtype, data, data64}]: data from torch float32, data64 from torch float64
               (data64 only for float outputs; integer/bool results are the same in both)
    upstream   [flat g per output, or null for non-float outputs]: the loss is Σ_i Σ out_i · g_i,
               so a single-output case is out.backward(g)
    grads      [flat gradient per input (float32 torch), or null when the input has no gradient]
    grads64    the same from the float64 run

Numbers are JSON numbers (negative zero written as -0.0); NaN and ±Inf are the strings "nan",
"inf", "-inf". Float32 values are
written as the shortest decimal that rounds back to the same float32 (the harness applies
Math.fround to read them exactly); float64 values as Python's repr (exact round trip).
Integer targets/ids are stored as i32 and passed to torch as int64 (what torch requires).

Semantics worth knowing (torch 1.13):
  * max/min (knobs) = torch.amax/amin: on ties the gradient is split evenly among the tied
    elements. torch.max(x, dim) instead routes it all to the returned index; knobs follows amax.
  * argmax returns the first index among ties; NaN counts as the largest value.
  * maximum/minimum give each operand half the gradient on ties.
  * clamp passes the gradient where min <= x <= max (bounds inclusive).
  * torch 1.13 has no F.scaled_dot_product_attention: the reference is
    softmax(q kᵀ · scale + causal mask) v, the causal mask aligned top-left (key j visible from
    query i when j <= i), as later torch versions define it.
  * torch 1.13 has no rms_norm: the reference is x · rsqrt(mean(x², -1, keepdim) + eps) · w.
"""
import json
import math
import os
import platform
import sys

import numpy as np
import torch
import torch.nn.functional as F

SEED = 1234
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "test", "fixtures", "goldens")
COMMAND = "/usr/bin/python3 scripts/gen_goldens.py"

rng = np.random.default_rng(SEED)
torch.manual_seed(SEED)  # nothing here draws from torch's RNG; set anyway for safety
# One thread: multithreaded f32 reductions may sum in another order from run to run, and a
# regenerated file should differ only where its cases changed.
torch.set_num_threads(1)

# ----------------------------------------------------------------------------------------------
# input builders (all float data is float32)


def randn(*shape, scale=1.0, shift=0.0):
    return (rng.standard_normal(shape) * scale + shift).astype(np.float32)


def uniform(lo, hi, *shape):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def arr(values, shape=None):
    a = np.array(values, dtype=np.float32)
    return a.reshape(shape) if shape is not None else a


class In:
    """One input: base data, dtype, whether it needs a gradient, and an optional view."""

    def __init__(self, data, dtype="float", grad=True, view=None):
        self.data = np.asarray(data)
        self.dtype = dtype
        self.grad = grad and dtype == "float"
        self.view = view  # dict without base_shape (filled in here)
        self.same_as = None  # index of an earlier input whose leaf this one reuses


def Same(j, **view):
    """Input j's leaf again (optionally through a view): gradients from both uses accumulate on it."""
    inp = T(np.zeros(0, np.float32), grad=False, **view)
    inp.same_as = j
    return inp


def T(data, grad=True, **view):
    """A float input; view kinds: T(d, transpose=(a, b)), permute=dims, slice=(axis, start, end, step), expand=shape."""
    v = None
    if "transpose" in view:
        v = {"kind": "transpose", "dims": list(view["transpose"])}
    elif "permute" in view:
        v = {"kind": "permute", "dims": list(view["permute"])}
    elif "slice" in view:
        axis, start, end, step = view["slice"]
        v = {"kind": "slice", "axis": axis, "start": start, "end": end, "step": step}
    elif "expand" in view:
        v = {"kind": "expand", "shape": list(view["expand"])}
    return In(np.asarray(data, dtype=np.float32), "float", grad, v)


def I32(values, shape=None):
    a = np.array(values, dtype=np.int32)
    return In(a.reshape(shape) if shape is not None else a, "i32", False)


def B(values, shape=None):
    a = np.array(values, dtype=bool)
    return In(a.reshape(shape) if shape is not None else a, "bool", False)


# ----------------------------------------------------------------------------------------------
# torch side


def apply_view(t, v):
    if v is None:
        return t
    k = v["kind"]
    if k == "transpose":
        return t.transpose(*v["dims"])
    if k == "permute":
        return t.permute(*v["dims"])
    if k == "slice":
        idx = [slice(None)] * t.dim()
        idx[v["axis"]] = slice(v["start"], v["end"], v["step"])
        return t[tuple(idx)]
    if k == "expand":
        return t.expand(*v["shape"])
    raise ValueError(k)


def run_torch(fn, inputs, upstream, dtype):
    leaves, views = [], []
    for inp in inputs:
        if inp.same_as is not None:
            t = leaves[inp.same_as]
        elif inp.dtype == "float":
            t = torch.tensor(inp.data.astype(np.float64), dtype=dtype)
            t.requires_grad_(inp.grad)
        elif inp.dtype == "i32":
            t = torch.tensor(inp.data.astype(np.int64))
        else:
            t = torch.tensor(inp.data)
        leaves.append(t)
        views.append(apply_view(t, inp.view))
    out = fn(*views)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    grads = [None] * len(inputs)
    wanting = [i for i, inp in enumerate(inputs) if inp.grad]
    if wanting and upstream is not None:
        loss = sum((o * torch.tensor(g.astype(np.float64), dtype=dtype).reshape(o.shape)).sum()
                   for o, g in zip(outs, upstream) if g is not None)
        got = torch.autograd.grad(loss, [leaves[i] for i in wanting], allow_unused=True)
        for i, g in zip(wanting, got):
            grads[i] = (g if g is not None else torch.zeros_like(leaves[i])).detach()
    return [o.detach() for o in outs], grads


# ----------------------------------------------------------------------------------------------
# encoding


def enc_f32(a):
    out = []
    for v in np.asarray(a, dtype=np.float32).reshape(-1):
        if np.isnan(v):
            out.append("nan")
        elif np.isinf(v):
            out.append("inf" if v > 0 else "-inf")
        else:
            f = float(str(v))  # numpy prints the shortest decimal that round-trips the float32
            assert np.float32(f) == v, (v, f)
            out.append(f if f != int(f) or abs(f) >= 2**53 or (f == 0 and math.copysign(1, f) < 0) else int(f))  # keeps -0.0
    return out


def enc_f64(a):
    out = []
    for v in np.asarray(a, dtype=np.float64).reshape(-1):
        v = float(v)
        if math.isnan(v):
            out.append("nan")
        elif math.isinf(v):
            out.append("inf" if v > 0 else "-inf")
        else:
            out.append(int(v) if v == int(v) and abs(v) < 2**53 and not (v == 0 and math.copysign(1, v) < 0) else v)  # keeps -0.0
    return out


def enc_out(t):
    if t.dtype == torch.bool:
        return "bool", [int(x) for x in t.reshape(-1).tolist()]
    if t.dtype in (torch.int64, torch.int32):
        return "i32", [int(x) for x in t.reshape(-1).tolist()]
    return "float", None


# ----------------------------------------------------------------------------------------------
# case registry

FAMILIES = {}
IDS = set()


def case(family, cid, op, fn, inputs, attrs=None, tol="elementwise", tags=(), gradcheck=True, why=None):
    assert cid not in IDS, cid
    IDS.add(cid)
    attrs = attrs or {}
    # forward once to learn output shapes/dtypes, then draw the upstream gradients
    outs32, _ = run_torch(fn, inputs, None, torch.float32)
    upstream = []
    for o in outs32:
        upstream.append(randn(*o.shape).reshape(-1) if o.is_floating_point() else None)
    wants_grad = any(i.grad for i in inputs) and any(u is not None for u in upstream)
    outs32, grads32 = run_torch(fn, inputs, upstream if wants_grad else None, torch.float32)
    outs64, grads64 = run_torch(fn, inputs, upstream if wants_grad else None, torch.float64)

    enc_inputs = []
    for j, inp in enumerate(inputs):
        if inp.same_as is not None:
            base_shape = list(inputs[inp.same_as].data.shape)
            e = {"same_as": inp.same_as, "dtype": inp.dtype, "requires_grad": False}
            if inp.view is not None:
                view = dict(inp.view)
                view["base_shape"] = base_shape
                e["view"] = view
                e["shape"] = list(apply_view(torch.zeros(base_shape), inp.view).shape)
            else:
                e["shape"] = base_shape
            enc_inputs.append(e)
            continue
        base_shape = list(inp.data.shape)
        if inp.dtype == "float":
            data = enc_f32(inp.data)
        else:
            data = [int(x) for x in inp.data.reshape(-1).tolist()]
        shape = base_shape
        view = None
        if inp.view is not None:
            view = dict(inp.view)
            view["base_shape"] = base_shape
            probe = apply_view(torch.zeros(base_shape), inp.view)
            shape = list(probe.shape)
            assert not probe.is_contiguous() or probe.numel() <= 1, f"{cid}: view is contiguous"
        e = {"shape": shape, "dtype": inp.dtype, "data": data, "requires_grad": bool(inp.grad and wants_grad)}
        if view is not None:
            e["view"] = view
        enc_inputs.append(e)

    enc_outputs = []
    for o32, o64 in zip(outs32, outs64):
        kind, ints = enc_out(o32)
        if kind == "float":
            enc_outputs.append({"shape": list(o32.shape), "dtype": "float", "data": enc_f32(o32.numpy()),
                                "data64": enc_f64(o64.numpy())})
        else:
            kind64, ints64 = enc_out(o64)
            assert ints == ints64, f"{cid}: integer outputs differ between f32 and f64"
            enc_outputs.append({"shape": list(o32.shape), "dtype": kind, "data": ints})

    c = {"id": cid, "op": op, "attrs": attrs, "tol": tol, "tags": sorted(set(tags))}
    if not gradcheck:
        c["gradcheck"] = False
        c["gradcheck_why"] = why or "unspecified"
    c["inputs"] = enc_inputs
    c["outputs"] = enc_outputs
    c["upstream"] = [enc_f32(u) if (u is not None and wants_grad) else None for u in upstream]
    c["grads"] = [enc_f32(g.numpy()) if g is not None else None for g in grads32]
    c["grads64"] = [enc_f64(g.numpy()) if g is not None else None for g in grads64]
    FAMILIES.setdefault(family, []).append(c)


def sc(fn, value, pos):
    """Wraps a torch binary fn so the scalar sits at argument `pos` (a 0-d tensor of x's dtype
    where torch takes no Python number, e.g. maximum)."""
    def f(x):
        s = torch.tensor(value, dtype=x.dtype) if fn in (torch.maximum, torch.minimum) else value
        return fn(s, x) if pos == 0 else fn(x, s)
    return f


# ----------------------------------------------------------------------------------------------
# elementwise

EW = "elementwise"
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "maximum": torch.maximum, "minimum": torch.minimum,
}

for name, fn in BINARY.items():
    den = (lambda *s: uniform(0.5, 2.0, *s) * np.where(rng.random(s) < 0.5, -1, 1).astype(np.float32)) if name == "div" else randn
    case(EW, f"{name}/same_shape", name, fn, [T(randn(3, 4)), T(den(3, 4))])
    case(EW, f"{name}/broadcast_rank_mismatch", name, fn, [T(randn(2, 3, 4)), T(den(4))], tags=["broadcast", "rank_mismatch"])
    case(EW, f"{name}/broadcast_both", name, fn, [T(randn(3, 1)), T(den(1, 4))], tags=["broadcast"])
    case(EW, f"{name}/broadcast_0d", name, fn, [T(randn(2, 3)), T(den())], tags=["broadcast", "scalar"])
    case(EW, f"{name}/scalar_right", name, sc(fn, 2.5, 1), [T(randn(2, 3))], attrs={"scalar": 2.5, "scalar_pos": 1}, tags=["scalar"])
    case(EW, f"{name}/scalar_left", name, sc(fn, -1.5, 0), [T(den(2, 3))], attrs={"scalar": -1.5, "scalar_pos": 0}, tags=["scalar"])
    case(EW, f"{name}/transposed_and_sliced", name, fn, [T(randn(4, 3), transpose=(0, 1)), T(den(3, 8), slice=(1, 0, 8, 2))], tags=["view"])
    case(EW, f"{name}/expanded", name, fn, [T(randn(3, 1), expand=(3, 4)), T(den(3, 4))], tags=["view", "broadcast"])
    case(EW, f"{name}/empty", name, fn, [T(randn(0, 3)), T(den(1, 3))], tags=["empty", "broadcast"])

# ties for maximum/minimum: half the gradient to each operand (torch 1.13)
case(EW, "maximum/ties_split_gradient", "maximum", torch.maximum, [T(arr([1, 2, -3, 4, 0.5])), T(arr([1, 5, -3, -4, 0.5]))],
     tags=["ties"], gradcheck=False, why="ties are a non-differentiable point")
case(EW, "minimum/ties_split_gradient", "minimum", torch.minimum, [T(arr([1, 2, -3, 4, 0.5])), T(arr([1, 5, -3, -4, 0.5]))],
     tags=["ties"], gradcheck=False, why="ties are a non-differentiable point")

# pow: positive base for a finite d/db
case(EW, "pow/tensor_tensor", "pow", torch.pow, [T(uniform(0.5, 2.0, 3, 4)), T(randn(3, 4))])
case(EW, "pow/broadcast_exponent", "pow", torch.pow, [T(uniform(0.5, 2.0, 2, 3)), T(randn(3))], tags=["broadcast", "rank_mismatch"])
for e in (2.0, 3.0, 0.5, -1.5):
    case(EW, f"pow/scalar_exponent_{e}", "pow", sc(torch.pow, e, 1), [T(uniform(0.5, 2.0, 2, 3))], attrs={"scalar": e, "scalar_pos": 1}, tags=["scalar"])
case(EW, "pow/scalar_exponent_2_negative_base", "pow", sc(torch.pow, 2.0, 1), [T(randn(2, 3))], attrs={"scalar": 2.0, "scalar_pos": 1}, tags=["scalar"])
case(EW, "pow/scalar_base", "pow", sc(torch.pow, 2.0, 0), [T(randn(2, 3))], attrs={"scalar": 2.0, "scalar_pos": 0}, tags=["scalar"])
case(EW, "pow/transposed", "pow", torch.pow, [T(uniform(0.5, 2.0, 3, 2), transpose=(0, 1)), T(randn(2, 3))], tags=["view"])

UNARY = {
    "neg": (torch.neg, lambda *s: randn(*s)),
    "exp": (torch.exp, lambda *s: randn(*s)),
    "log": (torch.log, lambda *s: uniform(0.1, 5.0, *s)),
    "sqrt": (torch.sqrt, lambda *s: uniform(0.1, 5.0, *s)),
    "rsqrt": (torch.rsqrt, lambda *s: uniform(0.1, 5.0, *s)),
    "abs": (torch.abs, lambda *s: randn(*s)),
    "tanh": (torch.tanh, lambda *s: randn(*s, scale=2.0)),
    "sigmoid": (torch.sigmoid, lambda *s: randn(*s, scale=3.0)),
    "relu": (torch.relu, lambda *s: randn(*s)),
    "silu": (F.silu, lambda *s: randn(*s, scale=2.0)),
}
for name, (fn, gen) in UNARY.items():
    case(EW, f"{name}/basic", name, fn, [T(gen(3, 5))])
    case(EW, f"{name}/transposed_3d", name, fn, [T(gen(2, 3, 4), transpose=(0, 2))], tags=["view"])
    case(EW, f"{name}/sliced_step", name, fn, [T(gen(4, 7), slice=(1, 1, 7, 3))], tags=["view"])
    case(EW, f"{name}/empty", name, fn, [T(gen(2, 0))], tags=["empty"])
    case(EW, f"{name}/scalar_0d", name, fn, [T(gen())], tags=["scalar"])

for approx in ("none", "tanh"):
    g = (lambda a: lambda x: F.gelu(x, approximate=a))(approx)
    case(EW, f"gelu/{approx}/basic", "gelu", g, [T(randn(4, 6, scale=2.5))], attrs={"approximate": approx})
    case(EW, f"gelu/{approx}/wide_range", "gelu", g, [T(arr([-12, -6, -3.5, -1e-3, 0, 1e-3, 3.5, 6, 12]))], attrs={"approximate": approx}, tags=["large"])
    case(EW, f"gelu/{approx}/permuted", "gelu", g, [T(randn(2, 3, 4), permute=(2, 0, 1))], attrs={"approximate": approx}, tags=["view"])

# large magnitudes and non-finite values (forward only)
ovf = arr([0.0, 1.0, -1.0, 80.0, 88.0, 89.0, 100.0, -100.0, -104.0])
case(EW, "exp/overflow_to_inf", "exp", torch.exp, [T(ovf)], tags=["large", "nonfinite"], gradcheck=False, why="f32 overflow and huge values")
NF = arr([0.0, -0.0, 1.0, -2.0, float("inf"), float("-inf"), float("nan")])
for name, fn in (("exp", torch.exp), ("log", torch.log), ("sqrt", torch.sqrt), ("rsqrt", torch.rsqrt), ("abs", torch.abs),
                 ("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("relu", torch.relu), ("neg", torch.neg)):
    case(EW, f"{name}/nonfinite", name, fn, [T(NF, grad=False)], tags=["nonfinite"], gradcheck=False, why="non-finite inputs")
NFA = arr([1.0, float("inf"), float("inf"), float("nan"), 0.0, 0.0, -1.0, float("-inf")])
NFB = arr([float("nan"), float("-inf"), 2.0, 1.0, 0.0, float("inf"), 0.0, float("-inf")])
for name in ("add", "sub", "mul", "div", "maximum", "minimum"):
    case(EW, f"{name}/nonfinite", name, BINARY[name], [T(NFA, grad=False), T(NFB, grad=False)], tags=["nonfinite"], gradcheck=False, why="non-finite inputs")
case(EW, "clamp/nonfinite", "clamp", lambda x: torch.clamp(x, -1.0, 1.0), [T(NF, grad=False)], attrs={"min": -1.0, "max": 1.0},
     tags=["nonfinite"], gradcheck=False, why="non-finite inputs")

# clamp
case(EW, "clamp/min_max", "clamp", lambda x: torch.clamp(x, -0.5, 0.75), [T(randn(4, 5))], attrs={"min": -0.5, "max": 0.75})
case(EW, "clamp/min_only", "clamp", lambda x: torch.clamp(x, min=0.25), [T(randn(4, 5))], attrs={"min": 0.25})
case(EW, "clamp/max_only", "clamp", lambda x: torch.clamp(x, max=-0.25), [T(randn(4, 5))], attrs={"max": -0.25})
case(EW, "clamp/at_bounds_inclusive", "clamp", lambda x: torch.clamp(x, -0.5, 0.5), [T(arr([-1, -0.5, 0, 0.5, 1]))], attrs={"min": -0.5, "max": 0.5},
     tags=["ties"], gradcheck=False, why="inputs exactly at the clamp bounds")
case(EW, "clamp/transposed", "clamp", lambda x: torch.clamp(x, -0.5, 0.5), [T(randn(5, 3), transpose=(0, 1))], attrs={"min": -0.5, "max": 0.5}, tags=["view"])

# where
case(EW, "where/same_shape", "where", torch.where, [B(rng.random((3, 4)) < 0.5), T(randn(3, 4)), T(randn(3, 4))])
case(EW, "where/broadcast_all", "where", torch.where, [B(rng.random((3, 1)) < 0.5), T(randn(1, 4)), T(randn(2, 3, 4))], tags=["broadcast", "rank_mismatch"])
case(EW, "where/scalar_branch", "where", lambda c, a: torch.where(c, a, torch.tensor(-1.5, dtype=a.dtype)),
     [B(rng.random((2, 5)) < 0.5), T(randn(2, 5))], attrs={"scalar": -1.5, "scalar_pos": 2}, tags=["scalar"])
case(EW, "where/views", "where", torch.where, [B(rng.random((4, 3)) < 0.5), T(randn(3, 4), transpose=(0, 1)), T(randn(4, 1), expand=(4, 3))], tags=["view"])
case(EW, "where/empty", "where", torch.where, [B(np.zeros((0, 3), bool)), T(randn(0, 3)), T(randn(3))], tags=["empty", "broadcast"])

# comparisons (bool results)
CMP = {"eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge}
ca = arr([1, 2, 3, -1, 0.5, 2, float("nan"), float("inf")], (2, 4))
cb = arr([1, 3, 2, -1, 0.25, 2, float("nan"), float("inf")], (2, 4))
for name, fn in CMP.items():
    case(EW, f"{name}/with_ties_and_nonfinite", name, fn, [T(ca, grad=False), T(cb, grad=False)], tol="exact", tags=["ties", "nonfinite"])
    case(EW, f"{name}/broadcast", name, fn, [T(arr([[0], [1], [2]]), grad=False), T(arr([0, 1, 2, 3]), grad=False)], tol="exact", tags=["broadcast"])
    case(EW, f"{name}/scalar", name, sc(fn, 0.5, 1), [T(arr([0, 0.5, 1, -0.5]), grad=False)], attrs={"scalar": 0.5, "scalar_pos": 1}, tol="exact", tags=["scalar"])
    case(EW, f"{name}/transposed", name, fn, [T(randn(3, 2), transpose=(0, 1), grad=False), T(randn(2, 3), grad=False)], tol="exact", tags=["view"])

# ----------------------------------------------------------------------------------------------
# reductions

RD = "reduce"


def torch_reduce(name, axis, keepdim):
    def f(x):
        if name in ("sum", "mean"):
            fn = torch.sum if name == "sum" else torch.mean
            return fn(x) if axis is None and not keepdim else fn(x, dim=tuple(range(x.dim())) if axis is None else axis, keepdim=keepdim)
        fn = torch.amax if name == "max" else torch.amin
        return fn(x, dim=() if axis is None else axis, keepdim=keepdim)
    return f


for name in ("sum", "mean", "max", "min"):
    for axis, keepdim, tag in ((None, False, "all"), (None, True, "all_keepdim"), (1, False, "axis1"), (-1, True, "last_keepdim"),
                               ([0, 2], False, "axes_0_2"), ([0, 2], True, "axes_0_2_keepdim")):
        case(RD, f"{name}/{tag}", name, torch_reduce(name, axis, keepdim), [T(randn(2, 3, 4))], attrs={"axis": axis, "keepdim": keepdim}, tol="reduction")
    case(RD, f"{name}/transposed", name, torch_reduce(name, 0, False), [T(randn(3, 5), transpose=(0, 1))], attrs={"axis": 0, "keepdim": False}, tol="reduction", tags=["view"])
    case(RD, f"{name}/sliced_step", name, torch_reduce(name, 1, False), [T(randn(3, 9), slice=(1, 1, 9, 2))], attrs={"axis": 1, "keepdim": False}, tol="reduction", tags=["view"])
    case(RD, f"{name}/expanded", name, torch_reduce(name, 0, False), [T(randn(1, 4), expand=(3, 4))], attrs={"axis": 0, "keepdim": False}, tol="reduction", tags=["view", "ties"],
         **({} if name in ("sum", "mean") else {"gradcheck": False, "why": "expanded rows tie"}))
    case(RD, f"{name}/scalar_0d", name, torch_reduce(name, None, False), [T(randn())], attrs={"axis": None, "keepdim": False}, tol="reduction", tags=["scalar"])
    case(RD, f"{name}/empty_kept_axis", name, torch_reduce(name, 1, False), [T(randn(0, 3))], attrs={"axis": 1, "keepdim": False}, tol="reduction", tags=["empty"])
for name in ("sum", "mean"):
    case(RD, f"{name}/over_empty_axis", name, torch_reduce(name, 0, False), [T(randn(0, 3))], attrs={"axis": 0, "keepdim": False}, tol="reduction",
         tags=["empty"], gradcheck=False, why="no elements to perturb")
case(RD, "sum/large_values", "sum", torch_reduce("sum", 1, False), [T(randn(3, 6, scale=1e4))], attrs={"axis": 1, "keepdim": False}, tol="reduction", tags=["large"])

# ties: amax/amin split the gradient evenly among tied elements
tx = arr([[1, 3, 3, 0], [2, 2, 2, -1], [5, -5, 4, 5]])
case(RD, "max/ties_split_gradient_axis", "max", torch_reduce("max", 1, False), [T(tx)], attrs={"axis": 1, "keepdim": False}, tol="reduction",
     tags=["ties"], gradcheck=False, why="ties are a non-differentiable point")
case(RD, "max/ties_split_gradient_all", "max", torch_reduce("max", None, False), [T(tx)], attrs={"axis": None, "keepdim": False}, tol="reduction",
     tags=["ties"], gradcheck=False, why="ties are a non-differentiable point")
case(RD, "min/ties_split_gradient_axis", "min", torch_reduce("min", 1, False), [T(-tx)], attrs={"axis": 1, "keepdim": False}, tol="reduction",
     tags=["ties"], gradcheck=False, why="ties are a non-differentiable point")
case(RD, "max/nan_propagates", "max", torch_reduce("max", 1, False), [T(arr([[1, float("nan"), 3], [float("-inf"), -1, float("inf")]]), grad=False)],
     attrs={"axis": 1, "keepdim": False}, tol="reduction", tags=["nonfinite"], gradcheck=False, why="non-finite inputs")
case(RD, "min/nan_propagates", "min", torch_reduce("min", 1, False), [T(arr([[1, float("nan"), 3], [float("-inf"), -1, float("inf")]]), grad=False)],
     attrs={"axis": 1, "keepdim": False}, tol="reduction", tags=["nonfinite"], gradcheck=False, why="non-finite inputs")
case(RD, "sum/nonfinite", "sum", torch_reduce("sum", 1, False), [T(arr([[1, float("nan"), 3], [float("inf"), -1, float("inf")], [float("inf"), 0, float("-inf")]]), grad=False)],
     attrs={"axis": 1, "keepdim": False}, tol="reduction", tags=["nonfinite"], gradcheck=False, why="non-finite inputs")


def torch_argmax(axis, keepdim):
    return lambda x: torch.argmax(x, dim=axis, keepdim=keepdim) if axis is not None else torch.argmax(x)


case(RD, "argmax/all", "argmax", torch_argmax(None, False), [T(randn(3, 4), grad=False)], attrs={"axis": None, "keepdim": False}, tol="exact")
case(RD, "argmax/axis0", "argmax", torch_argmax(0, False), [T(randn(3, 4), grad=False)], attrs={"axis": 0, "keepdim": False}, tol="exact")
case(RD, "argmax/last_keepdim", "argmax", torch_argmax(-1, True), [T(randn(2, 3, 4), grad=False)], attrs={"axis": -1, "keepdim": True}, tol="exact")
case(RD, "argmax/ties_first_index", "argmax", torch_argmax(1, False), [T(tx, grad=False)], attrs={"axis": 1, "keepdim": False}, tol="exact", tags=["ties"])
case(RD, "argmax/ties_first_index_all", "argmax", torch_argmax(None, False), [T(tx, grad=False)], attrs={"axis": None, "keepdim": False}, tol="exact", tags=["ties"])
case(RD, "argmax/nan_is_largest", "argmax", torch_argmax(1, False), [T(arr([[1, float("nan"), 3], [float("-inf"), -1, float("inf")]]), grad=False)],
     attrs={"axis": 1, "keepdim": False}, tol="exact", tags=["nonfinite"])
case(RD, "argmax/transposed", "argmax", torch_argmax(1, False), [T(randn(5, 3), transpose=(0, 1), grad=False)], attrs={"axis": 1, "keepdim": False}, tol="exact", tags=["view"])
case(RD, "argmax/empty_kept_axis", "argmax", torch_argmax(1, False), [T(randn(0, 3), grad=False)], attrs={"axis": 1, "keepdim": False}, tol="exact", tags=["empty"])


def torch_var(axis, correction, keepdim):
    return lambda x: torch.var(x, dim=axis, correction=correction, keepdim=keepdim)


case(RD, "var/all_default", "var", torch_var(None, 1, False), [T(randn(3, 4))], attrs={"axis": None, "correction": 1, "keepdim": False}, tol="reduction")
case(RD, "var/axis1_biased", "var", torch_var(1, 0, False), [T(randn(3, 5))], attrs={"axis": 1, "correction": 0, "keepdim": False}, tol="reduction")
case(RD, "var/axes_keepdim", "var", torch_var([0, 2], 1, True), [T(randn(2, 3, 4))], attrs={"axis": [0, 2], "correction": 1, "keepdim": True}, tol="reduction")
case(RD, "var/offset_mean", "var", torch_var(-1, 1, False), [T(randn(3, 6, shift=100.0))], attrs={"axis": -1, "correction": 1, "keepdim": False}, tol="reduction", tags=["large"])
case(RD, "var/transposed", "var", torch_var(0, 1, False), [T(randn(4, 3), transpose=(0, 1))], attrs={"axis": 0, "correction": 1, "keepdim": False}, tol="reduction", tags=["view"])

# ----------------------------------------------------------------------------------------------
# matmul

LA = "linalg"
MM = [
    ("vec_vec", (5,), (5,), {}),
    ("vec_mat", (4,), (4, 3), {}),
    ("mat_vec", (3, 4), (4,), {}),
    ("mat_mat", (3, 4), (4, 5), {}),
    ("batched", (2, 3, 4), (2, 4, 5), {}),
    ("batch_broadcast", (2, 1, 3, 4), (3, 4, 2), {"tags": ["broadcast", "rank_mismatch"]}),
    ("batched_times_mat", (2, 3, 4), (4, 5), {"tags": ["rank_mismatch"]}),
    ("mat_times_batched", (3, 4), (2, 4, 5), {"tags": ["rank_mismatch"]}),
    ("vec_times_batched", (4,), (2, 4, 3), {"tags": ["rank_mismatch"]}),
    ("batched_times_vec", (2, 3, 4), (4,), {"tags": ["rank_mismatch"]}),
    ("empty_inner", (3, 0), (0, 4), {"tags": ["empty"]}),
    ("empty_rows", (0, 4), (4, 3), {"tags": ["empty"]}),
]
for name, sa, sb, kw in MM:
    case(LA, f"matmul/{name}", "matmul", torch.matmul, [T(randn(*sa)), T(randn(*sb))], tol="reduction", tags=kw.get("tags", ()))
case(LA, "matmul/transposed_operands", "matmul", torch.matmul, [T(randn(4, 3), transpose=(0, 1)), T(randn(5, 4), transpose=(0, 1))], tol="reduction", tags=["view"])
case(LA, "matmul/batched_transposed_rhs", "matmul", torch.matmul, [T(randn(2, 3, 4)), T(randn(2, 5, 4), transpose=(1, 2))], tol="reduction", tags=["view"])
case(LA, "matmul/sliced_lhs", "matmul", torch.matmul, [T(randn(6, 4), slice=(0, 0, 6, 2)), T(randn(4, 2))], tol="reduction", tags=["view"])
case(LA, "matmul/expanded_batch", "matmul", torch.matmul, [T(randn(1, 3, 4), expand=(2, 3, 4)), T(randn(2, 4, 2))], tol="reduction", tags=["view", "broadcast"])
case(LA, "matmul/larger", "matmul", torch.matmul, [T(randn(17, 33)), T(randn(33, 9))], tol="reduction")
case(LA, "matmul/one_side_grad", "matmul", torch.matmul, [T(randn(3, 4), grad=False), T(randn(4, 2))], tol="reduction")

# ----------------------------------------------------------------------------------------------
# nn: softmax, log-softmax, cross-entropy, norms, embedding, attention

NN = "nn"
for name, fn in (("softmax", F.softmax), ("logSoftmax", F.log_softmax)):
    f = (lambda fn: lambda axis: lambda x: fn(x, dim=axis))(fn)
    case(NN, f"{name}/last_axis", name, f(-1), [T(randn(3, 5, scale=2.0))], attrs={"axis": -1}, tol="reduction")
    case(NN, f"{name}/axis0_3d", name, f(0), [T(randn(3, 2, 4))], attrs={"axis": 0}, tol="reduction")
    case(NN, f"{name}/transposed", name, f(-1), [T(randn(6, 3), transpose=(0, 1))], attrs={"axis": -1}, tol="reduction", tags=["view"])
    case(NN, f"{name}/sliced_step", name, f(1), [T(randn(2, 9), slice=(1, 0, 9, 2))], attrs={"axis": 1}, tol="reduction", tags=["view"])
    case(NN, f"{name}/large_logits", name, f(-1), [T(arr([[1e4, 1e4 - 1, -1e4, 0], [-1e4, -1e4 + 2, -1e4 + 1, -2e4], [3e4, 3e4, 3e4, 3e4]]))],
         attrs={"axis": -1}, tol="reduction", tags=["large", "ties"], gradcheck=False, why="huge magnitudes")
    case(NN, f"{name}/neg_inf_masked", name, f(-1), [T(arr([[0.5, float("-inf"), 1.5, -0.25], [float("-inf"), 2.0, float("-inf"), 0.0]]))],
         attrs={"axis": -1}, tol="reduction", tags=["nonfinite"], gradcheck=False, why="non-finite inputs")
    case(NN, f"{name}/empty_rows", name, f(-1), [T(randn(0, 4))], attrs={"axis": -1}, tol="reduction", tags=["empty"])
    case(NN, f"{name}/single_class", name, f(-1), [T(randn(3, 1))], attrs={"axis": -1}, tol="reduction")


def torch_ce(ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    return lambda logits, t: F.cross_entropy(logits, t, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)


for red in ("mean", "sum", "none"):
    case(NN, f"crossEntropy/{red}", "crossEntropy", torch_ce(reduction=red), [T(randn(5, 4, scale=2.0)), I32(rng.integers(0, 4, 5))],
         attrs={"ignoreIndex": -100, "labelSmoothing": 0, "reduction": red}, tol="reduction")
    case(NN, f"crossEntropy/ignore_index_{red}", "crossEntropy", torch_ce(ignore_index=-100, reduction=red), [T(randn(5, 3)), I32([0, -100, 2, -100, 1])],
         attrs={"ignoreIndex": -100, "labelSmoothing": 0, "reduction": red}, tol="reduction")
    case(NN, f"crossEntropy/label_smoothing_{red}", "crossEntropy", torch_ce(label_smoothing=0.1, reduction=red), [T(randn(4, 6)), I32(rng.integers(0, 6, 4))],
         attrs={"ignoreIndex": -100, "labelSmoothing": 0.1, "reduction": red}, tol="reduction")
case(NN, "crossEntropy/custom_ignore_with_smoothing", "crossEntropy", torch_ce(ignore_index=2, label_smoothing=0.2), [T(randn(6, 5)), I32([2, 0, 4, 2, 1, 3])],
     attrs={"ignoreIndex": 2, "labelSmoothing": 0.2, "reduction": "mean"}, tol="reduction")
case(NN, "crossEntropy/large_logits", "crossEntropy", torch_ce(), [T(arr([[1e4, -1e4, 0, 1e4 - 3], [-2e4, 2e4, 1.5e4, 0], [5e3, 5e3 + 1, 5e3 - 1, 5e3]])), I32([3, 0, 2])],
     attrs={"ignoreIndex": -100, "labelSmoothing": 0, "reduction": "mean"}, tol="reduction", tags=["large"], gradcheck=False, why="huge magnitudes")
case(NN, "crossEntropy/large_logits_smoothing", "crossEntropy", torch_ce(label_smoothing=0.1, reduction="none"),
     [T(arr([[1e4, -1e4, 0, 1e4 - 3], [-2e4, 2e4, 1.5e4, 0]])), I32([3, 0])],
     attrs={"ignoreIndex": -100, "labelSmoothing": 0.1, "reduction": "none"}, tol="reduction", tags=["large"], gradcheck=False, why="huge magnitudes")
case(NN, "crossEntropy/transposed_logits", "crossEntropy", torch_ce(), [T(randn(4, 3), transpose=(0, 1)), I32([1, 3, 0])],
     attrs={"ignoreIndex": -100, "labelSmoothing": 0, "reduction": "mean"}, tol="reduction", tags=["view"])
case(NN, "crossEntropy/all_ignored_mean_is_nan", "crossEntropy", torch_ce(), [T(randn(2, 3), grad=False), I32([-100, -100])],
     attrs={"ignoreIndex": -100, "labelSmoothing": 0, "reduction": "mean"}, tol="reduction", tags=["nonfinite"], gradcheck=False, why="0/0")


def torch_ln(shape, eps, has_w, has_b):
    def f(x, *rest):
        rest = list(rest)
        w = rest.pop(0) if has_w else None
        b = rest.pop(0) if has_b else None
        return F.layer_norm(x, shape, w, b, eps)
    return f


def ln_case(cid, x, shape, eps=1e-5, has_w=True, has_b=True, tags=()):
    ins = [x]
    if has_w:
        ins.append(T(randn(*shape, scale=0.5, shift=1.0)))
    if has_b:
        ins.append(T(randn(*shape, scale=0.5)))
    case(NN, cid, "layerNorm", torch_ln(shape, eps, has_w, has_b), ins,
         attrs={"normalizedShape": list(shape), "eps": eps, "weight": has_w, "bias": has_b}, tol="reduction", tags=tags)


ln_case("layerNorm/last_dim", T(randn(3, 8)), (8,))
ln_case("layerNorm/two_dims", T(randn(2, 3, 4)), (3, 4))
ln_case("layerNorm/no_affine", T(randn(4, 6)), (6,), has_w=False, has_b=False)
ln_case("layerNorm/weight_only", T(randn(4, 6)), (6,), has_b=False)
ln_case("layerNorm/bias_only", T(randn(4, 6)), (6,), has_w=False)
ln_case("layerNorm/eps_large", T(randn(3, 5, scale=0.01)), (5,), eps=1e-2)
ln_case("layerNorm/offset_inputs", T(randn(3, 8, shift=50.0)), (8,), tags=["large"])
ln_case("layerNorm/transposed", T(randn(8, 3), transpose=(0, 1)), (8,), tags=["view"])
ln_case("layerNorm/empty_batch", T(randn(0, 4)), (4,), tags=["empty"])


def torch_rms(eps, has_w):
    def f(x, *w):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return y * w[0] if has_w else y
    return f


case(NN, "rmsNorm/weight", "rmsNorm", torch_rms(1e-6, True), [T(randn(3, 8)), T(randn(8, scale=0.5, shift=1.0))], attrs={"eps": 1e-6, "weight": True}, tol="reduction")
case(NN, "rmsNorm/no_weight", "rmsNorm", torch_rms(1e-6, False), [T(randn(2, 3, 5))], attrs={"eps": 1e-6, "weight": False}, tol="reduction")
case(NN, "rmsNorm/eps_large", "rmsNorm", torch_rms(1e-2, True), [T(randn(3, 4, scale=0.05)), T(randn(4))], attrs={"eps": 1e-2, "weight": True}, tol="reduction")
case(NN, "rmsNorm/transposed", "rmsNorm", torch_rms(1e-6, True), [T(randn(6, 4), transpose=(0, 1)), T(randn(6))], attrs={"eps": 1e-6, "weight": True}, tol="reduction", tags=["view"])
case(NN, "rmsNorm/empty_batch", "rmsNorm", torch_rms(1e-6, True), [T(randn(0, 4)), T(randn(4))], attrs={"eps": 1e-6, "weight": True}, tol="reduction", tags=["empty"])

emb = lambda ids, w: F.embedding(ids, w)
case(NN, "embedding/1d_ids_repeated", "embedding", emb, [I32([1, 3, 1, 0, 3, 3]), T(randn(5, 4))], tol="exact")
case(NN, "embedding/2d_ids", "embedding", emb, [I32(rng.integers(0, 7, (2, 3))), T(randn(7, 3))], tol="exact")
case(NN, "embedding/0d_id", "embedding", emb, [I32(4), T(randn(6, 2))], tol="exact", tags=["scalar"])
case(NN, "embedding/empty_ids", "embedding", emb, [I32(np.zeros((0,), np.int32)), T(randn(4, 3))], tol="exact", tags=["empty"])
case(NN, "embedding/transposed_table", "embedding", emb, [I32([2, 0, 2]), T(randn(3, 4), transpose=(0, 1))], tol="exact", tags=["view"])


def torch_sdpa(causal=False, scale=None):
    def f(q, k, v):
        s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = torch.matmul(q, k.transpose(-2, -1)) * s
        if causal:
            Tq, Tk = q.shape[-2], k.shape[-2]
            mask = torch.ones(Tq, Tk, dtype=torch.bool).tril()
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    return f


case(NN, "scaledDotProductAttention/basic", "scaledDotProductAttention", torch_sdpa(), [T(randn(2, 4, 3)), T(randn(2, 5, 3)), T(randn(2, 5, 2))],
     attrs={"causal": False}, tol="reduction")
case(NN, "scaledDotProductAttention/causal_square", "scaledDotProductAttention", torch_sdpa(True), [T(randn(2, 2, 4, 3)), T(randn(2, 2, 4, 3)), T(randn(2, 2, 4, 3))],
     attrs={"causal": True}, tol="reduction")
case(NN, "scaledDotProductAttention/causal_tq_lt_tk_top_left", "scaledDotProductAttention", torch_sdpa(True), [T(randn(3, 4)), T(randn(5, 4)), T(randn(5, 2))],
     attrs={"causal": True}, tol="reduction")
case(NN, "scaledDotProductAttention/custom_scale", "scaledDotProductAttention", torch_sdpa(False, 0.3), [T(randn(1, 3, 4)), T(randn(1, 3, 4)), T(randn(1, 3, 4))],
     attrs={"causal": False, "scale": 0.3}, tol="reduction")
case(NN, "scaledDotProductAttention/head_transposed_views", "scaledDotProductAttention", torch_sdpa(True),
     [T(randn(1, 4, 2, 3), transpose=(1, 2)), T(randn(1, 4, 2, 3), transpose=(1, 2)), T(randn(1, 4, 2, 3), transpose=(1, 2))],
     attrs={"causal": True}, tol="reduction", tags=["view"])
case(NN, "scaledDotProductAttention/broadcast_kv_batch", "scaledDotProductAttention", torch_sdpa(), [T(randn(2, 3, 4)), T(randn(1, 3, 4)), T(randn(1, 3, 4))],
     attrs={"causal": False}, tol="reduction", tags=["broadcast"])
case(NN, "scaledDotProductAttention/large_scores", "scaledDotProductAttention", torch_sdpa(False, 1.0),
     [T(randn(2, 3, scale=60.0)), T(randn(4, 3, scale=60.0)), T(randn(4, 2))], attrs={"causal": False, "scale": 1.0}, tol="reduction",
     tags=["large"], gradcheck=False, why="saturated softmax with huge scores")

# ----------------------------------------------------------------------------------------------
# shape ops

SH = "shape"
case(SH, "concat/axis0", "concat", lambda *xs: torch.cat(xs, 0), [T(randn(2, 3)), T(randn(1, 3)), T(randn(3, 3))], attrs={"axis": 0}, tol="exact")
case(SH, "concat/axis_last_3d", "concat", lambda *xs: torch.cat(xs, -1), [T(randn(2, 2, 1)), T(randn(2, 2, 3))], attrs={"axis": -1}, tol="exact")
case(SH, "concat/with_empty", "concat", lambda *xs: torch.cat(xs, 1), [T(randn(2, 0)), T(randn(2, 3)), T(randn(2, 0))], attrs={"axis": 1}, tol="exact", tags=["empty"])
case(SH, "concat/views", "concat", lambda *xs: torch.cat(xs, 1), [T(randn(3, 2), transpose=(0, 1)), T(randn(2, 6), slice=(1, 0, 6, 3)), T(randn(2, 1), expand=(2, 2))],
     attrs={"axis": 1}, tol="exact", tags=["view"])
case(SH, "concat/single", "concat", lambda *xs: torch.cat(xs, 0), [T(randn(2, 2))], attrs={"axis": 0}, tol="exact")
case(SH, "stack/axis0", "stack", lambda *xs: torch.stack(xs, 0), [T(randn(2, 3)), T(randn(2, 3)), T(randn(2, 3))], attrs={"axis": 0}, tol="exact")
case(SH, "stack/axis_last", "stack", lambda *xs: torch.stack(xs, -1), [T(randn(2, 3)), T(randn(2, 3))], attrs={"axis": -1}, tol="exact")
case(SH, "stack/middle_views", "stack", lambda *xs: torch.stack(xs, 1), [T(randn(3, 2), transpose=(0, 1)), T(randn(2, 3))], attrs={"axis": 1}, tol="exact", tags=["view"])
case(SH, "stack/empty", "stack", lambda *xs: torch.stack(xs, 0), [T(randn(0, 2)), T(randn(0, 2))], attrs={"axis": 0}, tol="exact", tags=["empty"])
case(SH, "split/even_chunks", "split", lambda x: torch.split(x, 2, 0), [T(randn(6, 3))], attrs={"sizes": 2, "axis": 0}, tol="exact")
case(SH, "split/uneven_chunks", "split", lambda x: torch.split(x, 2, 1), [T(randn(2, 5))], attrs={"sizes": 2, "axis": 1}, tol="exact")
case(SH, "split/sizes_list_with_zero", "split", lambda x: torch.split(x, [1, 0, 3], -1), [T(randn(2, 4))], attrs={"sizes": [1, 0, 3], "axis": -1}, tol="exact", tags=["empty"])
case(SH, "split/transposed", "split", lambda x: torch.split(x, [2, 1], 0), [T(randn(4, 3), transpose=(0, 1))], attrs={"sizes": [2, 1], "axis": 0}, tol="exact", tags=["view"])
case(SH, "pad/last_dim", "pad", lambda x: F.pad(x, [1, 2]), [T(randn(2, 3))], attrs={"pads": [1, 2], "value": 0}, tol="exact")
case(SH, "pad/two_dims_value", "pad", lambda x: F.pad(x, [0, 1, 2, 0], value=-1.5), [T(randn(2, 2, 3))], attrs={"pads": [0, 1, 2, 0], "value": -1.5}, tol="exact")
case(SH, "pad/three_dims", "pad", lambda x: F.pad(x, [1, 1, 0, 1, 1, 0]), [T(randn(1, 2, 2))], attrs={"pads": [1, 1, 0, 1, 1, 0], "value": 0}, tol="exact")
case(SH, "pad/empty_input", "pad", lambda x: F.pad(x, [1, 1]), [T(randn(2, 0))], attrs={"pads": [1, 1], "value": 0}, tol="exact", tags=["empty"])
case(SH, "pad/transposed", "pad", lambda x: F.pad(x, [2, 0, 1, 1]), [T(randn(3, 2), transpose=(0, 1))], attrs={"pads": [2, 0, 1, 1], "value": 0}, tol="exact", tags=["view"])
for name, fn in (("triu", torch.triu), ("tril", torch.tril)):
    for d in (0, 1, -1):
        case(SH, f"{name}/diag_{d}", name, (lambda fn, d: lambda x: fn(x, d))(fn, d), [T(randn(4, 5))], attrs={"diagonal": d}, tol="exact")
    case(SH, f"{name}/batched_tall", name, (lambda fn: lambda x: fn(x, 0))(fn), [T(randn(2, 5, 3))], attrs={"diagonal": 0}, tol="exact")
    case(SH, f"{name}/transposed", name, (lambda fn: lambda x: fn(x, 0))(fn), [T(randn(4, 3), transpose=(0, 1))], attrs={"diagonal": 0}, tol="exact", tags=["view"])
    case(SH, f"{name}/far_diagonal", name, (lambda fn: lambda x: fn(x, 7))(fn), [T(randn(3, 4))], attrs={"diagonal": 7}, tol="exact")

# ----------------------------------------------------------------------------------------------
# convolution and pooling

CV = "conv"


def torch_conv(stride=1, padding=0, dilation=1, groups=1, bias=False):
    def f(x, w, *b):
        return F.conv2d(x, w, b[0] if bias else None, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return f


def conv_case(cid, xs, ws, bias=False, tags=(), xview=None, **kw):
    ins = [T(randn(*xs), **(xview or {})), T(randn(*ws, scale=0.5))]
    if bias:
        ins.append(T(randn(ws[0])))
    attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    attrs["bias"] = bias
    case(CV, cid, "conv2d", torch_conv(bias=bias, **kw), ins, attrs=attrs, tol="reduction", tags=tags)


conv_case("conv2d/basic", (1, 2, 5, 5), (3, 2, 3, 3))
conv_case("conv2d/bias_stride_padding", (2, 2, 6, 5), (4, 2, 3, 3), bias=True, stride=2, padding=1)
conv_case("conv2d/pairs", (1, 3, 7, 6), (2, 3, 3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
conv_case("conv2d/dilation", (1, 1, 7, 7), (2, 1, 3, 3), dilation=2, padding=2)
conv_case("conv2d/groups", (1, 4, 5, 5), (6, 2, 3, 3), bias=True, groups=2, padding=1)
conv_case("conv2d/depthwise", (2, 3, 4, 4), (3, 1, 3, 3), groups=3, padding=1)
conv_case("conv2d/1x1", (2, 3, 3, 3), (4, 3, 1, 1), bias=True)
conv_case("conv2d/permuted_input", (1, 5, 5, 2), (2, 2, 3, 3), tags=["view"], xview={"permute": (0, 3, 1, 2)})
conv_case("conv2d/empty_batch", (0, 2, 4, 4), (3, 2, 3, 3), bias=True, tags=["empty"])


def torch_pool(kind, k, stride=None, padding=0):
    if kind == "max":
        return lambda x: F.max_pool2d(x, k, stride=stride, padding=padding)
    return lambda x: F.avg_pool2d(x, k, stride=stride, padding=padding, count_include_pad=True)


for kind, op in (("max", "maxPool2d"), ("avg", "avgPool2d")):
    tol = "elementwise" if kind == "max" else "reduction"
    for cid, xs, k, stride, padding in (("basic_2x2", (1, 2, 4, 4), 2, None, 0), ("k3_s2_p1", (2, 1, 5, 6), 3, 2, 1),
                                        ("pairs", (1, 2, 6, 5), (3, 2), (2, 1), (1, 0)), ("overlapping", (1, 1, 5, 5), 3, 1, 0)):
        attrs = {"kernelSize": list(k) if isinstance(k, tuple) else k}
        if stride is not None:
            attrs["stride"] = list(stride) if isinstance(stride, tuple) else stride
        if padding:
            attrs["padding"] = list(padding) if isinstance(padding, tuple) else padding
        case(CV, f"{op}/{cid}", op, torch_pool(kind, k, stride, padding), [T(randn(*xs))], attrs=attrs, tol=tol)
    case(CV, f"{op}/transposed_hw", op, torch_pool(kind, 2), [T(randn(1, 2, 6, 4), transpose=(2, 3))], attrs={"kernelSize": 2}, tol=tol, tags=["view"])
    case(CV, f"{op}/empty_batch", op, torch_pool(kind, 2), [T(randn(0, 2, 4, 4))], attrs={"kernelSize": 2}, tol=tol, tags=["empty"])


# ----------------------------------------------------------------------------------------------
# more edge cases: non-smooth points, saturation, degenerate shapes and statistics

SAT = arr([-1000, -100, -30, -5, 5, 30, 100, 1000])
for name, fn in (("sigmoid", torch.sigmoid), ("silu", F.silu), ("tanh", torch.tanh), ("exp", torch.exp)):
    case(EW, f"{name}/saturated", name, fn, [T(SAT)], tags=["large"], gradcheck=False, why="saturated, huge magnitudes")
for approx in ("none", "tanh"):
    case(EW, f"gelu/{approx}/saturated", "gelu", (lambda a: lambda x: F.gelu(x, approximate=a))(approx), [T(arr([-1e20, -1e4, -100, -30, 30, 100, 1e4, 1e20]))],
         attrs={"approximate": approx}, tags=["large"], gradcheck=False, why="saturated, huge magnitudes")
case(EW, "relu/at_zero", "relu", torch.relu, [T(arr([-1, 0, -0.0, 1]))], tags=["ties"], gradcheck=False, why="kink at 0")
case(EW, "abs/at_zero", "abs", torch.abs, [T(arr([-1, 0, -0.0, 1]))], tags=["ties"], gradcheck=False, why="kink at 0")
case(EW, "pow/zero_base", "pow", torch.pow, [T(arr([0, 0, 0, 2, 0])), T(arr([2, 0, -1, 0, 0.5]))], tags=["nonfinite"], gradcheck=False, why="0^b")
case(EW, "clamp/min_above_max", "clamp", lambda x: torch.clamp(x, 1.0, 0.0), [T(randn(5))], attrs={"min": 1.0, "max": 0.0})
case(EW, "where/nonfinite_in_unselected_branch", "where", torch.where,
     [B([True, False, True, False]), T(arr([1, float("nan"), 2, float("inf")])), T(arr([float("-inf"), 3, float("nan"), 4]))],
     tags=["nonfinite"], gradcheck=False, why="non-finite inputs")
case(RD, "sum/negative_axes_keepdim", "sum", torch_reduce("sum", [-1, 0], True), [T(randn(2, 3, 4))], attrs={"axis": [-1, 0], "keepdim": True}, tol="reduction")
case(RD, "mean/empty_all_is_nan", "mean", torch_reduce("mean", None, False), [T(randn(0, 3), grad=False)], attrs={"axis": None, "keepdim": False},
     tol="reduction", tags=["empty", "nonfinite"])
case(RD, "argmax/all_keepdim", "argmax", lambda x: torch.argmax(x, keepdim=True), [T(randn(2, 3), grad=False)], attrs={"axis": None, "keepdim": True}, tol="exact")
case(RD, "var/single_element_is_nan", "var", torch_var(None, 1, False), [T(arr([1.5]), grad=False)], attrs={"axis": None, "correction": 1, "keepdim": False},
     tol="reduction", tags=["nonfinite"])
case(RD, "var/correction_2", "var", torch_var(1, 2, False), [T(randn(3, 5))], attrs={"axis": 1, "correction": 2, "keepdim": False}, tol="reduction")
case(LA, "matmul/vec_vec_empty", "matmul", torch.matmul, [T(randn(0)), T(randn(0))], tol="reduction", tags=["empty"])
case(NN, "softmax/all_masked_row_is_nan", "softmax", lambda x: F.softmax(x, dim=-1), [T(arr([[float("-inf")] * 3, [0, 1, 2]]), grad=False)],
     attrs={"axis": -1}, tol="reduction", tags=["nonfinite"])
ln_case("layerNorm/constant_rows", T(arr([[2, 2, 2, 2], [1, -1, 1, -1], [0, 0, 0, 0]])), (4,))
case(NN, "rmsNorm/zero_row", "rmsNorm", torch_rms(1e-6, True), [T(arr([[0, 0, 0], [1, -2, 0.5]])), T(randn(3))], attrs={"eps": 1e-6, "weight": True},
     tol="reduction", gradcheck=False, why="rsqrt(eps) amplifies differences 1000x")
case(SH, "split/chunk_larger_than_axis", "split", lambda x: torch.split(x, 5, 0), [T(randn(3, 2))], attrs={"sizes": 5, "axis": 0}, tol="exact")
case(SH, "pad/zero_pads", "pad", lambda x: F.pad(x, [0, 0, 0, 0]), [T(randn(2, 3))], attrs={"pads": [0, 0, 0, 0], "value": 0}, tol="exact")
case(SH, "triu/empty", "triu", lambda x: torch.triu(x, 0), [T(randn(0, 3))], attrs={"diagonal": 0}, tol="exact", tags=["empty"])
case(SH, "tril/negative_far_diagonal", "tril", lambda x: torch.tril(x, -5), [T(randn(3, 4))], attrs={"diagonal": -5}, tol="exact")
conv_case("conv2d/big_padding_stride3", (1, 2, 5, 4), (2, 2, 3, 3), bias=True, stride=3, padding=2)
conv_case("conv2d/sliced_input", (1, 2, 9, 5), (2, 2, 2, 2), tags=["view"], xview={"slice": (2, 0, 9, 2)})

# the same leaf used twice: gradients from both paths accumulate
case(EW, "mul/same_leaf_squared", "mul", torch.mul, [T(randn(3, 4)), Same(0)], tags=["aliasing"])
case(EW, "add/leaf_plus_its_transpose", "add", torch.add, [T(randn(4, 4)), Same(0, transpose=(0, 1))], tags=["aliasing", "view"])
case(EW, "where/same_leaf_both_branches", "where", torch.where, [B(rng.random((2, 5)) < 0.5), T(randn(2, 5)), Same(1)], tags=["aliasing"])
case(LA, "matmul/leaf_times_its_transpose", "matmul", torch.matmul, [T(randn(3, 4)), Same(0, transpose=(0, 1))], tol="reduction", tags=["aliasing", "view"])
case(SH, "concat/same_leaf_twice", "concat", lambda *xs: torch.cat(xs, 0), [T(randn(2, 3)), Same(0)],
     attrs={"axis": 0}, tol="exact", tags=["aliasing"])
case(NN, "scaledDotProductAttention/self_attention_same_leaf", "scaledDotProductAttention", torch_sdpa(True), [T(randn(2, 4, 3)), Same(0), Same(0)],
     attrs={"causal": True}, tol="reduction", tags=["aliasing"])

# cumsum (appended last: cases above keep their random inputs)


def torch_cumsum(axis, reverse=False):
    if not reverse:
        return lambda x: torch.cumsum(x, dim=axis)
    return lambda x: torch.flip(torch.cumsum(torch.flip(x, [axis]), dim=axis), [axis])


case(RD, "cumsum/axis0", "cumsum", torch_cumsum(0), [T(randn(4, 3))], attrs={"axis": 0}, tol="reduction")
case(RD, "cumsum/last_axis_long", "cumsum", torch_cumsum(-1), [T(randn(2, 300))], attrs={"axis": -1}, tol="reduction")
case(RD, "cumsum/middle_axis_3d", "cumsum", torch_cumsum(1), [T(randn(2, 5, 3))], attrs={"axis": 1}, tol="reduction")
case(RD, "cumsum/reverse", "cumsum", torch_cumsum(1, True), [T(randn(3, 6))], attrs={"axis": 1, "reverse": True}, tol="reduction")
case(RD, "cumsum/transposed", "cumsum", torch_cumsum(1), [T(randn(5, 4), transpose=(0, 1))], attrs={"axis": 1}, tol="reduction", tags=["view"])
case(RD, "cumsum/empty_axis", "cumsum", torch_cumsum(1), [T(randn(3, 0))], attrs={"axis": 1}, tol="reduction", tags=["empty"])
case(RD, "cumsum/scalar", "cumsum", torch_cumsum(0), [T(randn())], attrs={"axis": 0}, tol="reduction", tags=["scalar"])
case(RD, "cumsum/large_cancelling", "cumsum", torch_cumsum(0), [T(arr([1e7, 1, -1e7, 0.5, 3e7, -3e7, 0.25]))], attrs={"axis": 0},
     tol="reduction", tags=["large"], gradcheck=False, why="huge magnitudes")

# ----------------------------------------------------------------------------------------------


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {
        "format": 1,
        "generator": "scripts/gen_goldens.py",
        "command": COMMAND,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "seed": SEED,
    }
    total = 0
    for family, cases in FAMILIES.items():
        head = json.dumps({**meta, "family": family}, allow_nan=False)[:-1]
        body = ",\n".join(json.dumps(c, allow_nan=False, separators=(",", ":")) for c in cases)
        text = head + ', "cases": [\n' + body + "\n]}\n"
        path = os.path.join(OUT, f"{family}.json")
        with open(path, "w") as f:
            f.write(text)
        total += len(text)
        print(f"{path}: {len(cases)} cases, {len(text) / 1024:.1f} KiB", file=sys.stderr)
    print(f"total {sum(len(c) for c in FAMILIES.values())} cases, {total / 1024:.1f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
