"""What `SparseStep.select` costs on top of the score pass it cannot avoid.

`step.select(x, y)` = a no-grad forward of the whole batch + significance scores (the *bare score pass*, which any
AST loop pays) + the selector (median/MAD normalisation, threshold, controller update, one host sync), the counters and
the subset copy (`x[sel]`, `y[sel]`) and weights. This script times both on the same model and batch:

    overhead = median(select) - median(bare score pass)        (per batch, and as a % of the bare score pass)

Honest timing on a shared machine (benchmarks/common.py): warm-up first; each round runs both in a shuffled order; each
timed round first waits (within a budget) for other processes to go quiet and records the CPU share others used;
medians over the clean rounds (others < 10 %) when there are enough, else over all (and the JSON says so).

    python benchmarks/api_overhead.py              # the committed protocol: 3 models, 5 warm-up + 30 timed rounds
    python benchmarks/api_overhead.py --quick      # smoke run: tiny sizes, 1 + 3 rounds (schema only)
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, json, os, random, statistics, sys, time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing
sys.path.insert(0, str(HERE))

from astlab import SparseStep
from astlab.engine.models import create_model
from astlab.core.significance import significance
from astlab.lab.train import versions, device_info
from common import Quiet, measure, git_state, cpu_model

p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
p.add_argument('--quick', action='store_true', help='tiny sizes and few rounds (smoke test)')
p.add_argument('--threads', type=int, default=2, help='torch threads')
p.add_argument('--wait-budget', type=float, default=600, help='total seconds to wait for a quiet machine')
p.add_argument('--out', default=str(HERE/'results'/'api_overhead'), help='output path without suffix')
a = p.parse_args()
torch.set_num_threads(a.threads)

#            name            model           image  batch  batches per timing
CASES = [('resnet_tiny_32', 'resnet_tiny',    32,   128,   4),
         ('resnet_small_32', 'resnet_small',  32,   128,   2),
         ('mlp_64', 'mlp',                    None, 256,  50)]   # a tiny model: the selector's share is largest here
WARMUP, ROUNDS = (1, 3) if a.quick else (5, 30)
if a.quick: CASES = [(n, m, s and 16, 32, 1) for n, m, s, b, k in CASES]

def make(model_name, size, bs):
    torch.manual_seed(0)
    if model_name == 'mlp':
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
        x = torch.randn(bs, 64)
    else:
        model, x = create_model(model_name, 10), torch.randn(bs, 3, size, size)
    return model.train(), x, torch.randint(0, 10, (bs,))

# ---------------------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------------------
quiet, rows, summary = Quiet(budget_s=a.wait_budget), [], {}
for name, model_name, size, bs, reps in CASES:
    model, x, y = make(model_name, size, bs)
    step = SparseStep(model, target=0.25)
    def bare():
        for _ in range(reps):
            with torch.no_grad(): logits = model(x)
            significance(logits, y).sum().item()          # the score pass ends with the scores on the host side too
    def sel():
        for _ in range(reps):
            xs, ys, w = step.select(x, y); step.unfreeze()   # no train forward here: switch BN tracking back on
    fns = dict(bare=bare, select=sel)
    times = {k: [] for k in fns}; others = {k: [] for k in fns}
    for r in range(WARMUP + ROUNDS):
        if r >= WARMUP: quiet.wait()
        for k in random.sample(list(fns), len(fns)):
            _, wall, oth = measure(fns[k])
            if r >= WARMUP: times[k].append(wall / reps); others[k].append(oth)
    clean = [i for i in range(ROUNDS) if max(others['bare'][i], others['select'][i]) < 0.10]
    use = clean if len(clean) >= max(3, ROUNDS // 3) else list(range(ROUNDS))
    med = {k: statistics.median(times[k][i] for i in use) for k in fns}
    summary[name] = dict(batch=bs, bare_score_ms=med['bare'] * 1e3, select_ms=med['select'] * 1e3,
                         overhead_ms=(med['select'] - med['bare']) * 1e3,
                         overhead_pct=100 * (med['select'] - med['bare']) / med['bare'],
                         rounds=ROUNDS, clean_rounds=len(clean), used='clean' if use is clean else 'all',
                         final_rate=step.rate)
    rows.append(dict(case=name, times_s=times, others_share=others))
    print(json.dumps({name: {k: round(v, 4) if isinstance(v, float) else v for k, v in summary[name].items()}}))

# ---------------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------------
res = dict(summary=summary, rounds=rows, warmup=WARMUP, threads=a.threads, quick=a.quick,
           noise=dict(load_avg_end=os.getloadavg(), waits_s=sum(quiet.waits)),
           device=device_info(torch.device('cpu')) | dict(cpu_model=cpu_model(), logical_cpus=os.cpu_count()),
           versions=versions(), git=git_state(), command=' '.join([Path(sys.executable).name, *sys.argv]),
           created_at=datetime.now(timezone.utc).isoformat(timespec='seconds'))
out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
out.with_suffix('.json').write_text(json.dumps(res, indent=2))
print(f"wrote {out.with_suffix('.json')}")
