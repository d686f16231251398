"""How much of hard AST's gap to a random subset is BatchNorm (issue 13, "First, separate selection from normalisation").

A hard-threshold AST train pass sees only the hardest ~30 % of a batch. With `ast.bn_stats: subset` (astlab's
behaviour) BatchNorm normalises them with *their own* mean and variance, which are not the data's: the hard samples are
a biased slice, and evaluation later normalises with running statistics of whole batches. `ast.bn_stats: score`
normalises the train pass with the whole batch's statistics, captured in the score pass. A model without BatchNorm
(`resnet_small_gn`, GroupNorm: each sample normalised on its own) has no batch statistics to get wrong at all.

Grid, on digits (configs/digits_ast.yaml: resnet_small, 32 px, batch 64; 8 epochs here), r = 0.3, 3 seeds:
  resnet_small:    ast (bn_stats subset), ast (bn_stats score), random, full
  resnet_small_gn: ast, random, full
`bn_stats` only acts where there is a score pass (ast): random and full have none, so they run once per model. Reports
best and final validation accuracy as mean, std and 95 % t-interval over seeds, and the gap of each AST variant to
random on the same model (Welch 95 %). Accuracy only: timing is not reported, so a busy machine does not matter.

    python benchmarks/bn_artefact.py                       # the committed protocol (21 runs, ~24 CPU-minutes, ~40 min on 2 busy cores)
    python benchmarks/bn_artefact.py --epochs 2 --seeds 0 --out /tmp/bn_artefact   # a smoke run
    for s in 0 1 2; do python benchmarks/bn_artefact.py --seeds $s --out /tmp/bn_s$s & done; wait   # one process per seed,
    python benchmarks/bn_artefact.py --merge /tmp/bn_s0.json /tmp/bn_s1.json /tmp/bn_s2.json         # then merged
"""
import argparse, json, sys, tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from astlab.lab.compare import mean_ci, welch
from astlab.lab.train import versions
from common import git_state, Quiet, train_run

# ---------------------------------------------------------------------------------------------------- Setup
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--epochs', type=int, default=8)           # digits_ast.yaml has 15: 8 keeps the grid under 25 CPU-minutes
ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
ap.add_argument('--rate', type=float, default=0.3)         # target kept fraction of ast and random
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--out', default=str(HERE/'results'/'bn_artefact_digits'))
ap.add_argument('--only', nargs='*', default=None, help="run only these grid labels (e.g. to spread the grid over processes)")
ap.add_argument('--merge', nargs='*', default=[], help="JSON files of runs done elsewhere (e.g. one process per seed, "
                "each with its own --seeds and --out): combine them into --out, run nothing")
args = ap.parse_args()
torch.set_num_threads(args.threads)

GRID = {  # label: overrides (model, method, bn_stats)
    'bn ast subset':  ['model.name=resnet_small', 'ast.method=ast', 'ast.bn_stats=subset'],
    'bn ast score':   ['model.name=resnet_small', 'ast.method=ast', 'ast.bn_stats=score'],
    'bn random':      ['model.name=resnet_small', 'ast.method=random'],
    'gn ast':         ['model.name=resnet_small_gn', 'ast.method=ast'],
    'gn random':      ['model.name=resnet_small_gn', 'ast.method=random'],
    'bn full':        ['model.name=resnet_small', 'ast.method=full'],      # the references last (the longest runs)
    'gn full':        ['model.name=resnet_small_gn', 'ast.method=full'],
}
GAPS = [('bn ast subset', 'bn random'), ('bn ast score', 'bn random'), ('gn ast', 'gn random'),
        ('bn ast score', 'bn ast subset')]
out = Path(args.out + '.json')
old = json.loads(out.read_text()) if out.exists() else {}
rows = []
for d in [old] + [json.loads(Path(f).read_text()) for f in args.merge]:   # finished runs of the same protocol are kept
    rows += [r for r in d.get('runs', []) if d.get('epochs') == args.epochs and d.get('rate') == args.rate
             and not any((r['label'], r['seed']) == (q['label'], q['seed']) for q in rows)]

# ---------------------------------------------------------------------------------------------------- Results
def write():
    acc = lambda lab, k: [r[k] for r in rows if r['label'] == lab]
    summary = {lab: {k: mean_ci(acc(lab, k)) for k in ('best_val_acc', 'final_val_acc')} | dict(
               activation_rate=mean_ci(acc(lab, 'activation_rate'))['mean']) for lab in GRID if acc(lab, 'best_val_acc')}
    gaps = {f"{a} - {b}": {k: welch(acc(a, k), acc(b, k)) for k in ('best_val_acc', 'final_val_acc')}
            for a, b in GAPS if acc(a, 'best_val_acc') and acc(b, 'best_val_acc')}
    res = dict(benchmark='bn_artefact', created_at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               git=git_state(), versions=versions(), config='configs/digits_ast.yaml', epochs=args.epochs, rate=args.rate,
               seeds=args.seeds, threads=args.threads, grid=GRID, summary=summary, gaps=gaps,
               complete=all(len(acc(l, 'best_val_acc')) == len(args.seeds) for l in GRID),
               not_run=[l for l in GRID if len(acc(l, 'best_val_acc')) < len(args.seeds)],
               command=' '.join(['python', 'benchmarks/bn_artefact.py', *sys.argv[1:]]),
               note="accuracy only; mean, std and 95 % t-interval over seeds; gaps: Welch 95 % (wins/ties/loses = first minus second)",
               runs=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + '\n')   # after every run: a partial result survives, and a rerun resumes
    return res

# ---------------------------------------------------------------------------------------------------- Runs
quiet = Quiet(per_call_s=2, budget_s=30)   # accuracy only: no need to wait for quiet cores
with tempfile.TemporaryDirectory() as tmp:
    for s in ([] if args.merge else args.seeds):                    # seed-major: a partial run has every variant on the first seeds
        for label, ov in GRID.items():
            if any(r['label'] == label and r['seed'] == s for r in rows) or (args.only and label not in args.only): continue
            ov = [*ov, f'ast.target_activation={args.rate}', f'training.epochs={args.epochs}', f'training.seed={s}']
            rows.append(train_run('configs/digits_ast.yaml', label, ov, quiet, tmp))
            write()
res = write()
for lab, v in res['summary'].items():
    b = v['best_val_acc']
    print(f"{lab:>14}: best {b['mean']:.3f} [{b['ci_low'] or 0:.3f}, {b['ci_high'] or 0:.3f}]  final "
          f"{v['final_val_acc']['mean']:.3f}  active {v['activation_rate']:.3f}")
for k, v in res['gaps'].items(): print(f"{k:>30}: best {v['best_val_acc']['diff']:+.3f} ({v['best_val_acc']['verdict']})")
