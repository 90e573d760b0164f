#!/usr/bin/python3
"""The PyTorch twin of a `knobs tune` LoRA run: plain torch 1.13 (no PEFT) applying PEFT's LoRA
rules to bench/torch_train.py's model, started from knobs' own initial adapter and fed knobs'
own batches, so the two runs differ only in arithmetic. A full fine-tune (`trainable: ["**"]`,
INPUTS without an adapter) is twinned the same way: every parameter of the base trains.

    node scripts/lora_twin_inputs.mjs TUNE_DIR INPUTS        # knobs' initial adapter + batch offsets
    /usr/bin/python3 bench/lora_twin.py TUNE_DIR INPUTS [--out DIR] [--threads N] [--max-rel 0.02]

TUNE_DIR is the knobs LoRA run (tune.json names the base run directory and the recipe). The
base's weights come from BASE/model.safetensors (knobs' names: bench/check_twin.py reads them),
the initial lora_A / lora_B from INPUTS/adapter_model.safetensors, the r and lora_alpha from
INPUTS/adapter_config.json (both absent for a full fine-tune), the windows of each step from
INPUTS/batches.json.

PEFT's rules (huggingface/peft 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40,
src/peft/tuners/lora/layer.py, Linear.forward / update_layer): the output is
base(x) + lora_B(lora_A(dropout(x))) * scaling with scaling = lora_alpha / r (or / sqrt(r) with
use_rslora); a GPT-2 Conv1D target (fan_in_fan_out) keeps lora_A [r, in] and lora_B [out, r] like
a Linear; the base is frozen. Dropout must be 0 (the twin draws no masks).
The rest of the step is torch_train.py's: AdamW (decoupled decay on rank >= 2), warm-up + cosine,
clip_grad_norm_ over what trains, one batch per step. At the recipe's eval steps the twin
evaluates as torch_train.py does, and at the end compares its last validation loss with knobs'
(the last eval row of TUNE_DIR/metrics.jsonl). Exit 0 when |torch - knobs| / knobs <= --max-rel.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train as tt  # noqa: E402
from check_twin import read_safetensors  # noqa: E402

PEFT_PREFIX = 'base_model.model.'


class LoraWrap(nn.Module):
    """One LoRA target: the frozen base layer (nn.Linear or torch_train's Conv1D) plus B·A·scaling."""

    def __init__(self, base, lora_a, lora_b, scaling):
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(lora_a.clone())  # [r, in]
        self.lora_B = nn.Parameter(lora_b.clone())  # [out, r]
        self.scaling = scaling

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling


def torch_path(hf_path, model_type):
    """The module path in torch_train.py's model for a Hugging Face causal-LM path (GPT-2 drops `transformer.`)."""
    if model_type == 'gpt' and hf_path.startswith('transformer.'):
        return hf_path[len('transformer.'):]
    return hf_path


def attach_lora(model, model_type, adapter, config):
    """Wraps every module the adapter names; returns the LoRA parameters."""
    r, alpha = config['r'], config['lora_alpha']
    if config.get('rank_pattern') or config.get('alpha_pattern'):
        raise SystemExit('lora_twin: rank_pattern / alpha_pattern are not handled here')
    if config.get('lora_dropout', 0) != 0:
        raise SystemExit('lora_twin: lora_dropout must be 0 (the twin draws no dropout masks)')
    scaling = alpha / math.sqrt(r) if config.get('use_rslora') else alpha / r
    modules = sorted({k[len(PEFT_PREFIX):].rsplit('.lora_', 1)[0] for k in adapter})
    params = []
    for hf in modules:
        path = torch_path(hf, model_type)
        parent_path, _, child = path.rpartition('.')
        parent = model.get_submodule(parent_path)
        wrap = LoraWrap(getattr(parent, child), adapter[f'{PEFT_PREFIX}{hf}.lora_A.weight'],
                        adapter[f'{PEFT_PREFIX}{hf}.lora_B.weight'], scaling)
        setattr(parent, child, wrap)
        params += [wrap.lora_A, wrap.lora_B]
    return modules, params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('tune_dir')
    ap.add_argument('inputs')
    ap.add_argument('--out', help='directory for metrics.jsonl and summary.json')
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--max-rel', type=float, default=0.02)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    with open(os.path.join(a.tune_dir, 'tune.json')) as f:
        tune = json.load(f)
    with open(os.path.join(tune['base'], 'recipe.json')) as f:
        base_recipe = json.load(f)
    # The train recipe the tune amounts to; max_nonfinite_steps only matters to a run that meets a NaN.
    fields = {k: v for k, v in tune['recipe'].items() if k not in ('lora', 'trainable', 'frozen', 'max_nonfinite_steps')}
    if fields.pop('precision', 'f32') != 'f32':
        raise SystemExit('lora_twin: the twin runs f32 recipes only')
    r = tt.fill_defaults({**fields, 'model': base_recipe['model']})
    model = tt.build_model(r)
    missing, unexpected = model.load_state_dict(read_safetensors(os.path.join(tune['base'], 'model.safetensors')), strict=False)
    if missing or unexpected:
        raise SystemExit(f'lora_twin: names differ: missing {missing}, unexpected {unexpected}')
    # The run's recipe decides what trains; INPUTS must agree (a reused folder may hold an older run's adapter).
    config_path = os.path.join(a.inputs, 'adapter_config.json')
    if 'lora' in tune['recipe']:
        if not os.path.exists(config_path):
            raise SystemExit(f'lora_twin: a LoRA run, but {a.inputs} holds no adapter_config.json')
        for p in model.parameters():
            p.requires_grad_(False)
        with open(config_path) as f:
            config = json.load(f)
        modules, params = attach_lora(model, r['model']['type'], read_safetensors(os.path.join(a.inputs, 'adapter_model.safetensors')), config)
    elif tune['recipe'].get('trainable') == ['**'] and not tune['recipe'].get('frozen'):
        if os.path.exists(config_path):
            raise SystemExit(f'lora_twin: a full fine-tune, but {a.inputs} holds an adapter (another run\'s inputs?)')
        modules, params = [], list(model.parameters())  # a full fine-tune: everything trains
    else:
        raise SystemExit('lora_twin: the run is neither LoRA nor a full fine-tune (trainable ["**"], nothing frozen)')
    with open(os.path.join(a.inputs, 'batches.json')) as f:
        batches = json.load(f)
    if batches['batch_size'] != r['batch_size'] or batches['context'] != r['context']:
        raise SystemExit('lora_twin: batches.json does not match the recipe')

    data = tt.TextData(r, 0)  # the split and the evaluation; training windows come from batches.json
    opt = tt.build_optimizer(r, model)  # frozen parameters get no gradient, so AdamW skips them
    total = r['steps']
    if total != len(batches['offsets']):
        raise SystemExit(f'lora_twin: {len(batches["offsets"])} batches for {total} steps')
    sched = tt.build_schedule(r, total)
    rows = []
    started = time.perf_counter()
    model.train()
    for step in range(1, total + 1):
        lr = sched(step - 1)
        for g in opt.param_groups:
            g['lr'] = lr
        opt.zero_grad(set_to_none=True)
        x, y = data.windows(torch.tensor(batches['offsets'][step - 1], dtype=torch.int64))
        loss = tt.model_loss(model, True, x, y)
        loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(params, r['clip_grad_norm'])) if r.get('clip_grad_norm') else None
        opt.step()
        if step % r['log_every'] == 0 or step == total:
            rows.append({'step': step, 'loss': loss.item(), 'lr': lr, 'grad_norm': gn, 'elapsed_s': time.perf_counter() - started})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if (r.get('eval_every') and step % r['eval_every'] == 0) or step == total:
            model.eval()
            res = data.evaluate(model, r)
            model.train()
            rows.append({'step': step, 'eval_loss': res['eval_loss'], 'bits_per_byte': res['bits_per_byte'],
                         'elapsed_s': time.perf_counter() - started})

    with open(os.path.join(a.tune_dir, 'metrics.jsonl')) as f:
        knobs_rows = [json.loads(line) for line in f if line.strip()]
    knobs_eval = [k for k in knobs_rows if 'eval_loss' in k][-1]
    torch_eval = [t for t in rows if 'eval_loss' in t][-1]
    rel = (torch_eval['eval_loss'] - knobs_eval['eval_loss']) / knobs_eval['eval_loss']
    summary = {
        'recipe': tune['recipe'].get('name'), 'base': tune['base'], 'steps': total, 'lora_modules': modules,
        'trainable': sum(p.numel() for p in params),
        'knobs_eval_loss': knobs_eval['eval_loss'], 'torch_eval_loss': torch_eval['eval_loss'], 'rel_diff': rel,
        'max_rel': a.max_rel, 'ok': abs(rel) <= a.max_rel, 'final': torch_eval, 'evals': [t for t in rows if 'eval_loss' in t],
        'wall_s': round(time.perf_counter() - started, 1), 'peer': f'torch {torch.__version__}', 'threads': torch.get_num_threads(),
    }
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, 'metrics.jsonl'), 'w') as f:
            f.writelines(json.dumps(row) + '\n' for row in rows)
        with open(os.path.join(a.out, 'summary.json'), 'w') as f:
            json.dump(summary, f, indent=2)
            f.write('\n')
    print(json.dumps(summary))
    return 0 if summary['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
