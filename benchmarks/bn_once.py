"""BatchNorm running statistics updated once per AST batch (score pass, whole batch) vs twice (score pass + train pass).

astlab updates BatchNorm's running statistics in the score pass only, from the whole batch (issue 12 item 6). This
checks that the change does not hurt accuracy: AST at 25 % on digits (configs/digits_ast.yaml, resnet_small, 32 px,
--epochs, default 6 here to fit a shared 2-core machine), 3 seeds, with the fix ('once') and with the old double update restored by disabling the train-pass
freeze ('twice'). Reports final-epoch validation accuracy, mean +- std over seeds.

    python benchmarks/bn_once.py                 # the committed protocol (6 epochs, about 10 min on 2 idle cores)
    python benchmarks/bn_once.py --epochs 3 --seeds 0 --out /tmp/bn_once   # a smoke run
"""
import argparse, json, sys, tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from astlab.lab.train import versions
from astlab.methods.per_batch import SelectionCB
from common import git_state, Quiet, mean_std, train_run

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--epochs', type=int, default=6)
ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
ap.add_argument('--threads', type=int, default=1)
ap.add_argument('--out', default=str(HERE/'results'/'bn_once_digits'))
args = ap.parse_args()
torch.set_num_threads(args.threads)

freeze = SelectionCB._freeze_running_stats
rows, quiet = [], Quiet(per_call_s=5, budget_s=60)   # accuracy only: timing is not reported

def write():
    summary = {v: mean_std(r['final_val_acc'] for r in rows if r['variant'] == v) for v in ('once', 'twice')
               if any(r['variant'] == v for r in rows)}
    res = dict(created_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), git=git_state(), versions=versions(),
               epochs=args.epochs, seeds=args.seeds, threads=args.threads, summary_final_val_acc=summary,
               runs=[{k: r[k] for k in ('variant', 'seed', 'final_val_acc', 'best_val_acc', 'activation_rate', 'gflops')}
                     for r in rows])
    Path(args.out + '.json').write_text(json.dumps(res, indent=2))   # after every run: a partial result survives
    return summary

with tempfile.TemporaryDirectory() as tmp:
    for s in args.seeds:
        for variant in ('once', 'twice'):
            SelectionCB._freeze_running_stats = freeze if variant == 'once' else (lambda self: None)
            ov = [f'training.epochs={args.epochs}', f'training.seed={s}', 'ast.target_activation=0.25']
            rows.append(train_run('configs/digits_ast.yaml', variant, ov, quiet, tmp) | dict(variant=variant))
            write()
SelectionCB._freeze_running_stats = freeze
print(json.dumps(write(), indent=2))
