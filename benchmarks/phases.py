"""Where a training step's time goes: full vs fresh AST vs stale AST on an ImageFolder of PNG files, phase by phase.

The issue behind this script: on a 2-class ImageFolder of PNG crops (resnet18, 64 px, batch 128, r = 0.25,
`num_workers: 0`) fresh AST's step took 0.88x full's where the compute model says (1 + 3r)/3 = 0.58x. Every run here
records `phase_s` (data wait + decode, score pass, train pass, optimiser, evaluation, checkpoint writes; see
`astlab.engine.meters.PhaseTimer`), so the gap can be split: the step-time ratio over the compute phases alone (score +
train + optimiser) against the ratio with the data phase included. Decoding a PNG costs the same whether the sample is
then trained or only scored, so with `num_workers: 0` the data phase does not shrink with r; with workers it overlaps
the compute. Stale scoring loads only the drawn samples (its loader's sampler holds the epoch's draw).

    python benchmarks/phases.py            # resnet18, 64 px, batch 128, 1024 PNGs, 2 epochs, workers 0 and 2
    python benchmarks/phases.py --quick    # resnet_tiny, 32 px, batch 64, 256 PNGs: the code path, minutes on a busy CPU

Writes benchmarks/results/phases[_quick].json. The machine may be shared: every run records the share of the CPUs
other processes used meanwhile (`others_share`, benchmarks/common.py); read ratios from runs where it is small.
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, json, sys, tempfile, time
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

HP = dict(model='resnet18', image_px=64, batch_size=128, images=1024, epochs=2, rate=0.25, workers=(0, 2), threads=2)
ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--quick', action='store_true', help='resnet_tiny, 32 px, batch 64, 256 images, workers 0 only')
ap.add_argument('--out', default=None, help='output path without suffix (default benchmarks/results/phases[_quick])')
ap.add_argument('--wait-budget', type=float, default=120, help='seconds to wait for quiet cores before each run')
args = ap.parse_args()
if args.quick: HP.update(model='resnet_tiny', image_px=32, batch_size=64, images=256, epochs=2, workers=(0,))
torch.set_num_threads(HP['threads'])
out = Path(args.out or HERE/'results'/('phases_quick' if args.quick else 'phases'))
started = datetime.now(timezone.utc).isoformat(timespec='seconds')

# ---------------------------------------------------------------------------------------------------------------------
# Data: an ImageFolder of PNG files (2 classes, 1.25x the training size so the crop has room)
# ---------------------------------------------------------------------------------------------------------------------
tmp, root = png_folder(HP['images'], HP['image_px'], prefix='astlab-phases-')

# ---------------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------------
VARIANTS = {'full': ['ast.method=full'], 'ast': ['ast.method=ast'], 'stale': ['ast.method=ast', 'ast.scoring=stale']}
quiet, rows = Quiet(budget_s=args.wait_budget * 10, per_call_s=args.wait_budget), []
for w in HP['workers']:
    for label, ov in VARIANTS.items():
        cfg = load_config(None, [*ov, 'dataset.type=folder', f'dataset.train_dir={root}', f"dataset.image_size={HP['image_px']}",
                                 'dataset.val_fraction=0.1', f"model.name={HP['model']}", f"training.epochs={HP['epochs']}",
                                 f"training.batch_size={HP['batch_size']}", f"ast.target_activation={HP['rate']}",
                                 f'training.num_workers={w}', 'training.device=cpu', 'training.progress=false',
                                 f'logging.output_dir={tmp.name}/out_{label}_{w}'], env_file=None)
        quiet.wait()
        res, wall, others = measure(lambda: train(cfg, progress=False, log=lambda *a: None))
        ph = res['phase_s']
        steps = sum(r['steps'] for r in history_rows(res))
        per_step = {k: 1e3 * ph.get(k, 0.0) / max(steps, 1) for k in ('data', 'score', 'train', 'optimizer')}
        rows.append(dict(variant=label, workers=w, wall_s=wall, others_share=round(others, 3), steps=steps,
                         phase_s=ph, per_step_ms=per_step, step_time_ms=res['totals']['step_time_ms'],
                         flops=res['totals']['flops'], activation_rate=res['totals']['activation_rate']))
        print(f"workers {w} {label:>5}: step {res['totals']['step_time_ms']:7.1f} ms = " +
              ' + '.join(f"{k} {v:.1f}" for k, v in per_step.items()) + f"; eval {ph.get('eval', 0):.1f} s, "
              f"checkpoint {ph.get('checkpoint', 0):.1f} s; others used {others:.0%} of the CPUs", flush=True)

# ---------------------------------------------------------------------------------------------------------------------
# Results: AST / full per step, with and without the data phase, against the compute model (1 + 3r) / 3
# ---------------------------------------------------------------------------------------------------------------------
summary = {}
for w in HP['workers']:
    by = {r['variant']: r for r in rows if r['workers'] == w}
    f, a = by['full']['per_step_ms'], by['ast']['per_step_ms']
    compute = lambda d: d['score'] + d['train'] + d['optimizer']
    r = by['ast']['activation_rate']
    summary[f'workers_{w}'] = dict(
        ast_over_full_step=sum(a.values()) / sum(f.values()),
        ast_over_full_compute_phases=compute(a) / compute(f),
        compute_model=(1 + 3 * r) / 3, ast_rate=r,
        data_share_of_full_step=f['data'] / sum(f.values()), data_share_of_ast_step=a['data'] / sum(a.values()),
        stale_over_full_wall=by['stale']['wall_s'] / by['full']['wall_s'],
        stale_over_full_flops=by['stale']['flops'] / by['full']['flops'])
print(json.dumps(summary, indent=1))
res = dict(benchmark='phases', hyperparameters=HP, started_at=started,
           finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), runs=rows, summary=summary,
           note='per_step_ms: each phase over the training steps of the run; compute_model = (1 + 3r)/3 at the '
                'measured rate r; others_share: share of the CPUs other processes used during the run (a shared '
                'machine: ratios from runs with a large share are unreliable)',
           **provenance())
write_json(out, res)
tmp.cleanup()
