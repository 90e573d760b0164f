"""Writes LoRA adapters in PEFT's exact layout onto the tiny Hugging Face fixtures, with the logits
torch computes for base + adapter (test/fixtures/lora/<case>/).

Run: /usr/bin/python3 scripts/gen_lora_fixtures.py   (torch 1.13; PEFT is not installed, so its
rules are applied here in plain torch and Python's own `re`, independently of knobs' code.)
With --verify it checks the other direction instead: the adapters knobs trained and wrote
(test/fixtures/lora-knobs/, from scripts/gen_knobs_lora.mjs) applied here by PEFT's rules must
give knobs' logits; the result goes to test/fixtures/lora-knobs/verified.json.

PEFT's rules, from huggingface/peft at commit 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40:
  target matching   src/peft/tuners/tuners_utils.py check_target_module_exists: a list matches a
                    module whose full name equals an entry or ends with "." + entry; a string is
                    matched with re.fullmatch (src/peft/utils/other.py match_target_against_key).
  rank/alpha        src/peft/tuners/lora/model.py _create_and_replace + other.py get_pattern_key:
                    the first key k with re.match(rf"(.*\\.)?({k})$", name) gives r / alpha.
  scaling           src/peft/tuners/lora/layer.py update_layer: alpha / r (alpha / sqrt(r) with use_rslora).
  forward           layer.py Linear.forward: base(x) + lora_B(lora_A(dropout(x))) * scaling; for a
                    Conv1D (fan_in_fan_out) the delta is transpose(B @ A) (layer.py get_delta_weight).
  keys              src/peft/utils/save_and_load.py get_peft_model_state_dict:
                    base_model.model.<module path>.lora_{A,B}.weight, module paths of the
                    transformers causal-LM class (GPT2LMHeadModel: transformer.h.0.attn.c_attn).
  config            src/peft/tuners/lora/config.py LoraConfig.to_dict() (asdict minus runtime_config),
                    written with json.dumps(indent=2, sort_keys=True) (src/peft/config.py).
  metadata          src/peft/peft_model.py save_pretrained: safetensors metadata {"format": "pt"}.
  modules_to_save   src/peft/utils/other.py _set_trainable: every module whose name ends with an entry
                    (plain str.endswith) is trained whole and saved under its own parameter names
                    (ModulesToSaveWrapper.adapter_state_dict); LoRA skips a module matching
                    re.match(rf"(^|.*\.){m}($|\..*)") (tuners_utils.py check_target_module_exists).
  bias              tuners_utils.py _get_learnable_bias_state_dict: "all" saves every parameter named
                    bias, "lora_only" those of the targeted layers; a targeted layer's bias is its base
                    layer's, saved as <module>.base_layer.bias. With "all", a bias inside a module to save
                    is also picked from the wrapper's children: <module>.original_module.<path> (the
                    base's) and <module>.modules_to_save.default.<path> with the adapter name removed
                    (tuners_utils.py _remove_adapter_name_from_state_dict_key; the copy's).

The reference runs in float64 from the stored weights: the adapter's delta is added to the base
weight (W + scaling·BA equals the unmerged forward up to float64 rounding) and the architecture's
logits come from scripts/gen_hf_fixtures.py. A case's seed is the first whose top-2 margin is
>= MIN_MARGIN at every greedy step and whose greedy tokens differ from the base's.
"""
import json
import math
import os
import platform
import re
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_hf_fixtures as hf  # noqa: E402

HF = os.path.join(HERE, "..", "test", "fixtures", "hf")
OUT = os.path.join(HERE, "..", "test", "fixtures", "lora")
PEFT_COMMIT = "5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40"
PEFT_VERSION = "0.20.1.dev0"  # src/peft/__init__.py at that commit
MIN_MARGIN = 1e-2
FROM_ST = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

# LoraConfig.to_dict() at PEFT_COMMIT: PeftConfigMixin, PeftConfig, LoraConfig fields and defaults.
CONFIG_DEFAULTS = {
    "task_type": None, "peft_type": "LORA", "auto_mapping": None, "peft_version": PEFT_VERSION,
    "base_model_name_or_path": None, "revision": None, "inference_mode": False,
    "r": 8, "target_modules": None, "exclude_modules": None, "lora_alpha": 8, "lora_dropout": 0.0,
    "fan_in_fan_out": False, "bias": "none", "use_rslora": False, "modules_to_save": None,
    "init_lora_weights": True, "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
    "alpha_pattern": {}, "megatron_config": None, "megatron_core": "megatron.core",
    "trainable_token_indices": None, "loftq_config": {}, "eva_config": None, "corda_config": None,
    "lora_ga_config": None, "use_dora": False, "velora_config": None, "alora_invocation_tokens": None,
    "use_qalora": False, "qalora_group_size": 16, "monteclora_config": None, "layer_replication": None,
    "lora_bias": False, "target_parameters": None, "use_bdlora": None, "arrow_config": None,
    "kasa_config": None, "ensure_weight_tying": False,
}

CASES = [
    # GPT-2 Conv1D: "c_proj" selects both attn.c_proj and mlp.c_proj; rsLoRA scaling.
    ("gpt2-conv1d", "gpt2-tiny", 11, {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn", "c_proj"],
                                      "fan_in_fan_out": True, "use_rslora": True, "lora_dropout": 0.05}),
    # Llama with GQA (k/v heads 2, q heads 4), PEFT's default targets for llama.
    ("llama-gqa-qv", "llama-gqa-bf16-llama3", 21, {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}),
    # A regex target with rank_pattern / alpha_pattern.
    ("llama-regex-rank-pattern", "llama-gqa-bf16-llama3", 31, {
        "r": 4, "lora_alpha": 8,
        "target_modules": r"model\.layers\.\d+\.(self_attn\.(q|k|v)_proj|mlp\.down_proj)",
        "rank_pattern": {"k_proj": 2, "layers.1.mlp.down_proj": 6}, "alpha_pattern": {"down_proj": 3}}),
    # modules_to_save (ln_f trained whole) and the targeted layers' biases (bias "lora_only").
    # With bias "all" ln_f's bias is saved three times (see "bias" above).
    ("gpt2-saved-ln-f-all-bias", "gpt2-tiny", 41, {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"],
                                                    "fan_in_fan_out": True, "modules_to_save": ["ln_f"],
                                                    "bias": "all"}),
    # "norm" ends every norm's name (model.norm, input_layernorm, post_attention_layernorm): all three are
    # saved; bias "lora_only" saves the targeted q and v's biases, under base_layer.
    ("qwen2-saved-norms-lora-bias", "qwen2-bias-tied", 51, {"r": 4, "lora_alpha": 8,
                                                            "target_modules": ["q_proj", "v_proj"],
                                                            "modules_to_save": ["norm"], "bias": "lora_only"}),
]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        raw = bytearray(data[8 + n + a:8 + n + b])
        dt = FROM_ST[e["dtype"]]
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            t = torch.frombuffer(raw, dtype=dt)
        out[name] = t.reshape(e["shape"]).clone()
    return out


def linear_modules(cfg):
    """(module path in the causal-LM class, in, out, is Conv1D) for every Linear/Conv1D but lm_head."""
    if cfg["model_type"] == "gpt2":
        C, F = cfg["n_embd"], cfg.get("n_inner") or 4 * cfg["n_embd"]
        per = [("attn.c_attn", C, 3 * C), ("attn.c_proj", C, C), ("mlp.c_fc", C, F), ("mlp.c_proj", F, C)]
        return [(f"transformer.h.{i}.{n}", a, b, True) for i in range(cfg["n_layer"]) for n, a, b in per]
    Hd, H, KV, I = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["intermediate_size"]
    D = Hd // H
    per = [("self_attn.q_proj", Hd, H * D), ("self_attn.k_proj", Hd, KV * D), ("self_attn.v_proj", Hd, KV * D),
           ("self_attn.o_proj", H * D, Hd), ("mlp.gate_proj", Hd, I), ("mlp.up_proj", Hd, I), ("mlp.down_proj", I, Hd)]
    return [(f"model.layers.{i}.{n}", a, b, False) for i in range(cfg["num_hidden_layers"]) for n, a, b in per]


def is_target(conf, key):
    if any(re.match(rf"(^|.*\.){m}($|\..*)", key) for m in conf.get("modules_to_save") or []):
        return False
    targets = conf["target_modules"]
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    if key in targets:
        return True
    if not any(key.endswith(f".{t}") for t in targets):
        return False
    layers = conf.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    m = re.match(r".*?\.[^.]*\.(\d+)\.", key)  # layers_pattern unset: the first numbered segment
    return m is not None and (int(m.group(1)) == layers if isinstance(layers, int) else int(m.group(1)) in layers)


def pattern_value(patterns, key, default):
    for k in patterns:
        if re.match(rf"(.*\.)?({k})$", key):
            return patterns[k]
    return default


def knobs_name(cfg, path):
    """The base fixture's tensor name for a module path (gpt2-tiny has no transformer. prefix)."""
    return path[len("transformer."):] if cfg["model_type"] == "gpt2" else path


def hf_name(cfg, name):
    """A base fixture's tensor name as the causal-LM class names it (inverse of knobs_name)."""
    return "transformer." + name if cfg["model_type"] == "gpt2" else name


def without_adapter_name(key):
    """tuners_utils.py _remove_adapter_name_from_state_dict_key for the adapter name "default"."""
    if key.endswith(".default"):
        return key[: -len(".default")]
    head, _, suffix = key.rpartition(".")
    return re.sub(r"\.default$", "", head) + "." + suffix


def saved_tensors(cfg, ref, conf, targets):
    """({PEFT key (no base_model.model.): base tensor name}, {second key: (key, "original" | "copy")})
    for modules_to_save and bias, by PEFT's rules."""
    names = {hf_name(cfg, n): n for n in ref}
    modules = {n.rsplit(".", i)[0] for n in names for i in range(1, n.count(".") + 1)}
    out, aliases = {}, {}
    for m in sorted(modules):
        if any(m.endswith(e) for e in conf.get("modules_to_save") or []):
            out.update({n: names[n] for n in names if n.startswith(m + ".")})
            if conf.get("bias") == "all":
                for n in names:
                    rel = n[len(m) + 1:]
                    if n.startswith(m + ".") and n.endswith(".bias"):
                        aliases[f"{m}.original_module.{rel}"] = (n, "original")
                        aliases[without_adapter_name(f"{m}.modules_to_save.default.{rel}")] = (n, "copy")
    bias = conf.get("bias", "none")
    if bias != "none":
        for n in names:
            module, _, local = n.rpartition(".")
            if local != "bias" or n in out or (bias == "lora_only" and module not in targets):
                continue
            out[f"{module}.base_layer.bias" if module in targets else n] = names[n]
    return out, aliases


def load_base(base):
    cfg = json.load(open(os.path.join(HF, base, "config.json")))
    stored = read_safetensors(os.path.join(HF, base, "model.safetensors"))
    ref = {n: t.to(torch.float64) for n, t in stored.items()}
    logits_of = (lambda w: lambda ids: hf.gpt2_logits(w, cfg, ids)) if cfg["model_type"] == "gpt2" else (lambda w: lambda ids: hf.llama_logits(w, cfg, ids))
    return cfg, ref, logits_of


def scaling_of(conf, path):
    r = pattern_value(conf["rank_pattern"], path, conf["r"])
    alpha = pattern_value(conf["alpha_pattern"], path, conf["lora_alpha"])
    return r, (alpha / math.sqrt(r) if conf["use_rslora"] else alpha / r)


def build(name, base, seed0, lcfg):
    cfg, ref, logits_of = load_base(base)
    eos = cfg["eos_token_id"]
    eos = set(eos if isinstance(eos, list) else [eos])
    base_tokens, _ = hf.greedy(logits_of(ref), hf.PROMPT, eos)
    conf = dict(CONFIG_DEFAULTS, task_type="CAUSAL_LM", base_model_name_or_path=f"test/fixtures/hf/{base}", **lcfg)
    targets = [m for m in linear_modules(cfg) if is_target(conf, m[0])]
    assert targets, name
    for seed in range(seed0, seed0 + 200):
        g = torch.Generator().manual_seed(seed)
        tensors, merged = {}, dict(ref)
        for path, fin, fout, conv1d in targets:
            r, scaling = scaling_of(conf, path)
            bound = 1 / math.sqrt(fin)  # kaiming_uniform(a=sqrt(5)) bound for lora_A
            A = (torch.rand(r, fin, generator=g) * 2 - 1) * bound
            B = torch.randn(fout, r, generator=g) * 0.3  # a trained adapter: B is no longer zero
            tensors[f"base_model.model.{path}.lora_A.weight"] = A
            tensors[f"base_model.model.{path}.lora_B.weight"] = B
            delta = (B.to(torch.float64) @ A.to(torch.float64)) * scaling
            w = knobs_name(cfg, path) + ".weight"
            merged[w] = merged[w] + (delta.T if conv1d else delta)
        saved, aliases = saved_tensors(cfg, ref, conf, {t[0] for t in targets})
        for key, name in sorted(saved.items()):  # a trained copy of each: the base's values moved
            value = ref[name].to(torch.float32) + torch.randn(ref[name].shape, generator=g) * 0.2
            tensors[f"base_model.model.{key}"] = value
            merged[name] = value.to(torch.float64)
        for key, (of, kind) in aliases.items():
            tensors[f"base_model.model.{key}"] = ref[saved[of]].to(torch.float32) if kind == "original" else tensors[f"base_model.model.{of}"]
        fn = logits_of(merged)
        tokens, margins = hf.greedy(fn, hf.PROMPT, eos)
        if min(margins) < MIN_MARGIN or tokens == base_tokens:
            continue
        return seed, conf, tensors, fn, tokens, margins, [t[0] for t in targets], sorted(saved)
    raise SystemExit(f"{name}: no seed gives a top-2 margin >= {MIN_MARGIN} and tokens unlike the base's")


def verify():
    """The other direction: adapters knobs trained and wrote (scripts/gen_knobs_lora.mjs), applied
    here by PEFT's rules; their keys must be exactly the ones the rules imply, with the config's
    ranks, and the logits must match knobs' (|a - b| <= 1e-4 + 1e-4 |b|)."""
    root = os.path.join(HERE, "..", "test", "fixtures", "lora-knobs")
    report = {}
    for name in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
        d = os.path.join(root, name)
        conf = json.load(open(os.path.join(d, "adapter_config.json")))
        assert set(conf) == set(CONFIG_DEFAULTS), f"{name}: fields {set(conf) ^ set(CONFIG_DEFAULTS)}"
        knobs = json.load(open(os.path.join(d, "knobs_logits.json")))
        cfg, ref, logits_of = load_base(knobs["base"])
        tensors = read_safetensors(os.path.join(d, "adapter_model.safetensors"))
        targets = [m for m in linear_modules(cfg) if is_target(conf, m[0])]
        saved, aliases = saved_tensors(cfg, ref, conf, {t[0] for t in targets})
        wanted = {f"base_model.model.{p}.lora_{x}.weight" for p, *_ in targets for x in "AB"}
        wanted |= {f"base_model.model.{key}" for key in [*saved, *aliases]}
        for key, (of, kind) in aliases.items():
            want = ref[saved[of]].to(torch.float32) if kind == "original" else tensors[f"base_model.model.{of}"]
            assert torch.equal(tensors[f"base_model.model.{key}"], want), f"{name}: {key} is not the {kind}"
        assert set(tensors) == wanted, f"{name}: keys {set(tensors) ^ wanted}"
        merged = dict(ref)
        for key, base_name in saved.items():  # the trained copies replace the base's tensors
            assert tensors[f"base_model.model.{key}"].shape == ref[base_name].shape, f"{name}: {key} shape"
            merged[base_name] = tensors[f"base_model.model.{key}"].to(torch.float64)
        for path, fin, fout, conv1d in targets:
            r, scaling = scaling_of(conf, path)
            A, B = tensors[f"base_model.model.{path}.lora_A.weight"], tensors[f"base_model.model.{path}.lora_B.weight"]
            assert tuple(A.shape) == (r, fin) and tuple(B.shape) == (fout, r), f"{name}: {path} shapes"
            delta = (B.to(torch.float64) @ A.to(torch.float64)) * scaling
            w = knobs_name(cfg, path) + ".weight"
            merged[w] = merged[w] + (delta.T if conv1d else delta)
        ours = logits_of(merged)(knobs["ids"])
        theirs = torch.tensor(knobs["logits"], dtype=torch.float64)
        excess = float(((ours - theirs).abs() - (1e-4 + 1e-4 * theirs.abs())).max())
        worst = float((ours - theirs).abs().max())
        assert excess <= 0, f"{name}: logits differ by up to {worst}"
        report[name] = {"modules": len(targets), **({"saved": len(saved)} if saved else {}),
                        "max_abs_diff": float(f"{worst:.3g}")}
        print(f"{name}: {len(targets)} modules, {len(saved)} saved, max |torch - knobs| = {worst:.3g}")
    hf.write_json(os.path.join(root, "verified.json"), {
        "verifier": "scripts/gen_lora_fixtures.py --verify", "torch_version": torch.__version__,
        "peft_commit": PEFT_COMMIT, "cases": report,
    })


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, base, seed0, lcfg in CASES:
        seed, conf, tensors, fn, tokens, margins, modules, saved = build(name, base, seed0, lcfg)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            f.write(json.dumps(conf, indent=2, sort_keys=True))
        hf.write_safetensors(os.path.join(d, "adapter_model.safetensors"), sorted(tensors.items()), {"format": "pt"})
        full = hf.PROMPT + tokens
        hf.write_json(os.path.join(d, "expected.json"), {
            "base": base, "seed": seed, "modules": modules, **({"saved": saved} if saved else {}),
            "prompt": hf.PROMPT, "greedy": tokens,
            "min_margin": round(min(margins), 6), "logits_ids": full,
            "logits": [[float(f"{v:.7g}") for v in row] for row in fn(full).tolist()],
        })
        print(f"{name}: seed {seed}, {len(modules)} modules, greedy {tokens}, min margin {min(margins):.4f}")
    hf.write_json(os.path.join(OUT, "provenance.json"), {
        "generator": "scripts/gen_lora_fixtures.py", "command": "/usr/bin/python3 scripts/gen_lora_fixtures.py",
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "peft_repository": "huggingface/peft", "peft_commit": PEFT_COMMIT, "reference_dtype": "float64",
        "min_margin": MIN_MARGIN,
    })


if __name__ == "__main__":
    verify() if "--verify" in sys.argv else main()
