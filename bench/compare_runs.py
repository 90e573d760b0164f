#!/usr/bin/env python3
"""Compares a knobs training run with PyTorch reference results (bench/torch_train.py).

    python3 bench/compare_runs.py KNOBS_RUN... --torch TORCH_RESULTS [--json]
        [--min-accuracy A] [--max-accuracy-gap POINTS] [--max-loss-rel GAP]

KNOBS_RUN: a knobs run directory (its metrics.jsonl and recipe.json) or a metrics.jsonl file.
Give several (e.g. seeds 1, 2, 3) to compare their mean with the torch mean.
TORCH_RESULTS: a torch_train.py summary JSON, a JSON list of them, a JSONL file of them
(bench/results/*.jsonl), a torch run directory (summary.json) or a torch metrics.jsonl.

Classifiers (eval rows with "accuracy"): every knobs run's final accuracy must be at least the
threshold (default: 0.89 for fashion-mlp, 0.92 for fashion-cnn, else none), and the mean of the
knobs runs' final accuracies may be at most --max-accuracy-gap points (default 0.5) below the mean
of the torch runs'. Language models (eval rows with "bits_per_byte"): at every step both sides
evaluated, knobs' validation loss may be at most --max-loss-rel (default 0.02 = 2 %) above torch's
(relative to torch's). Being better than torch never fails.

Standard library only, so it runs under any python3. Exit 0 when everything is inside the
bounds, 1 when something is outside, 2 on a usage or input error.
"""
import argparse
import json
import os
import sys

THRESHOLDS = {'fashion-mlp': 0.89, 'fashion-cnn': 0.92}


def die(message):
    print(f'compare_runs: {message}', file=sys.stderr)
    sys.exit(2)


def read_jsonl(path):
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    die(f'{path}:{i}: not JSON ({e})')
    return rows


def eval_rows(rows):
    return [r for r in rows if 'eval_loss' in r]


def load_knobs(path):
    """(name, seed, eval rows) of a knobs run directory or metrics.jsonl."""
    d = path if os.path.isdir(path) else os.path.dirname(path)
    metrics = os.path.join(path, 'metrics.jsonl') if os.path.isdir(path) else path
    if not os.path.exists(metrics):
        die(f'{metrics} does not exist')
    name, seed = None, None
    recipe = os.path.join(d, 'recipe.json')
    if os.path.exists(recipe):
        with open(recipe) as f:
            r = json.load(f)
        name, seed = r.get('name'), r.get('seed')
    rows = eval_rows(read_jsonl(metrics))
    if not rows:
        die(f'{metrics} has no evaluation rows (is the run finished?)')
    return {'path': path, 'name': name, 'seed': seed, 'evals': rows}


def load_torch(path):
    """A list of {'name','seed','evals'} from any of the torch result shapes."""
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, 'summary.json')):
            path = os.path.join(path, 'summary.json')
        else:
            path = os.path.join(path, 'metrics.jsonl')
    if not os.path.exists(path):
        die(f'{path} does not exist')
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        items = read_jsonl(path)
    if items and all('eval_loss' in r or 'loss' in r for r in items) and not any('evals' in r for r in items):
        # a torch metrics.jsonl
        return [{'name': None, 'seed': None, 'evals': eval_rows(items)}]
    runs = []
    for s in items:
        if 'evals' not in s:
            die(f'{path}: an entry has no "evals" (expected torch_train.py summaries)')
        runs.append({'name': s.get('recipe'), 'seed': s.get('seed'), 'evals': s['evals'], 'wall_s': s.get('wall_s')})
    if not runs:
        die(f'{path}: no torch results')
    return runs


def mean(xs):
    return sum(xs) / len(xs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('knobs', nargs='+', help='knobs run directories (or metrics.jsonl files)')
    ap.add_argument('--torch', required=True, help='torch results (summary JSON / JSONL / run dir)')
    ap.add_argument('--min-accuracy', type=float, help='final accuracy every knobs run must reach (default by recipe name)')
    ap.add_argument('--max-accuracy-gap', type=float, default=0.5, help='points knobs may trail torch (default 0.5)')
    ap.add_argument('--max-loss-rel', type=float, default=0.02, help='relative val-loss excess allowed (default 0.02)')
    ap.add_argument('--json', action='store_true', help='print the comparison as JSON')
    a = ap.parse_args(argv)

    knobs = [load_knobs(p) for p in a.knobs]
    torch = load_torch(a.torch)
    names = {k['name'] for k in knobs if k['name']} | {t['name'] for t in torch if t['name']}
    if len(names) > 1:
        print(f'compare_runs: warning: comparing different recipes {sorted(names)}', file=sys.stderr)
    name = next(iter(names)) if names else None
    failures = []
    report = {'recipe': name, 'knobs_runs': len(knobs), 'torch_runs': len(torch)}
    lines = []
    is_classifier = 'accuracy' in knobs[0]['evals'][-1]

    if is_classifier:
        threshold = a.min_accuracy if a.min_accuracy is not None else THRESHOLDS.get(name)
        k_acc = [k['evals'][-1]['accuracy'] for k in knobs]
        t_acc = [t['evals'][-1]['accuracy'] for t in torch]
        if any('accuracy' not in t['evals'][-1] for t in torch):
            die('the torch results are not a classifier run')
        k_steps = {k['evals'][-1]['step'] for k in knobs}
        t_steps = {t['evals'][-1]['step'] for t in torch}
        if k_steps != t_steps:
            print(f'compare_runs: warning: final steps differ (knobs {sorted(k_steps)}, torch {sorted(t_steps)})', file=sys.stderr)
        lines.append(f'{name or "classifier"}: final test accuracy')
        for k in knobs:
            acc = k['evals'][-1]['accuracy']
            ok = threshold is None or acc >= threshold
            lines.append(f'  knobs seed {k["seed"]}: {acc:.4f}  (step {k["evals"][-1]["step"]}, {k["path"]})' + ('' if ok else f'  BELOW {threshold}'))
            if not ok:
                failures.append(f'knobs seed {k["seed"]} accuracy {acc:.4f} < {threshold}')
        for t in torch:
            lines.append(f'  torch seed {t["seed"]}: {t["evals"][-1]["accuracy"]:.4f}  (step {t["evals"][-1]["step"]})')
        gap = (mean(k_acc) - mean(t_acc)) * 100
        lines.append(f'  mean: knobs {mean(k_acc):.4f}, torch {mean(t_acc):.4f}, diff {gap:+.2f} points (bound: ≥ −{a.max_accuracy_gap})')
        if gap < -a.max_accuracy_gap:
            failures.append(f'knobs trails torch by {-gap:.2f} points (> {a.max_accuracy_gap})')
        report.update({'threshold': threshold, 'knobs_accuracy': k_acc, 'torch_accuracy': t_acc,
                       'knobs_mean': mean(k_acc), 'torch_mean': mean(t_acc), 'diff_points': gap})
    else:
        def by_step(runs):
            steps = {}
            for r in runs:
                for e in r['evals']:
                    steps.setdefault(e['step'], []).append(e['eval_loss'])
            return {s: mean(v) for s, v in steps.items()}

        kb, tb = by_step(knobs), by_step(torch)
        common = sorted(set(kb) & set(tb))
        if not common:
            die(f'no step evaluated on both sides (knobs {sorted(kb)}, torch {sorted(tb)})')
        lines.append(f'{name or "language model"}: validation loss (nats/byte) at equal steps')
        rows = []
        for s in common:
            rel = (kb[s] - tb[s]) / tb[s]
            ok = rel <= a.max_loss_rel
            lines.append(f'  step {s:>6}: knobs {kb[s]:.4f}  torch {tb[s]:.4f}  diff {rel * 100:+.2f}%' + ('' if ok else f'  OUTSIDE +{a.max_loss_rel * 100:g}%'))
            if not ok:
                failures.append(f'step {s}: knobs {kb[s]:.4f} is {rel * 100:.2f}% above torch {tb[s]:.4f}')
            rows.append({'step': s, 'knobs': kb[s], 'torch': tb[s], 'rel_diff': rel})
        report['steps'] = rows

    report['failures'] = failures
    report['ok'] = not failures
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print('\n'.join(lines))
        print('OK: within bounds' if not failures else 'FAIL: ' + '; '.join(failures))
    return 0 if not failures else 1


if __name__ == '__main__':
    sys.exit(main())
