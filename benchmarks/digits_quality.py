"""Quality vs compute on real data: full, random and AST on scikit-learn's digits, and random at AST's compute.

Every selection claim needs a control. AST at target rate r scores every sample (a forward, F) and trains on a
fraction r of them (forward + backward, 3F), so it spends about (1 + 3r)/3 of full training's FLOPs, while a
random subset of the same size spends r. The fair control is random selection at the rate r_eq whose counted FLOPs
equal AST's; r_eq is computed from AST's measured totals:

    r_eq = AST's counted FLOPs / (samples seen x forward+backward FLOPs per sample)

Runs (3 seeds each): full; random and ast at r in {0.2, 0.3, 0.5}; random at r_eq(r); one extra AST variant
(default: loss-only scores, ast.entropy_weight=0). Each run is `astlab.lab.train.train` on configs/digits_ast.yaml with
overrides, in this process (no subprocesses), torch threads set explicitly. Reported: final-epoch validation
accuracy (best-epoch too), counted GFLOPs, training seconds (evaluation and checkpoint writes excluded) and wall
seconds, mean +- std over seeds, and a verdict: does AST beat random at equal compute?

    python benchmarks/digits_quality.py            # the committed protocol (about 15-20 min on 2 idle cores)
    python benchmarks/digits_quality.py --quick    # what `make bench` runs: 1 seed, no extra variant (5 min)
    python benchmarks/digits_quality.py --extra-name ast_stale --extra ast.scoring=stale   # another extra variant
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, json, math, os, statistics, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))   # run from a checkout without installing

from astlab.lab.train import versions, device_info
from common import git_state, Quiet, mean_std, cpu_model, train_run

HP = dict(
    config='configs/digits_ast.yaml',  # resnet_small, digits upscaled to 32 px, batch 64, lr 0.05 cosine, 1 warm-up epoch
    epochs=15,                         # per run (the preset's 15)
    seeds=(0, 1, 2),                   # training.seed: init, data order, selection RNG
    rates=(0.2, 0.3, 0.5),             # target activation r: fraction of each batch trained on
    threads=2,                         # torch intra-op threads (set explicitly, recorded)
    extra_name='ast_loss_only',        # one extra AST variant ...
    extra=('ast.entropy_weight=0',),   # ... its overrides (loss-only significance)
    clean_share=0.10,                  # a run's times are clean if other processes used < 10 % of the CPUs meanwhile
    wait_per_run_s=60,                 # before each run, wait up to 60 s for other processes to go quiet ...
    wait_budget_s=900,                 # ... and up to 900 s in all (then run anyway, and say so)
)

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--quick', action='store_true', help='1 seed, no extra variant; writes *_quick.json/png')
ap.add_argument('--epochs', type=int, help=f"epochs per run (default {HP['epochs']})")
ap.add_argument('--seeds', type=int, nargs='+', help=f"seeds (default {' '.join(map(str, HP['seeds']))})")
ap.add_argument('--threads', type=int, default=HP['threads'], help='torch threads (default %(default)s)')
ap.add_argument('--extra-name', default=HP['extra_name'], help='label of the extra AST variant (default %(default)s)')
ap.add_argument('--extra', nargs='*', default=list(HP['extra']),
                help="overrides of the extra AST variant, e.g. ast.entropy_weight=0; none: no extra variant")
ap.add_argument('--wait-budget', type=float, help=f"seconds in all to wait for quiet CPUs (default {HP['wait_budget_s']}, --quick 60)")
ap.add_argument('--out', help='output path without extension (default benchmarks/results/digits_quality[_quick])')
args = ap.parse_args()
if args.quick: HP.update(seeds=(0,), extra=(), wait_budget_s=60)
else: HP.update(extra=tuple(args.extra))
if args.epochs: HP['epochs'] = args.epochs
if args.wait_budget is not None: HP['wait_budget_s'] = args.wait_budget
if args.seeds: HP['seeds'] = tuple(args.seeds)
HP.update(threads=args.threads, extra_name=args.extra_name)
out = Path(args.out or HERE/'results'/('digits_quality_quick' if args.quick else 'digits_quality'))

git = git_state()   # at the start: the library imported above is what runs
torch.set_num_threads(HP['threads'])
os.chdir(ROOT)
started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
t_script, load_start = time.perf_counter(), os.getloadavg()
tmp = tempfile.TemporaryDirectory(prefix='astlab-digits-bench-')   # checkpoints and per-run results files
quiet = Quiet(HP['clean_share'], HP['wait_per_run_s'], HP['wait_budget_s'])

# ---------------------------------------------------------------------------------------------------------------------
# One run: train() with overrides, reduced to the numbers the comparison needs
# ---------------------------------------------------------------------------------------------------------------------
def run(label, method, rate, seed, extra=()):
    overrides = [f'ast.method={method}', f'ast.target_activation={rate}', f"training.epochs={HP['epochs']}",
                 f'training.seed={seed}', *extra]
    row = train_run(HP['config'], f'{label} r={rate}', overrides, quiet, f'{tmp.name}/{label}_{rate}_s{seed}')
    return row | dict(label=label, method=method, rate=rate, overrides=list(extra))

# ---------------------------------------------------------------------------------------------------------------------
# The protocol: full, random(r), ast(r) for every seed; then random at AST's compute; then the extra variant
# ---------------------------------------------------------------------------------------------------------------------
runs = []
for seed in HP['seeds']:
    runs.append(run('full', 'full', 1.0, seed))
    for r in HP['rates']:
        runs.append(run('random', 'random', r, seed))
        runs.append(run('ast', 'ast', r, seed))

r_eq = {}
for r in HP['rates']:
    ast_runs = [x for x in runs if x['label'] == 'ast' and x['rate'] == r]
    r_eq[r] = round(statistics.mean(x['gflops'] * 1e9 / (x['samples_seen'] * x['fwd_bwd_flops']) for x in ast_runs), 4)
for seed in HP['seeds']:
    for r in HP['rates']:
        runs.append(run('random_eq', 'random', r_eq[r], seed) | dict(matches_ast_rate=r))
if HP['extra']:
    for seed in HP['seeds']:
        for r in HP['rates']:
            runs.append(run(HP['extra_name'], 'ast', r, seed, HP['extra']))

# ---------------------------------------------------------------------------------------------------------------------
# Summary: mean +- std over seeds, and the verdict at equal compute
# ---------------------------------------------------------------------------------------------------------------------
def group_key(x): return (x['label'], x.get('matches_ast_rate', x['rate']))
groups = {}
for x in runs: groups.setdefault(group_key(x), []).append(x)
summary = []
for (label, r), xs in groups.items():
    clean = [x['train_s'] for x in xs if x['others_share'] < HP['clean_share']]
    summary.append(dict(label=label, rate=r, actual_rate=xs[0]['rate'],
                        **{k: mean_std([x[k] for x in xs]) for k in
                           ('final_val_acc', 'best_val_acc', 'gflops', 'train_s', 'wall_s', 'activation_rate')},
                        train_s_clean=mean_std(clean) if clean else None))

def find(label, r): return next(s for s in summary if s['label'] == label and s['rate'] == r)
verdicts = {}
for r in HP['rates']:
    a, q, same = find('ast', r), find('random_eq', r), find('random', r)
    d = a['final_val_acc']['mean'] - q['final_val_acc']['mean']
    se = math.sqrt(a['final_val_acc']['std']**2 / a['final_val_acc']['n'] + q['final_val_acc']['std']**2 / q['final_val_acc']['n'])
    verdict = ('AST better' if d > 2 * se else 'random better' if d < -2 * se else 'no clear difference') if se > 0 else \
              ('AST better' if d > 0 else 'random better' if d < 0 else 'equal') + ' (one seed: no error bar)'
    verdicts[str(r)] = dict(r_eq=r_eq[r], ast_acc=a['final_val_acc']['mean'], random_eq_acc=q['final_val_acc']['mean'],
                            random_same_r_acc=same['final_val_acc']['mean'], diff=d, se=se, verdict=verdict,
                            ast_gflops=a['gflops']['mean'], random_eq_gflops=q['gflops']['mean'],
                            ast_train_s=a['train_s']['mean'], random_eq_train_s=q['train_s']['mean'])
    if HP['extra']:
        e = find(HP['extra_name'], r)
        verdicts[str(r)] |= dict(extra_acc=e['final_val_acc']['mean'], extra_minus_random_eq=e['final_val_acc']['mean'] - q['final_val_acc']['mean'])
beats = [r for r, v in verdicts.items() if v['verdict'] == 'AST better']
headline = (f"AST beats random at equal compute at r = {', '.join(beats)}" if beats else
            "AST does not beat random selection at equal counted compute at any r tested")

clean = [x for x in runs if x['others_share'] < HP['clean_share']]
res = dict(benchmark='digits_quality', started_at=started_at,
           finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'), runtime_s=time.perf_counter() - t_script,
           hyperparameters=HP, headline=headline, verdicts=verdicts, r_eq=r_eq, summary=summary, runs=runs,
           accuracy='final-epoch validation accuracy (fraction); best_val_acc is the best epoch',
           time_note='train_s: training steps only (evaluation and checkpoint writes excluded); wall_s: whole train() '
                     'call. Wall times are inflated when other processes shared the CPUs: see runs[].others_share.',
           noise=dict(load_avg_start=load_start, load_avg_end=os.getloadavg(), runs_clean=len(clean), runs_all=len(runs),
                      others_share_median=statistics.median(x['others_share'] for x in runs),
                      waited_s=sum(quiet.waits)),
           device=device_info(torch.device('cpu')) | dict(logical_cpus=os.cpu_count(), cpu_model=cpu_model()),
           versions=versions(), git=git, command=' '.join(['python', *sys.argv]))
out.parent.mkdir(parents=True, exist_ok=True)
out.with_suffix('.json').write_text(json.dumps(res, indent=2))

# ---------------------------------------------------------------------------------------------------------------------
# Chart: accuracy vs counted GFLOPs and vs training seconds (mean +- std over seeds)
# ---------------------------------------------------------------------------------------------------------------------
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
style = {'full': ('black', 's', 'full data'), 'random': ('#888888', 'o', 'random, r'), 'ast': ('#1f77b4', 'D', 'AST, r'),
         'random_eq': ('#2ca02c', 'v', 'random at AST\'s FLOPs (r_eq)'), HP['extra_name']: ('#ff7f0e', '^', HP['extra_name'])}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.3), sharey=True)
def xval(s, key):   # training seconds: the clean runs' mean where there are any (contended runs run 2-10x slower)
    return s['train_s_clean'] if key == 'train_s' and s['train_s_clean'] else s[key]
for ax, xkey, xlabel in ((axes[0], 'gflops', 'counted GFLOPs per run'),
                         (axes[1], 'train_s', 'training seconds per run (eval excluded; uncontended runs)')):
    for label, (c, m, name) in style.items():
        ss = sorted((s for s in summary if s['label'] == label), key=lambda s: xval(s, xkey)['mean'])
        if not ss: continue
        ax.errorbar([xval(s, xkey)['mean'] for s in ss], [s['final_val_acc']['mean'] for s in ss],
                    xerr=[xval(s, xkey)['std'] for s in ss], yerr=[s['final_val_acc']['std'] for s in ss],
                    color=c, marker=m, capsize=3, label=name, linestyle='-' if len(ss) > 1 else 'none')
        if label != 'full':
            for s in ss: ax.annotate(f"{s['rate']:g}", (xval(s, xkey)['mean'], s['final_val_acc']['mean']),
                                     textcoords='offset points', xytext=(4, -10), fontsize=7, color=c)
    ax.set_xlabel(xlabel); ax.grid(alpha=0.3)
axes[0].set_ylabel('final validation accuracy'); axes[0].legend(fontsize=8, loc='lower right')
fig.suptitle(f"digits (resnet_small, {HP['epochs']} epochs, {len(HP['seeds'])} seed(s), {HP['threads']} CPU threads): "
             f"labels = target rate r (green: the AST rate it matches)", fontsize=9)
fig.tight_layout(); fig.savefig(out.with_suffix('.png'), dpi=120)

print(headline)
print(json.dumps(verdicts, indent=1))
print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} in {res['runtime_s']:.0f} s")
tmp.cleanup()
