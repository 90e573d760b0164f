#!/usr/bin/python3
"""safetensors fixtures for knobs' tests, made with PyTorch; run by hand, outputs committed.

There is no `safetensors` package for Python here, so this script writes and reads the format by
hand, from the spec (huggingface/safetensors):

    u64 little-endian N | N bytes of UTF-8 JSON header, space-padded to a multiple of 8 | data

Two modes:

  /usr/bin/python3 scripts/gen_safetensors_fixtures.py
      Writes test/fixtures/safetensors/:
        torch_basic.safetensors     tensors made by torch, laid out as upstream's writer does
        torch_basic.expected.json   torch's own values for them (.tolist()) and a sha256 per tensor
        knobs_written.recipe.json   the tensors knobs must write into knobs_written.safetensors
        provenance.json             torch/python versions, file hashes, verification records

  /usr/bin/python3 scripts/gen_safetensors_fixtures.py --verify FILE
      Checks a knobs-written FILE independently of knobs: strict layout (length, UTF-8, padding,
      no duplicate keys, upstream tensor order, contiguous offsets, sizes, file end) and every
      tensor's values decoded by torch against knobs_written.recipe.json. On success, records the
      file's sha256 and the torch version under "verified" in provenance.json.

The knobs side: `KNOBS_UPDATE_FIXTURES=1 node --test dist/test/safetensors-interop.test.js`
writes knobs_written.safetensors from the recipe; the test suite then checks (without Python)
that knobs still writes exactly those verified bytes.
"""
import datetime
import hashlib
import json
import math
import os
import platform
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "test", "fixtures", "safetensors")
PROVENANCE = os.path.join(OUT, "provenance.json")
RECIPE = os.path.join(OUT, "knobs_written.recipe.json")

# Upstream's dtype enum order; its writer sorts tensors by this rank, descending, then by name.
DTYPES = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
          "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64",
          "F64", "I64", "U64"]
BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
        "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
        "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
        "U64": 64}
TORCH_OF = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
            "BF16": torch.bfloat16, "I32": torch.int32, "I64": torch.int64, "U8": torch.uint8,
            "I8": torch.int8, "BOOL": torch.bool}
ST_OF = {v: k for k, v in TORCH_OF.items()}
# Same-width integer views, so bytes come out of torch (and go back in) without conversion.
INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}

assert sys.byteorder == "little", "safetensors is little-endian; this script assumes a little-endian host"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tensor_bytes(t):
    flat = t.contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.dtype in INT_VIEW:
        flat = flat.view(INT_VIEW[flat.dtype])
    return flat.numpy().tobytes()


def bytes_to_tensor(data, dtype, shape):
    if len(data) == 0:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.bool).reshape(shape)
    base = INT_VIEW.get(dtype, dtype)
    return torch.frombuffer(bytearray(data), dtype=base).view(dtype).reshape(shape)


def json_value(x):
    """torch's .tolist() value as JSON: i64 as decimal strings (JS numbers lose them), non-finite as names."""
    if isinstance(x, bool):
        return 1 if x else 0
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def flat_values(t):
    return [json_value(v) for v in t.reshape(-1).tolist()]


def write_safetensors(path, named, metadata):
    """named: list of (name, st_dtype, shape, bytes). Upstream layout: sorted, compact, padded."""
    order = sorted(named, key=lambda e: (-DTYPES.index(e[1]), e[0].encode("utf-8")))
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, data in order:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in order:
            f.write(data)


def load_provenance():
    if os.path.exists(PROVENANCE):
        with open(PROVENANCE) as f:
            return json.load(f)
    return {}


def save_provenance(prov):
    with open(PROVENANCE, "w") as f:
        json.dump(prov, f, indent=2, ensure_ascii=False)
        f.write("\n")


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


# ---- generate --------------------------------------------------------------------------------

def torch_tensors():
    torch.manual_seed(20240601)
    return {
        "f32.randn": torch.randn(3, 4),
        "f32.special": torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e-45, 3.4028234663852886e38, 0.1]),
        "f16.randn": torch.randn(2, 3).half(),
        "bf16.randn": torch.randn(5).bfloat16(),
        "f64.values": torch.tensor([math.pi, -1e300], dtype=torch.float64),
        "i64.extremes": torch.tensor([-(2 ** 63), 2 ** 63 - 1, 0, -5, 2 ** 53 + 1], dtype=torch.int64),
        "i32.values": torch.tensor([-(2 ** 31), 2 ** 31 - 1, 7], dtype=torch.int32),
        "u8.values": torch.tensor([0, 1, 128, 255], dtype=torch.uint8),
        "i8.values": torch.tensor([-128, -1, 0, 127], dtype=torch.int8),
        "bool.mask": torch.tensor([[True, False], [False, True]]),
        "empty.f32": torch.empty(0, 3),
        "empty.i64": torch.empty(0, dtype=torch.int64),
        "scalar.f32": torch.tensor(2.5),
        "scalar.bf16": torch.tensor(-0.75).bfloat16(),
        "ünïcode.weight": torch.arange(4, dtype=torch.float32).reshape(2, 2),
    }


RECIPE_DATA = {
    "metadata": {"format": "pt", "producer": "knobs", "note": "ünïcode ✓"},
    "tensors": [
        {"name": "weight", "dtype": "F32", "shape": [2, 3], "values": [0.1, -1.5, 3.0, 1e-20, -0.0, 65504.0]},
        {"name": "bias", "dtype": "F32", "shape": [3], "values": [0.0, 0.25, -7.0]},
        {"name": "half", "dtype": "F16", "shape": [4], "values": [0.5, -2.0, 65504.0, 0.0009765625]},
        {"name": "brain", "dtype": "BF16", "shape": [2, 2], "values": [1.5, -3.25, 256.0, 0.0078125]},
        {"name": "double", "dtype": "F64", "shape": [2], "values": [3.141592653589793, -1e300]},
        {"name": "ids", "dtype": "I64", "shape": [3], "values": ["-9223372036854775808", "9007199254740993", "42"]},
        {"name": "ints", "dtype": "I32", "shape": [2], "values": [-2147483648, 2147483647]},
        {"name": "bytes", "dtype": "U8", "shape": [3], "values": [0, 128, 255]},
        {"name": "signed", "dtype": "I8", "shape": [2], "values": [-128, 127]},
        {"name": "mask", "dtype": "BOOL", "shape": [3], "values": [1, 0, 1]},
        {"name": "empty", "dtype": "F32", "shape": [0, 2], "values": []},
        {"name": "scalar", "dtype": "F32", "shape": [], "values": [9.5]},
        {"name": "fp8", "dtype": "F8_E4M3", "shape": [4], "hex": "00387fb8"},
        {"name": "packed", "dtype": "F4", "shape": [4], "hex": "1f2e"},
    ],
}


def generate():
    os.makedirs(OUT, exist_ok=True)
    tensors = torch_tensors()
    named = [(name, ST_OF[t.dtype], list(t.shape), tensor_bytes(t)) for name, t in tensors.items()]
    path = os.path.join(OUT, "torch_basic.safetensors")
    write_safetensors(path, named, {"format": "pt"})
    expected = {
        "metadata": {"format": "pt"},
        "tensors": {
            name: {"dtype": ST_OF[t.dtype], "shape": list(t.shape), "values": flat_values(t), "sha256": sha256(tensor_bytes(t))}
            for name, t in tensors.items()
        },
    }
    with open(os.path.join(OUT, "torch_basic.expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(RECIPE, "w") as f:
        json.dump(RECIPE_DATA, f, indent=1, ensure_ascii=False)
        f.write("\n")

    prov = load_provenance()
    prov.update({
        "generator": "scripts/gen_safetensors_fixtures.py",
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "generated_at": now(),
    })
    files = prov.setdefault("files", {})
    with open(path, "rb") as f:
        files["torch_basic.safetensors"] = {
            "producer": f"torch {torch.__version__} tensors, safetensors layout written by this script",
            "sha256": sha256(f.read()),
        }
    save_provenance(prov)
    print(f"wrote {path} ({len(named)} tensors) and its expected values; torch {torch.__version__}")


# ---- verify ----------------------------------------------------------------------------------

def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def check(cond, message):
    if not cond:
        raise SystemExit(f"FAIL: {message}")


def parse_strict(data):
    check(len(data) >= 8, "file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    check(n <= 100_000_000 and 8 + n <= len(data), f"bad header length {n}")
    check((8 + n) % 8 == 0, "header not padded to a multiple of 8")
    text = data[8:8 + n].decode("utf-8")
    body = text.rstrip(" ")
    check(len(text) - len(body) < 8, "more than 7 bytes of padding")
    check(body.startswith("{") and body.endswith("}"), "header is not a bare JSON object")
    header = json.loads(body, object_pairs_hook=no_duplicates)
    check(json.dumps(header, separators=(",", ":"), ensure_ascii=False) == body, "header JSON is not compact")
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        check(all(isinstance(v, str) for v in metadata.values()), "metadata values must be strings")
    names = list(header)
    expected_order = sorted(names, key=lambda k: (-DTYPES.index(header[k]["dtype"]), k.encode("utf-8")))
    check(names == expected_order, f"tensors not in upstream order: {names} vs {expected_order}")
    offset = 0
    for name in names:
        info = header[name]
        check(set(info) == {"dtype", "shape", "data_offsets"}, f"{name}: fields {sorted(info)}")
        begin, end = info["data_offsets"]
        check(begin == offset and end >= begin, f"{name}: offsets {begin},{end} expected to begin at {offset}")
        bits = math.prod(info["shape"]) * BITS[info["dtype"]]
        check(bits % 8 == 0 and end - begin == bits // 8, f"{name}: {end - begin} bytes for {info['shape']} {info['dtype']}")
        offset = end
    check(8 + n + offset == len(data), f"file is {len(data)} bytes, tensors end at {8 + n + offset}")
    return metadata, header, 8 + n


def verify(path):
    with open(path, "rb") as f:
        data = f.read()
    metadata, header, start = parse_strict(data)
    with open(RECIPE) as f:
        recipe = json.load(f)
    check(metadata == recipe["metadata"], f"metadata {metadata} != {recipe['metadata']}")
    check(sorted(header) == sorted(t["name"] for t in recipe["tensors"]), "tensor names differ from the recipe")
    for spec in recipe["tensors"]:
        info = header[spec["name"]]
        check(info["dtype"] == spec["dtype"] and info["shape"] == spec["shape"], f"{spec['name']}: dtype/shape")
        begin, end = info["data_offsets"]
        raw = data[start + begin:start + end]
        if "hex" in spec:
            check(raw.hex() == spec["hex"], f"{spec['name']}: bytes {raw.hex()} != {spec['hex']}")
            continue
        dtype = TORCH_OF[spec["dtype"]]
        got = bytes_to_tensor(raw, dtype, spec["shape"])
        values = [int(v) for v in spec["values"]] if dtype == torch.int64 else spec["values"]
        want = torch.tensor(values, dtype=dtype if dtype != torch.bool else torch.uint8).to(dtype).reshape(spec["shape"])
        # Compare bits, so -0.0 and 0.0 differ, as they do in the file.
        check(tensor_bytes(got) == tensor_bytes(want), f"{spec['name']}: torch reads {got.tolist()} != {want.tolist()}")
    prov = load_provenance()
    prov.setdefault("files", {})[os.path.basename(path)] = {
        "producer": "knobs saveSafetensors (KNOBS_UPDATE_FIXTURES=1 node --test dist/test/safetensors-interop.test.js)",
        "sha256": sha256(data),
        "verified_by": "scripts/gen_safetensors_fixtures.py --verify",
        "verified_with_torch": torch.__version__,
        "verified_at": now(),
    }
    save_provenance(prov)
    print(f"OK: {path} is a valid safetensors file; torch {torch.__version__} reads every recipe tensor exactly")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        verify(sys.argv[2])
    elif len(sys.argv) == 1:
        generate()
    else:
        raise SystemExit(__doc__)
