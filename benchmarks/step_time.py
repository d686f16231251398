"""Step time: one full training step vs one AST step, on the same model and batch, against the compute bound.

AST's step is a no-grad score pass over the whole batch plus forward+backward+optimizer step on the k = r*B
selected samples, so it can never cost less than

    bound(r) = t_score + r * t_full        (t_full: forward+backward+step on the whole batch)

This script measures the pieces, the real library step (a `Learner` with `SelectionCB`, timed around whole
`_one_batch` calls), checks the goal "AST step <= 1.10x bound at every r", and measures what the meters and
callbacks that `train()` adds cost per step (goal < 2 %).

Honest timing: everything runs in one process on one model; each round runs every configuration once in a
shuffled order (so a burst of load from another process hits all of them alike); warm-up rounds first; medians
(and quartiles) over the timed rounds; no evaluation inside the timed region. On a shared machine, each timed round
first waits (within a budget) for other processes to go quiet, every measurement records the share of the CPUs
other processes used meanwhile (/proc/stat), and medians are taken over the clean measurements (< 10 %) when there
are enough of them. With 2 torch threads on 2 cores, a competing process slows a step 2-10x, not 2x.

    python benchmarks/step_time.py                 # the committed protocol: 5 warm-up + 20 timed rounds
    python benchmarks/step_time.py --quick         # what `make bench` runs: 2 warm-up + 6 timed rounds (3 min)
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, json, os, platform, random, statistics, sys, tempfile, time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing

from astlab.config import load_config
from astlab.engine.models import create_model
from astlab.core.selection import make_selector
from astlab.core.significance import get_scorer
from astlab.engine.learner import Learner, Callback, CancelFitException
from astlab.methods.per_batch import SelectionCB
from astlab.engine.meters import flops_per_sample
from astlab.lab.train import train, make_optimizer, seed_everything, versions, device_info
from common import git_state, busy_s, measure, cpu_model

HP = dict(
    model='resnet18_cifar',       # astlab.engine.models name: CIFAR ResNet-18 (11.2 M params, 3x3 stem, no max-pool)
    image_size=32,                # pixels, square
    batch_size=128,               # samples per step (B)
    num_classes=10,
    rates=(0.1, 0.25, 0.5),       # AST target activation r; k = round(r * B) samples trained per step
    threads=2,                    # torch intra-op threads (recorded; set explicitly)
    warmup=5,                     # untimed rounds first (allocator, caches, the AST controller settling)
    repeats=20,                   # timed rounds; every configuration runs once per round; medians over these
    goal_bound_ratio=1.10,        # AST step <= 1.10 x (t_score + r * t_full)
    goal_overhead_pct=2.0,        # meters + callbacks < 2 % of step time
    overhead_rate=0.25,           # rate at which the callback overhead is measured
    quiet_share=0.10,             # before a timed round, wait until other processes use < 10 % of the CPUs ...
    wait_per_round_s=30,          # ... for at most 30 s per round
    wait_budget_s=300,            # ... and 300 s in all (then measure anyway, and say so)
    clean_share=0.10,             # a measurement is clean if other processes used < 10 % of the CPUs meanwhile
    min_clean=5,                  # medians over clean measurements when there are at least this many, else all
    seed=0,
)

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--repeats', type=int, default=HP['repeats'], help='timed rounds (default %(default)s)')
ap.add_argument('--warmup', type=int, default=HP['warmup'], help='untimed warm-up rounds (default %(default)s)')
ap.add_argument('--threads', type=int, default=HP['threads'], help='torch threads (default %(default)s)')
ap.add_argument('--wait-budget', type=float, default=HP['wait_budget_s'],
                help='seconds in all to wait for other processes to go quiet (default %(default)s)')
ap.add_argument('--quick', action='store_true', help='what `make bench` runs: 2 warm-up + 6 timed rounds, 30 s of '
                'waiting at most; writes step_time_cpu_quick.json/png')
ap.add_argument('--out', help='output path without extension (default benchmarks/results/step_time_cpu[_quick])')
args = ap.parse_args()
HP.update(repeats=args.repeats, warmup=args.warmup, threads=args.threads, wait_budget_s=args.wait_budget)
if args.quick: HP.update(repeats=6, warmup=2, wait_budget_s=30)
out = Path(args.out or HERE/'results'/('step_time_cpu_quick' if args.quick else 'step_time_cpu'))

torch.set_num_threads(HP['threads'])
torch.set_num_interop_threads(1)
seed_everything(HP['seed'])
device = torch.device('cpu')

git = git_state()
load_start = os.getloadavg()
started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
t_script = time.perf_counter()

# ---------------------------------------------------------------------------------------------------------------------
# Data and network: one fixed synthetic batch (timing does not depend on the pixels), one model, one optimiser
# ---------------------------------------------------------------------------------------------------------------------
B, S = HP['batch_size'], HP['image_size']
g = torch.Generator().manual_seed(HP['seed'])
xb = torch.randn(B, 3, S, S, generator=g)
yb = torch.randint(0, HP['num_classes'], (B,), generator=g)
idx = torch.arange(B)
batch = (xb, yb, idx)

cfg = load_config(None, [f"model.name={HP['model']}", f"training.batch_size={B}", 'training.lr=0.01',
                         'training.progress=false', 'training.device=cpu'], env_file=None)
model = create_model(HP['model'], HP['num_classes']).to(device)
opt = make_optimizer(model, cfg)      # SGD, Nesterov momentum 0.9, weight decay 5e-4 (the library default)
model.train()
flops = flops_per_sample(model, S, device)
ks = {r: int(r * B + 0.5) for r in HP['rates']}

# ---------------------------------------------------------------------------------------------------------------------
# The measured pieces, written out by hand (no library code on the path)
# ---------------------------------------------------------------------------------------------------------------------
def score_pass():
    "No-grad forward on the whole batch (the model in training mode, as in `SelectionCB`)."
    with torch.no_grad(): model(xb)

def train_step(k):
    "Forward + backward + optimiser step on the first k samples."
    loss = F.cross_entropy(model(xb[:k]).float(), yb[:k])
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

# ---------------------------------------------------------------------------------------------------------------------
# The library's step: a Learner whose callbacks time each whole batch (before_batch ... after_batch)
# ---------------------------------------------------------------------------------------------------------------------
class BatchStart(Callback):
    order = -10_000                       # first in before_batch
    def before_batch(self): self.learn._t0 = time.perf_counter()

class BatchStop(Callback):
    order = 10_000                        # last in after_batch
    def __init__(self): self.times, self.active = [], []
    def after_batch(self):
        L = self.learn
        self.times.append(time.perf_counter() - L._t0)
        self.active.append(int(L.selected.sum()) if getattr(L, 'selected', None) is not None else len(L.yb))

class TimedLearner(Learner):
    "A Learner that also adds up the time spent inside callbacks other than selection and the timers themselves."
    def __call__(self, event):
        for cb in self.cbs:
            f = getattr(cb, event, None)
            if f is None: continue
            if isinstance(cb, (SelectionCB, BatchStart, BatchStop)): f(); continue
            t = time.perf_counter(); f(); self.cb_s[event] += time.perf_counter() - t

# The meters and callbacks `train()` adds (default config, progress bar off): taken from a train() call on this
# model/batch config that stops before its first step, so this list is exactly the library's, whatever it holds.
tmp = tempfile.TemporaryDirectory(prefix='astlab-bench-')

class Grab(Callback):
    order = -100_000
    def before_fit(self): self.cbs = list(self.learn.cbs); raise CancelFitException()

grab = Grab()
train(load_config(None, [f"model.name={HP['model']}", 'dataset.type=synthetic', f'dataset.image_size={S}',
                         f'dataset.num_samples={2*B}', f'dataset.num_classes={HP["num_classes"]}',
                         f"training.batch_size={B}", 'training.epochs=1', 'training.device=cpu',
                         "ast.method=topk", f"ast.target_activation={HP['overhead_rate']}",
                         f'logging.output_dir={tmp.name}'], env_file=None),
      progress=False, log=lambda *a: None, extra_cbs=(grab,))
train_cbs = [c for c in grab.cbs if not isinstance(c, (Grab, SelectionCB))]

def make_learner(method, r=1.0, full_cbs=False):
    "Learner over a one-batch 'epoch'; `full_cbs`: also the callbacks train() adds."
    sel = make_selector(method, target=r)
    cbs = [SelectionCB(sel, get_scorer('significance', entropy_weight=1.0), generator=torch.Generator().manual_seed(1)),
           BatchStart(), BatchStop()]
    if full_cbs: cbs += train_cbs
    L = TimedLearner(model, [batch], None, opt, cbs=cbs, device=device)
    L.cb_s = defaultdict(float)
    return L

learners = {'lib_full': make_learner('full')}
for r in HP['rates']:
    learners[f'lib_topk_{r}'] = make_learner('topk', r)
    learners[f'lib_ast_{r}'] = make_learner('ast', r)
learners[f"lib_topk_{HP['overhead_rate']}_full_cbs"] = make_learner('topk', HP['overhead_rate'], full_cbs=True)

def run_learner(name):
    L = learners[name]; L.fit(1)
    return L.cb(BatchStop).times[-1]

# ---------------------------------------------------------------------------------------------------------------------
# Contention: other processes may share these cores. `common.measure` says what share of the machine the others took
# during a measurement (/proc/stat minus our own CPU time); it is "clean" when they took < 10 % of it meanwhile.
# ---------------------------------------------------------------------------------------------------------------------
def wait_for_quiet(budget_s):
    "Sleep in 1-s samples until other processes use < quiet_share of the machine, or `budget_s` runs out."
    waited = 0.0
    while True:
        _, _, others = measure(lambda: time.sleep(1.0))
        if others < HP['quiet_share'] or waited + 1 > budget_s: return waited, others
        waited += 1.0

# ---------------------------------------------------------------------------------------------------------------------
# Timing: warm-up rounds, then timed rounds; each round runs every configuration once, in a shuffled order
# ---------------------------------------------------------------------------------------------------------------------
def timed(fn):
    def run():
        t0 = time.perf_counter(); fn(); return time.perf_counter() - t0
    return run

configs = {'score_pass': timed(score_pass), 'full_step': timed(lambda: train_step(B))}
for r, k in ks.items(): configs[f'subset_step_{r}'] = timed(lambda k=k: train_step(k))
for name in learners: configs[name] = lambda name=name: run_learner(name)

samples = defaultdict(list)        # name -> [(seconds, others' share of the machine meanwhile)]
rng, wait_left, waits = random.Random(HP['seed']), HP['wait_budget_s'], []
for rnd in range(HP['warmup'] + HP['repeats']):
    warm = rnd < HP['warmup']
    if not warm:
        waited, others = wait_for_quiet(min(wait_left, HP['wait_per_round_s']))
        wait_left -= waited; waits.append(dict(round=rnd + 1, waited_s=waited, others_share=round(others, 3)))
    order = list(configs); rng.shuffle(order)
    w0 = time.perf_counter()
    for name in order:
        dt, _, others = measure(configs[name])
        if not warm: samples[name].append((dt, others))
    print(f"round {rnd + 1}/{HP['warmup'] + HP['repeats']}{' (warm-up)' if warm else ''}: {time.perf_counter() - w0:.1f} s"
          + ('' if warm else f", others used {statistics.mean(o for n in order for _, o in samples[n][-1:]):.0%} of the CPUs"),
          flush=True)

# ---------------------------------------------------------------------------------------------------------------------
# Results: medians over the clean measurements (when there are at least `min_clean`), else over all, flagged
# ---------------------------------------------------------------------------------------------------------------------
def stats(pairs):
    clean = [t for t, o in pairs if o < HP['clean_share']]
    xs, basis = (clean, 'clean') if len(clean) >= HP['min_clean'] else ([t for t, _ in pairs], 'all')
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return dict(median_ms=1e3*statistics.median(xs), p25_ms=1e3*q[0], p75_ms=1e3*q[2], min_ms=1e3*min(xs),
                n=len(xs), basis=basis, n_clean=len(clean), n_all=len(pairs),
                median_all_ms=1e3*statistics.median(t for t, _ in pairs))

times = {k: v for k, v in samples.items()}
med = {k: stats(v)['median_ms'] / 1e3 for k, v in times.items()}
t_score, t_full = med['score_pass'], med['full_step']
per_rate = {}
for r, k in ks.items():
    bound = t_score + r * t_full
    pieces = t_score + med[f'subset_step_{r}']
    row = dict(k=k, bound_ms=1e3*bound, pieces_sum_ms=1e3*pieces, subset_step=stats(times[f'subset_step_{r}']))
    for sel in ('topk', 'ast'):
        name = f'lib_{sel}_{r}'
        act = learners[name].cb(BatchStop).active[HP['warmup']:]
        bound_measured = t_score + statistics.mean(act) / B * t_full   # the bound at the rate actually trained
        row[sel] = dict(step=stats(times[name]), ratio_to_bound=med[name] / bound, ratio_to_pieces=med[name] / pieces,
                        ratio_to_bound_at_measured_rate=med[name] / bound_measured,
                        speedup_vs_full=med['lib_full'] / med[name], mean_active=statistics.mean(act),
                        active_min=min(act), active_max=max(act))
    row['speedup_bound_vs_full'] = t_full / bound
    per_rate[str(r)] = row

# Meters and callbacks: (a) time measured inside them per step (precise), (b) A/B difference of step medians (noisy).
ov_name, ref_name = f"lib_topk_{HP['overhead_rate']}_full_cbs", f"lib_topk_{HP['overhead_rate']}"
L_ov = learners[ov_name]
rounds = HP['warmup'] + HP['repeats']
batch_events = ('before_batch', 'after_pred', 'after_loss', 'after_backward', 'after_step', 'after_batch')
per_step_cb_s = sum(L_ov.cb_s[e] for e in batch_events) / rounds
epoch_end_s = sum(v for e, v in L_ov.cb_s.items() if e not in batch_events) / rounds
overhead = dict(
    rate=HP['overhead_rate'],
    callbacks=[type(c).__name__ for c in L_ov.cbs if not isinstance(c, (BatchStart, BatchStop))],
    in_callback_ms_per_step=1e3*per_step_cb_s,
    in_callback_pct_of_step=100*per_step_cb_s/med[ov_name],
    ab_step_ms=dict(selection_only=1e3*med[ref_name], full_callback_set=1e3*med[ov_name]),
    ab_difference_pct=100*(med[ov_name] - med[ref_name]) / med[ref_name],
    epoch_end_ms=1e3*epoch_end_s,
    epoch_end_pct_of_cifar10_epoch=100*epoch_end_s / (390 * med[ov_name]),
    note='callbacks: those train() builds (captured from a train() call), plus SelectionCB. in_callback_*: time '
         'measured inside the non-selection callbacks during a step (the figure the goal is checked on); ab_*: '
         'difference of two noisy medians, for reference; epoch_end_*: their epoch-end work (HistoryCB, CheckpointCB '
         'writing a 45 MB checkpoint, ...) amortised over a 390-step CIFAR-10 epoch at B=128.')

worst = max(per_rate[str(r)]['topk']['ratio_to_bound'] for r in HP['rates'])
worst_ast = max(per_rate[str(r)]['ast']['ratio_to_bound'] for r in HP['rates'])
goals = {
    'ast_step_le_1.10x_bound': dict(
        topk={str(r): round(per_rate[str(r)]['topk']['ratio_to_bound'], 3) for r in HP['rates']},
        ast={str(r): round(per_rate[str(r)]['ast']['ratio_to_bound'], 3) for r in HP['rates']},
        met=worst <= HP['goal_bound_ratio'], met_ast_selector=worst_ast <= HP['goal_bound_ratio']),
    'callbacks_lt_2pct': dict(measured_pct=round(overhead['in_callback_pct_of_step'], 3),
                              met=overhead['in_callback_pct_of_step'] < HP['goal_overhead_pct']),
}
all_others = [o for v in times.values() for _, o in v]
noise = dict(load_avg_start=load_start, load_avg_end=os.getloadavg(),
             others_share_median=statistics.median(all_others), others_share_max=max(all_others),
             clean_fraction=sum(o < HP['clean_share'] for o in all_others) / len(all_others),
             waits=waits, wait_total_s=sum(w['waited_s'] for w in waits),
             iqr_over_median_full=(stats(times['full_step'])['p75_ms'] - stats(times['full_step'])['p25_ms'])
                                  / stats(times['full_step'])['median_ms'],
             note='others_share: share of the CPUs that other processes used during a measurement (from /proc/stat '
                  'minus our own CPU time); measurements with others_share >= clean_share are left out of the '
                  'medians when enough clean ones remain (see each entry\'s basis / n_clean).')
res = dict(benchmark='step_time', started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
           runtime_s=time.perf_counter() - t_script, hyperparameters=HP,
           flops_per_sample=dict(fwd=flops['fwd'], fwd_bwd=flops['fwd_bwd']),
           pieces=dict(score_pass=stats(times['score_pass']), full_step=stats(times['full_step']),
                       lib_full_step=stats(times['lib_full'])),
           per_rate=per_rate, overhead=overhead, goals=goals, noise=noise,
           device=device_info(device) | dict(cpu_model=cpu_model(), logical_cpus=os.cpu_count()),
           versions=versions(), git=git, command=' '.join([Path(sys.executable).name, *sys.argv]))
out.parent.mkdir(parents=True, exist_ok=True)
out.with_suffix('.json').write_text(json.dumps(res, indent=2))

# ---------------------------------------------------------------------------------------------------------------------
# Chart: full step, AST step (topk / ast selectors) and the bound at each r
# ---------------------------------------------------------------------------------------------------------------------
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(8, 4.2))
labels, vals, errs, colors = ['full\n(library)', 'full\n(raw)'], [med['lib_full'], t_full], \
    [stats(times['lib_full']), stats(times['full_step'])], ['#555555', '#999999']
for r in HP['rates']:
    pr = per_rate[str(r)]
    labels += [f'bound\nr={r}', f'AST topk\nr={r}', f'AST ast\nr={r}']
    vals += [pr['bound_ms']/1e3, pr['topk']['step']['median_ms']/1e3, pr['ast']['step']['median_ms']/1e3]
    errs += [None, pr['topk']['step'], pr['ast']['step']]
    colors += ['#cccccc', '#1f77b4', '#ff7f0e']
ms = [1e3*v for v in vals]
yerr = [[0 if e is None else m - e['p25_ms'] for m, e in zip(ms, errs)], [0 if e is None else e['p75_ms'] - m for m, e in zip(ms, errs)]]
ax.bar(range(len(ms)), ms, color=colors, yerr=yerr, capsize=3)
for i, lab in enumerate(labels):   # the goal: each AST bar under the dashed 1.10 x bound line of its rate
    if lab.startswith('bound'): ax.hlines(HP['goal_bound_ratio'] * ms[i], i - 0.4, i + 2.4, colors='k', linestyles='--', lw=0.8)
ax.set_xticks(range(len(ms))); ax.set_xticklabels(labels, fontsize=7)
ax.set_ylabel('ms per step (median, bars: quartiles)')
ax.set_title(f"{HP['model']} {S}px, batch {B}, {HP['threads']} CPU threads: AST step vs bound t_score + r*t_full "
             f"(dashed: {HP['goal_bound_ratio']:.2f} x bound)", fontsize=9)
fig.tight_layout(); fig.savefig(out.with_suffix('.png'), dpi=120)

print(json.dumps(dict(goals=goals, t_score_ms=1e3*t_score, t_full_ms=1e3*t_full,
                      overhead_pct=overhead['in_callback_pct_of_step'], clean_fraction=noise['clean_fraction'],
                      runtime_s=res['runtime_s']), indent=2))
print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
tmp.cleanup()
