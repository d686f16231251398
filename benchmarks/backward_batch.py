"""Does wall time follow FLOPs? Full training vs AST at r = 0.1 / 0.25 / 0.5, with and without full backward batches.

Per-batch selection saves FLOPs (counted: one forward per scored sample + forward and backward per trained one, so AST
costs (1 + 3r)/3 of full's), but a train pass on r*B samples uses the hardware worse than one on B. With
`ast.backward_batch: full` the selected samples gather across batches and each train pass has `training.batch_size`
of them (`astlab.core.api.GatherQueue`). Each run here is a whole `astlab.lab.train.train` on an ImageFolder of PNG files
(resnet18 from torchvision, 64 px, batch 128, `num_workers: 0`) and records:

- `train_wall_s`: the results' `totals.train_wall_s` (the training loop: data + score + train + optimiser phases;
  no evaluation, no checkpoint writes), and `wall_s`, the whole run as the process saw it;
- `per_batch_ms`: train_wall_s per loader batch (B samples scored; a gathered run trains in some batches only);
- `flops`: counted training FLOPs (`totals.flops`), and the realised activation rate.

The summary gives, for each r and each backward-batch setting, AST / full for training wall, whole-run wall and FLOPs,
and `wall_over_flops` = (training wall ratio) / (FLOPs ratio): 1.0 means the wall time falls exactly as the counted
FLOPs do. Variants run interleaved, `--repeats` times; the summary takes the median of each variant's clean runs
(others used < 10 % of the CPUs; all its runs if none was clean: `clean_runs` says how many).

    python benchmarks/backward_batch.py                  # resnet18, 64 px, batch 128, 1024 PNGs, 2 epochs, 2 repeats
    python benchmarks/backward_batch.py --quick          # resnet_tiny, 32 px, batch 64, 256 PNGs, 1 repeat: the code path
    python benchmarks/backward_batch.py --threads 1      # torch threads (default: 2)

Writes benchmarks/results/backward_batch[_quick].json. The machine may be shared: each run records the share of the
CPUs other processes used meanwhile (`others_share`, benchmarks/common.py), and the script waits for quiet before
each run within `--wait-budget`; read the ratios with those shares in mind.
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, json, statistics, sys, tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np, torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing
from astlab.config import load_config
from astlab.lab.train import train, versions, device_info
from astlab.engine.meters import history_rows
from common import git_state, cpu_model, measure, Quiet, png_folder, provenance, write_json

HP = dict(model='resnet18',        # torchvision ResNet-18, random init
          image_px=64,             # square side, pixels
          batch_size=128,          # samples scored per batch (and per gathered train pass)
          images=1024,             # PNG files (2 classes); 10 % held out for validation
          epochs=2,
          rates=(0.1, 0.25, 0.5),  # AST target activation r
          repeats=2,               # interleaved repeats of every variant
          threads=2)               # torch threads
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--quick', action='store_true', help='resnet_tiny, 32 px, batch 64, 256 images, 1 repeat')
ap.add_argument('--threads', type=int, default=None, help=f"torch threads (default {HP['threads']})")
ap.add_argument('--repeats', type=int, default=None, help=f"repeats of each variant (default {HP['repeats']})")
ap.add_argument('--out', default=None, help='output path without suffix (default benchmarks/results/backward_batch[_quick])')
ap.add_argument('--wait-budget', type=float, default=60, help='seconds to wait for quiet cores before each run')
ap.add_argument('--summarize', default=None, help="recompute the summary of an existing result JSON (no runs) and rewrite it")
args = ap.parse_args()
if args.quick: HP.update(model='resnet_tiny', image_px=32, batch_size=64, images=256, repeats=1)
if args.threads: HP['threads'] = args.threads
if args.repeats: HP['repeats'] = args.repeats
torch.set_num_threads(HP['threads'])
out = Path(args.out or HERE/'results'/('backward_batch_quick' if args.quick else 'backward_batch'))
started = datetime.now(timezone.utc).isoformat(timespec='seconds')

CLEAN = 0.10   # a run is clean when other processes used less than this share of the CPUs meanwhile
SUMMARY_RULE = f"medians over each variant's clean runs (others_share < {CLEAN}); all its runs when none is clean"

def summarize(rows:list) -> dict:
    "AST / full per variant from the medians of its clean runs (all its runs when none is clean: `clean_runs` says so)."
    def runs(label):
        mine = [r for r in rows if r['variant'] == label]
        clean = [r for r in mine if r['others_share'] < CLEAN]
        return clean or mine, len(clean), len(mine)
    med = lambda label, k: statistics.median(r[k] for r in runs(label)[0])
    out = {}
    for label in dict.fromkeys(r['variant'] for r in rows):
        if label == 'full': continue
        tw, w, fl = (med(label, k) / med('full', k) for k in ('train_wall_s', 'wall_s', 'flops'))
        out[label] = dict(train_wall_ratio=tw, whole_run_wall_ratio=w, flops_ratio=fl, wall_over_flops=tw / fl,
                          per_batch_ms=med(label, 'per_batch_ms'), activation_rate=med(label, 'activation_rate'),
                          clean_runs=runs(label)[1], runs=runs(label)[2])
    out['full'] = dict(per_batch_ms=med('full', 'per_batch_ms'), train_wall_s=med('full', 'train_wall_s'),
                       clean_runs=runs('full')[1], runs=runs('full')[2])
    return out

if args.summarize:
    p = Path(args.summarize); res = json.loads(p.read_text())
    res['summary'], res['summary_rule'] = summarize(res['runs']), SUMMARY_RULE
    p.write_text(json.dumps(res, indent=2)); print(json.dumps(res['summary'], indent=1)); sys.exit(0)

# ---------------------------------------------------------------------------------------------------------------------
# Data: an ImageFolder of PNG files (2 classes, 1.25x the training size so the crop has room), as benchmarks/phases.py
# ---------------------------------------------------------------------------------------------------------------------
tmp, root = png_folder(HP['images'], HP['image_px'], prefix='astlab-bb-')

# ---------------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------------
VARIANTS = {'full': ['ast.method=full']}
for r in HP['rates']:
    for bb in ('off', 'full'):
        VARIANTS[f'ast{r}_{bb}'] = ['ast.method=ast', f'ast.target_activation={r}', f'ast.backward_batch={bb}']

def run(label, ov, epochs=None):
    cfg = load_config(None, [*ov, 'dataset.type=folder', f'dataset.train_dir={root}', f"dataset.image_size={HP['image_px']}",
                             'dataset.val_fraction=0.1', f"model.name={HP['model']}", f"training.epochs={epochs or HP['epochs']}",
                             f"training.batch_size={HP['batch_size']}", 'training.num_workers=0', 'training.device=cpu',
                             'training.progress=false', f'logging.output_dir={tmp.name}/out_{label}'], env_file=None)
    return measure(lambda: train(cfg, progress=False, log=lambda *a: None))

run('warmup', VARIANTS['full'], epochs=1)   # untimed: first-call costs (allocator, lazy init) charged to no variant
quiet, rows = Quiet(budget_s=args.wait_budget * 20, per_call_s=args.wait_budget), []
for rep in range(HP['repeats']):
    order = list(VARIANTS) if rep % 2 == 0 else list(VARIANTS)[::-1]   # interleaved, alternating direction
    for label in order:
        quiet.wait()
        res, wall, others = run(f'{label}_{rep}', VARIANTS[label])
        tot, h = res['totals'], history_rows(res)
        batches = sum(r['steps'] for r in h)
        rows.append(dict(variant=label, repeat=rep, train_wall_s=tot['train_wall_s'], wall_s=wall, results_wall_s=tot['wall_s'],
                         per_batch_ms=1e3 * tot['train_wall_s'] / max(batches, 1), batches=batches, phase_s=res['phase_s'],
                         flops=tot['flops'], activation_rate=tot['activation_rate'], val_acc=h[-1]['val_acc'],
                         others_share=round(others, 3)))
        print(f"{label:>14} #{rep}: train {tot['train_wall_s']:6.1f} s ({rows[-1]['per_batch_ms']:6.1f} ms/batch), "
              f"whole run {wall:6.1f} s, {tot['flops']/1e9:8.1f} GFLOPs, active {tot['activation_rate']:.3f}; "
              f"others used {others:.0%} of the CPUs", flush=True)

# ---------------------------------------------------------------------------------------------------------------------
# Results: AST / full for training wall, whole-run wall and counted FLOPs
# ---------------------------------------------------------------------------------------------------------------------
summary = summarize(rows)
shares = [r['others_share'] for r in rows]
contention = dict(others_share_mean=statistics.mean(shares), others_share_max=max(shares), waits_s=quiet.waits)
print(json.dumps(summary, indent=1)); print('contention:', contention)
res = dict(benchmark='backward_batch', hyperparameters=HP, started_at=started,
           finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), runs=rows, summary=summary,
           summary_rule=SUMMARY_RULE, contention=contention,
           note='train_wall_ratio: AST / full of totals.train_wall_s (data + score + train + optimiser; no evaluation or '
                'checkpoints), median over repeats; flops_ratio: counted training FLOPs; wall_over_flops: their '
                'quotient (1.0 = wall time falls as the FLOPs do); others_share: share of the CPUs other processes used '
                'during the run (a shared machine: ratios from runs with a large share are unreliable)',
           **provenance())
write_json(out, res)
tmp.cleanup()
