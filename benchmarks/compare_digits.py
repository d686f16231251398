"""The equal-compute evidence of issue 13: `astlab-compare` on digits, clean and with 20 % of the training labels flipped.

At budgets 0.5 and 0.7 of the full run's counted FLOPs, every adaptive method on this astlab (ast, is, sb, and the
newer ones when present: infobatch, rholoss) against random at equal FLOPs, RS2 (when present) and budget-matched
full, 3 seeds, configs/digits_compare.yaml (resnet_tiny on 8x8 digits, 8 epochs). Each run is timed with
benchmarks/common.py's `measure`, which records the share of the CPUs other processes used meanwhile (wall ratios on a
shared machine are only as good as that share says). The runs live in results/compare_digits[_noisy]/ (ignored); the
outputs (compare.json/md/png + this machine's record) are copied to benchmarks/results/compare_digits[_noisy]/.

    python benchmarks/compare_digits.py --noise 0.2 --budgets 0.5            # one slice; slices sharing --out may
    python benchmarks/compare_digits.py --noise 0.2 --budgets 0.7 --wait-full # run side by side once the full runs exist
    python benchmarks/compare_digits.py --noise 0.2 --budgets 0.5 0.7        # all of it (finished runs are skipped)
"""
import argparse, json, os, shutil, statistics, sys, time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
import torch
from common import git_state, machine_record, Recorder
from astlab.lab.compare import compare, available_methods, Stopped

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--noise', type=float, default=0.0, help='dataset.label_noise (default 0: clean)')
ap.add_argument('--budgets', type=float, nargs='+', default=[0.5, 0.7])
ap.add_argument('--methods', nargs='+', default=['ast', 'is', 'sb', 'stale', 'infobatch', 'rholoss'],
                help='adaptive methods; those this astlab lacks are left out (and listed)')
ap.add_argument('--seeds', type=int, default=3)
ap.add_argument('--threads', type=int, default=1, help='torch threads per process (default 1: overlaps well on 2 cores)')
ap.add_argument('--wait-full', action='store_true', help='wait until the full runs of every seed exist (another slice runs them)')
ap.add_argument('--no-copy', action='store_true', help='do not copy the outputs to benchmarks/results')
args = ap.parse_args()

tag = 'compare_digits' + (f'_noisy{round(args.noise*100)}' if args.noise else '')
runs = Path('results')/tag             # relative to the repository root (the commands in compare.md stay portable)
have = set(available_methods())
methods = [m for m in args.methods if m in have]
absent = [m for m in args.methods if m not in have]
overrides = [f'dataset.label_noise={args.noise:g}'] if args.noise else []
torch.set_num_threads(args.threads)
os.chdir(ROOT)
if args.wait_full:
    while len(list(runs.glob('final_results_cmp_full_s*.json'))) < args.seeds: time.sleep(10)

timed = Recorder(); shares = timed.shares   # each run's others-share (benchmarks/common.py)

t0, load0 = time.perf_counter(), os.getloadavg()
try:
    rep = compare('configs/digits_compare.yaml', args.budgets, methods, seeds=args.seeds, out=runs, overrides=overrides,
                  log=lambda s: print(time.strftime('%H:%M:%S'), s, flush=True), measure=timed)
except Stopped as e: sys.exit(e.code)          # SIGTERM: the run is checkpointed; the same command resumes
machine = machine_record(args.threads, t0, load0, shares)
extra = dict(machine=machine, git=git_state(), methods_absent=absent, benchmark_command=' '.join(['python', *sys.argv]),
             finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'))
print(f"absent methods (not on this astlab yet): {absent}" if absent else "all requested methods present")
if not args.no_copy:
    dest = HERE/'results'/tag; dest.mkdir(parents=True, exist_ok=True)
    (dest/'compare.json').write_text(json.dumps(rep | extra, indent=1))
    for f in ('compare.md', 'compare.png'): shutil.copy(runs/f, dest/f)
    print(f"wrote {dest}")
