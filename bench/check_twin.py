#!/usr/bin/python3
"""Checks that bench/torch_train.py builds the same model and evaluates it the same way as knobs:
loads a knobs run directory's weights (model.safetensors, knobs' names) into the torch twin, runs
the twin's evaluation, and compares it with the knobs run's last evaluation row.

    /usr/bin/python3 bench/check_twin.py RUN_DIR [--data PATH] [--tol 1e-4]

Use a short run, e.g. `knobs train recipes/fashion-mlp.json --steps 30 --out /tmp/k`: the last
evaluation is at the last step, with the weights model.safetensors holds. Exit 0 when the loss
agrees within --tol (relative) and the accuracy exactly; 1 otherwise.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train as tt  # noqa: E402

DTYPES = {'F32': np.float32, 'F64': np.float64, 'F16': np.float16}


def read_safetensors(path):
    with open(path, 'rb') as f:
        raw = f.read()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] not in DTYPES:
            raise SystemExit(f'{path}: {name} has dtype {info["dtype"]}, not supported here')
        a, b = info['data_offsets']
        arr = np.frombuffer(raw[base + a: base + b], dtype=DTYPES[info['dtype']]).reshape(info['shape'])
        out[name] = torch.from_numpy(arr.astype(np.float32))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('run')
    ap.add_argument('--data')
    ap.add_argument('--tol', type=float, default=1e-4)
    a = ap.parse_args(argv)
    with open(os.path.join(a.run, 'recipe.json')) as f:
        r = tt.fill_defaults(json.load(f))
    r['data'] = tt.with_data_path(r['data'], a.data)
    rows = [json.loads(line) for line in open(os.path.join(a.run, 'metrics.jsonl')) if line.strip()]
    last_eval = [row for row in rows if 'eval_loss' in row][-1]
    torch.set_num_threads(1)
    model = tt.build_model(r)
    state = read_safetensors(os.path.join(a.run, 'model.safetensors'))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        print(f'names differ: missing in knobs {missing}, unexpected {unexpected}', file=sys.stderr)
        return 1
    model.eval()
    data = (tt.TextData if r['model']['type'] in tt.LANGUAGE_MODELS else tt.ImageData)(r, 0)
    res = data.evaluate(model, r)
    rel = abs(res['eval_loss'] - last_eval['eval_loss']) / abs(last_eval['eval_loss'])
    ok = rel <= a.tol
    line = {'step': last_eval['step'], 'knobs_eval_loss': last_eval['eval_loss'], 'torch_eval_loss': res['eval_loss'], 'rel_diff': rel}
    if 'accuracy' in last_eval:
        line.update({'knobs_accuracy': last_eval['accuracy'], 'torch_accuracy': res['accuracy']})
        ok = ok and last_eval['accuracy'] == res['accuracy']
    line['ok'] = ok
    print(json.dumps(line))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
