"""Whole runs at r = 0.25 on digits: what stale scores and cheap scoring save end to end, and what they cost.

The step-time benchmark measures one step; a user pays for a whole run: data loading, every step, every epoch's
evaluation and checkpoint. Fresh AST pays a score pass on every sample, so at r = 0.25 it can never cost less than
(1 + 3r)/3 = 0.58 of full training's FLOPs. Two ways past that, both measured here against their controls:

* stale scores (`ast.scoring=stale`): each epoch's samples are drawn before the epoch from the table of their last
  training scores, so pruned samples are neither loaded nor forwarded. Goal: whole run <= 0.35x full's wall time at
  r = 0.25 on CPU, counted FLOPs to match. Its fair control is the *same* epoch-level schedule with a random draw
  (`ast.method=random` with `ast.scoring=stale`): drawing fewer samples per epoch also means fewer optimiser steps,
  which changes training as much as which samples are drawn;
* cheap scoring (`ast.score_scale=0.5`): the score pass runs at half the resolution (a quarter of its FLOPs).
  Measured: its accuracy cost against fresh AST at full resolution.

Runs (3 seeds each, 15 epochs, the configs/digits_ast.yaml preset): full; random per batch; fresh AST; AST with cheap
scoring; stale AST; stale random; stale AST + 2 annealing epochs, without and with rescaling; stale random + 2
annealing epochs, at the preset's learning rate and at 4x it (rescaling's weights multiply the mean loss of a drawn
sample by 4 here: (0.167 x 1 + 0.083 x 10) / 0.25; is that, rather than the choice of samples, what helps?).

    python benchmarks/whole_run.py           # the committed protocol (about 14 min on 2 idle cores)
    python benchmarks/whole_run.py --quick   # what `make bench` runs: 1 seed, 5 variants (about 2.5 min)
    python benchmarks/whole_run.py --variants stale_anneal_lr4 stale_random_anneal_lr4 --out benchmarks/results/whole_run_lr4
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, json, math, os, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))   # run from a checkout without installing

from astlab.lab.train import versions, device_info
from common import git_state, Quiet, mean_std, cpu_model, train_run

VARIANTS = {   # label: (overrides, what it is)
    'full':                 (['ast.method=full'], 'all data'),
    'random':               (['ast.method=random'], 'random r of each batch (same steps as full)'),
    'ast':                  ([], 'fresh AST: score pass on every batch'),
    'ast_cheap':            (['ast.score_scale=0.5'], 'fresh AST, score pass at half resolution'),
    'stale':                (['ast.scoring=stale'], 'stale AST: drawn per epoch from last training scores'),
    'stale_random':         (['ast.scoring=stale', 'ast.method=random'], 'the control: same schedule, random draw'),
    'stale_anneal':         (['ast.scoring=stale', 'ast.anneal_epochs=2'], 'stale AST + 2 full epochs at the end'),
    'stale_rescale_anneal': (['ast.scoring=stale', 'ast.rescale=true', 'ast.anneal_epochs=2'],
                             'stale AST + InfoBatch rescaling + 2 full epochs at the end'),
    'stale_random_anneal':  (['ast.scoring=stale', 'ast.method=random', 'ast.anneal_epochs=2'],
                             'its control: random draw + 2 full epochs at the end'),
    'stale_random_anneal_lr4': (['ast.scoring=stale', 'ast.method=random', 'ast.anneal_epochs=2', 'training.lr=0.2'],
                                'the same at 4x the learning rate: rescaling multiplies the mean loss of a drawn '
                                'sample by 4 at r = 0.25, explore 0.1'),
    'stale_anneal_lr4':     (['ast.scoring=stale', 'ast.anneal_epochs=2', 'training.lr=0.2'],
                             'stale AST + 2 full epochs at 4x the learning rate (not in the default protocol)'),
}
DEFAULT = tuple(v for v in VARIANTS if v != 'stale_anneal_lr4')
HP = dict(
    config='configs/digits_ast.yaml',  # resnet_small, digits upscaled to 32 px, batch 64, lr 0.05 cosine, 1 warm-up epoch
    epochs=15,                         # per run (the preset's 15)
    seeds=(0, 1, 2),                   # training.seed: init, data order, selection RNG
    rate=0.25,                         # target activation r
    variants=DEFAULT,
    threads=2,                         # torch intra-op threads (set explicitly, recorded)
    clean_share=0.10,                  # a run's times are clean if other processes used < 10 % of the CPUs meanwhile
    wait_per_run_s=60,                 # before each run, wait up to 60 s for other processes to go quiet ...
    wait_budget_s=600,                 # ... and up to 600 s in all (then run anyway, and say so)
    goal_wall_ratio=0.35,              # stale: whole run <= 0.35 x full's wall time at r = 0.25
)

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--quick', action='store_true', help='1 seed, 5 variants; writes whole_run_quick.json/png')
ap.add_argument('--seeds', type=int, nargs='+', help=f"seeds (default {' '.join(map(str, HP['seeds']))})")
ap.add_argument('--epochs', type=int, help=f"epochs per run (default {HP['epochs']})")
ap.add_argument('--threads', type=int, default=HP['threads'], help='torch threads (default %(default)s)')
ap.add_argument('--wait-budget', type=float, help=f"seconds in all to wait for quiet CPUs (default {HP['wait_budget_s']})")
ap.add_argument('--variants', nargs='+', choices=list(VARIANTS), help='run only these (full is always run: the ratios need it)')
ap.add_argument('--out', help='output path without extension (default benchmarks/results/whole_run[_quick])')
args = ap.parse_args()
if args.quick: HP.update(seeds=(0,), variants=('full', 'ast', 'ast_cheap', 'stale', 'stale_random'), wait_budget_s=60)
if args.variants: HP['variants'] = tuple(dict.fromkeys(['full', *args.variants]))
if args.seeds: HP['seeds'] = tuple(args.seeds)
if args.epochs: HP['epochs'] = args.epochs
if args.wait_budget is not None: HP['wait_budget_s'] = args.wait_budget
HP['threads'] = args.threads
out = Path(args.out or HERE/'results'/('whole_run_quick' if args.quick else 'whole_run'))

git = git_state()   # at the start: the library imported above is what runs
torch.set_num_threads(HP['threads'])
os.chdir(ROOT)
started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
t_script, load_start = time.perf_counter(), os.getloadavg()
tmp = tempfile.TemporaryDirectory(prefix='astlab-whole-run-')   # checkpoints and per-run results files
quiet = Quiet(HP['clean_share'], HP['wait_per_run_s'], HP['wait_budget_s'])

# ---------------------------------------------------------------------------------------------------------------------
# The runs: seed by seed, every variant once per seed (so slow drift of the machine spreads over all of them)
# ---------------------------------------------------------------------------------------------------------------------
runs = []
for seed in HP['seeds']:
    for label in HP['variants']:
        ov = [f"ast.target_activation={HP['rate']}", f"training.epochs={HP['epochs']}", f'training.seed={seed}',
              *VARIANTS[label][0]]
        runs.append(train_run(HP['config'], label, ov, quiet, f'{tmp.name}/{label}_s{seed}'))

# ---------------------------------------------------------------------------------------------------------------------
# Summary: mean +- std over seeds; ratios to full (wall: clean runs only); the goals
# ---------------------------------------------------------------------------------------------------------------------
def clean_only(xs): return [x for x in xs if x['others_share'] < HP['clean_share']]
def clean(xs): return clean_only(xs) or xs   # all runs, flagged by n_clean, when none was clean
by = {label: [x for x in runs if x['label'] == label] for label in HP['variants']}
full_wall = mean_std(x['wall_s'] for x in clean(by['full']))['mean']
full_flops = mean_std(x['gflops'] for x in by['full'])['mean']
summary = {}
for label, xs in by.items():
    s = {k: mean_std(x[k] for x in xs) for k in ('final_val_acc', 'best_val_acc', 'gflops', 'activation_rate')}
    s['wall_s'] = mean_std(x['wall_s'] for x in clean(xs))
    s['train_s'] = mean_std(x['train_s'] for x in clean(xs))
    s |= dict(what=VARIANTS[label][1], overrides=VARIANTS[label][0], n_clean=len(clean_only(xs)),
              wall_ratio=s['wall_s']['mean'] / full_wall, flops_ratio=s['gflops']['mean'] / full_flops)
    summary[label] = s

def diff(a, b):
    "Difference of mean final accuracies a - b, its standard error, and a verdict at 2 standard errors."
    A, B = summary[a]['final_val_acc'], summary[b]['final_val_acc']
    d, se = A['mean'] - B['mean'], math.sqrt(A['std']**2 / A['n'] + B['std']**2 / B['n'])
    v = (f'{a} better' if d > 2*se else f'{b} better' if d < -2*se else 'no clear difference') if se > 0 else \
        f"{a} {'better' if d > 0 else 'worse' if d < 0 else 'equal'} (one seed: no error bar)"
    return dict(diff=d, se=se, verdict=v)

goals, comparisons = {}, {}
if 'stale' in summary:
    s = summary['stale']
    goals['stale_whole_run'] = dict(goal=f"stale whole run <= {HP['goal_wall_ratio']} x full's wall time at r = {HP['rate']}",
                                    wall_ratio=s['wall_ratio'], flops_ratio=s['flops_ratio'],
                                    met=s['wall_ratio'] <= HP['goal_wall_ratio'] and s['flops_ratio'] <= HP['goal_wall_ratio'])
if 'ast_cheap' in summary and 'ast' in summary:
    c, a, d = summary['ast_cheap'], summary['ast'], diff('ast_cheap', 'ast')
    goals['cheap_scoring'] = dict(goal='measure the accuracy cost of scoring at half resolution',
                                  accuracy_cost=-d['diff'], se=d['se'],
                                  flops_saved=1 - c['gflops']['mean'] / a['gflops']['mean'],
                                  wall_saved=1 - c['wall_s']['mean'] / a['wall_s']['mean'])
for a, b in (('stale', 'stale_random'), ('stale_anneal', 'stale_random_anneal'),
             ('stale_rescale_anneal', 'stale_random_anneal'), ('stale_rescale_anneal', 'stale_anneal'),
             ('stale_rescale_anneal', 'stale_random_anneal_lr4'), ('stale_anneal_lr4', 'stale_random_anneal_lr4'),
             ('stale', 'random'),
             ('ast', 'random'), ('ast_cheap', 'random')):
    if a in summary and b in summary: comparisons[f'{a} vs {b}'] = diff(a, b)

runs_clean = len(clean_only(runs))
res = dict(benchmark='whole_run', started_at=started_at,
           finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), runtime_s=time.perf_counter() - t_script,
           hyperparameters=HP, goals=goals, comparisons=comparisons, summary=summary, runs=runs,
           accuracy='final-epoch validation accuracy (fraction); best_val_acc is the best epoch',
           time_note='wall_s: the whole train() call (data, training, every evaluation and checkpoint write), mean over '
                     'the clean runs (others used < clean_share of the CPUs); train_s: training steps only. '
                     'wall_ratio and flops_ratio are against full.',
           noise=dict(load_avg_start=load_start, load_avg_end=os.getloadavg(), runs_clean=runs_clean, runs_all=len(runs),
                      waited_s=sum(quiet.waits)),
           device=device_info(torch.device('cpu')) | dict(logical_cpus=os.cpu_count(), cpu_model=cpu_model()),
           versions=versions(), git=git, command=' '.join(['python', *sys.argv]))
out.parent.mkdir(parents=True, exist_ok=True)
tmp_json = out.with_suffix('.json.tmp'); tmp_json.write_text(json.dumps(res, indent=2)); tmp_json.replace(out.with_suffix('.json'))

# ---------------------------------------------------------------------------------------------------------------------
# Chart: accuracy against the share of full training's cost, counted FLOPs and whole-run wall time
# ---------------------------------------------------------------------------------------------------------------------
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
colours = {'full': 'black', 'random': '#888888', 'ast': '#1f77b4', 'ast_cheap': '#17becf', 'stale': '#d62728',
           'stale_random': '#ff9896', 'stale_anneal': '#8c564b', 'stale_rescale_anneal': '#9467bd', 'stale_random_anneal': '#c5b0d5', 'stale_random_anneal_lr4': '#e377c2', 'stale_anneal_lr4': '#bcbd22'}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
for ax, key, xlabel in ((axes[0], 'flops_ratio', 'counted FLOPs / full'), (axes[1], 'wall_ratio', 'whole-run wall time / full')):
    for label, s in summary.items():
        x, y = s[key], s['final_val_acc']
        ax.errorbar([x], [y['mean']], yerr=[y['std']], color=colours[label], marker='o', capsize=3, label=label)
    if key == 'wall_ratio': ax.axvline(HP['goal_wall_ratio'], color='#d62728', ls=':', lw=1, label='stale goal')
    ax.set_xlabel(xlabel); ax.set_xlim(0, 1.05); ax.grid(alpha=0.3)
axes[0].set_ylabel('final validation accuracy'); axes[1].legend(fontsize=7, loc='lower right')
fig.suptitle(f"digits, whole runs at r = {HP['rate']} (resnet_small, {HP['epochs']} epochs, {len(HP['seeds'])} seed(s), "
             f"{HP['threads']} CPU threads; mean ± std)", fontsize=9)
fig.tight_layout(); fig.savefig(out.with_suffix('.png'), dpi=120)

print(json.dumps(dict(goals=goals, comparisons=comparisons), indent=1))
for label, s in summary.items():
    print(f"{label:>22}: acc {s['final_val_acc']['mean']:.3f} ± {s['final_val_acc']['std']:.3f}, "
          f"FLOPs {s['flops_ratio']:.3f}x full, wall {s['wall_s']['mean']:.1f} s = {s['wall_ratio']:.3f}x full")
print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} in {res['runtime_s']:.0f} s")
tmp.cleanup()
