"""Issue 19's "the digits compare's per-batch methods save wall time in proportion": astlab-compare on digits
(configs/digits_compare.yaml, 8 epochs) at budget 0.5 with `ast.backward_batch` off and full, 3 seeds, on quiet cores.
Per method: counted FLOPs / full, training wall / full (`totals.train_wall_s`: no evaluation, no checkpoints) and their
quotient (1.0 = wall time follows the FLOPs). Writes benchmarks/results/compare_wall.json.

    python benchmarks/compare_wall.py            # about 6 min on 2 idle cores
"""
import argparse, json, os, statistics, sys, time
from pathlib import Path
HERE = Path(__file__).resolve().parent; ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
import torch
from common import git_state, cpu_model, Recorder
from astlab.lab.compare import compare

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--seeds', type=int, default=3)
ap.add_argument('--threads', type=int, default=2)
ap.add_argument('--methods', nargs='+', default=['ast', 'is', 'sb', 'null'])
args = ap.parse_args()
torch.set_num_threads(args.threads); os.chdir(ROOT)
timed = Recorder(); shares = timed.shares   # each run's others-share (benchmarks/common.py)
out = {}
for bb in ('off', 'full'):
    rep = compare('configs/digits_compare.yaml', [0.5], args.methods, seeds=args.seeds, out=Path('results')/f'compare_wall_{bb}',
                  overrides=[f'ast.backward_batch={bb}'], baselines=('random', 'full_budget'), log=lambda s: print(s, flush=True),
                  measure=timed)
    out[bb] = {s['method']: dict(flops_ratio=s['flops_ratio'], wall_ratio=s['wall_ratio'], whole_wall_ratio=s['whole_wall_ratio'],
                                 wall_per_flops=s['wall_ratio'] / s['flops_ratio'] if s['flops_ratio'] else None,
                                 final_accuracy=s['final_accuracy']['mean'])
               for s in rep['summary']}
res = dict(command=' '.join(['python', *sys.argv]), git=git_state(), cpu_model=cpu_model(), torch_threads=args.threads,
           others_share_median=statistics.median(shares), others_share_max=max(shares), per_backward_batch=out,
           note='wall_ratio: training wall (totals.train_wall_s) / full\'s; wall_per_flops = wall_ratio / flops_ratio')
(HERE/'results'/'compare_wall.json').write_text(json.dumps(res, indent=1))
for bb, ms in out.items():
    print(bb, {m: round(v['wall_per_flops'], 2) for m, v in ms.items() if v['wall_per_flops']})
