"""What every CPU benchmark here needs: a record of the code and machine, and honest timing on a shared machine.

Other processes (tests, other runs) can share the cores. With as many torch threads as cores, a competing process
slows the work by much more than its share of the CPUs (OpenMP threads wait at barriers for a descheduled partner).
So each measurement records the share of the CPUs that *other* processes used meanwhile (/proc/stat minus our own
CPU time), the scripts wait for quiet before timing, and summaries use the clean measurements.
"""
import math, os, platform, statistics, subprocess, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK, NCPU = os.sysconf('SC_CLK_TCK'), os.cpu_count()

def git_state():
    "HEAD and any uncommitted library files: what code produced these numbers."
    try:
        run = lambda *a: subprocess.run(['git', *a], capture_output=True, text=True, cwd=ROOT).stdout
        return dict(head=run('rev-parse', '--short', 'HEAD').strip(),
                    library_files_changed=[l[3:] for l in run('status', '--porcelain', '--', 'astlab').splitlines()])
    except Exception: return None

def cpu_model():
    "The CPU's model name (from /proc/cpuinfo on Linux)."
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except Exception: return platform.processor()

def busy_s():
    "CPU seconds the whole machine has been busy (user+nice+system+irq+softirq+steal) since boot."
    v = [int(f) for f in open('/proc/stat').readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / CLK

def measure(fn):
    "Run fn; return (its result, wall seconds, share of the machine's cores that other processes used meanwhile)."
    w0, c0, b0 = time.perf_counter(), time.process_time(), busy_s()
    result = fn()
    wall, ours, busy = time.perf_counter() - w0, time.process_time() - c0, busy_s() - b0
    return result, wall, max(0.0, busy - ours) / (max(wall, 1e-9) * NCPU)

class Quiet:
    "Waits (within a per-call and a total budget) until other processes use < `share` of the machine."
    def __init__(self, share=0.10, per_call_s=60, budget_s=900):
        self.share, self.per_call_s, self.left, self.waits = share, per_call_s, budget_s, []
    def wait(self):
        "Sleep in 1-s samples until quiet or out of budget; return the others' share in the last sample."
        waited, budget = 0.0, min(self.per_call_s, self.left)
        while True:
            _, _, others = measure(lambda: time.sleep(1.0))
            if others < self.share or waited + 1 > budget: break
            waited += 1.0
        self.left -= waited; self.waits.append(waited)
        return others

def mean_std(xs):
    "Mean, sample standard deviation (0 for one value) and count."
    xs = list(xs)
    return dict(mean=statistics.mean(xs), std=statistics.stdev(xs) if len(xs) > 1 else 0.0, n=len(xs))

def train_run(config, label, overrides, quiet, out_dir):
    """One whole `astlab.lab.train.train` run on `config` with `overrides`, in this process; the numbers a comparison needs.

    `wall_s` is the whole run (data, every epoch's evaluation and checkpoint writes included); `train_s` counts the
    training steps only. `others_share` says how much of the machine other processes used meanwhile."""
    from astlab.config import load_config
    from astlab.lab.train import train
    from astlab.engine.meters import history_rows
    cfg = load_config(config, [*overrides, 'training.device=cpu', 'training.progress=false',
                               f'logging.output_dir={out_dir}'], env_file=None)
    quiet.wait()
    w0, c0, b0 = time.perf_counter(), time.process_time(), busy_s()
    res = train(cfg, progress=False, log=lambda *a: None)
    wall, ours = time.perf_counter() - w0, time.process_time() - c0
    others = max(0.0, busy_s() - b0 - ours) / (wall * NCPU)
    h, tot, bs = history_rows(res), res['totals'], cfg.training.batch_size
    # training steps only: a batch of every `bs` samples loaded (stale scoring loads only the drawn ones)
    loaded = 'samples_trained' if cfg.ast.scoring == 'stale' else 'samples_seen'
    train_s = sum(r['step_time_ms'] / 1e3 * math.ceil(r[loaded] / bs) for r in h)
    row = dict(label=label, overrides=list(overrides), seed=cfg.training.seed, final_val_acc=h[-1]['val_acc'],
               best_val_acc=res['best_accuracy'], gflops=tot['flops'] / 1e9, train_s=train_s, wall_s=wall,
               activation_rate=tot['activation_rate'], samples_seen=tot['samples_seen'],
               samples_scored=tot['samples_scored'], samples_trained=tot['samples_trained'],
               fwd_bwd_flops=res['flops_per_sample']['fwd_bwd'], fwd_flops=res['flops_per_sample']['fwd'],
               energy_savings=tot['energy_savings'], others_share=round(others, 3), complete=res['complete'])
    print(f"{label:>20} seed {row['seed']}: val {row['final_val_acc']:.3f} (best {row['best_val_acc']:.3f}), "
          f"{row['gflops']:7.1f} GFLOPs, train {train_s:5.1f} s, wall {wall:5.1f} s, active {row['activation_rate']:.3f}, "
          f"others used {others:.0%} of the CPUs", flush=True)
    return row

def png_folder(images:int, image_px:int, prefix:str='astlab-bench-'):
    """(TemporaryDirectory, its train/ root): an ImageFolder of `images` PNGs in 2 classes, 1.25x `image_px` on a side so
    a crop has room; class b's top half is darker (something to learn). The same files for the same arguments."""
    import tempfile
    import numpy as np
    from PIL import Image
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    root, rng = Path(tmp.name)/'train', np.random.default_rng(0)
    side = round(image_px * 1.25)
    for c in ('a', 'b'):
        (root/c).mkdir(parents=True)
        for i in range(images // 2):
            img = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            if c == 'b': img[: side // 2] //= 2
            Image.fromarray(img).save(root/c/f'{i}.png')
    return tmp, root

def machine_record(threads:int, t0:float, load0:tuple, shares:list, note:str='') -> dict:
    "What a comparison benchmark records about the machine: CPU, threads, load, runtime, and the others' CPU share."
    return dict(cpu_model=cpu_model(), logical_cpus=os.cpu_count(), torch_threads=threads,
                load_avg_start=load0, load_avg_end=os.getloadavg(), runtime_s=round(time.perf_counter() - t0),
                others_share_median=statistics.median(shares) if shares else None, runs_timed=len(shares),
                note='others_share: share of the CPUs other processes used during a run (benchmarks/common.py); '
                     'wall ratios are distorted when it is high' + note)

class Recorder:
    "A `measure` for `astlab.lab.compare.compare` that also keeps each run's others-share in `shares`."
    def __init__(self): self.shares = []
    def __call__(self, fn):
        res, wall, others = measure(fn); self.shares.append(others)
        return res, wall, round(others, 3)

def provenance() -> dict:
    "What produced a CPU benchmark's numbers: CPU, package versions, device, git state, the command."
    import sys, torch
    from astlab.lab.train import versions, device_info
    return dict(cpu=cpu_model(), versions=versions(), device=device_info(torch.device('cpu')), git=git_state(),
                command=' '.join(['python', *sys.argv]))

def write_json(out:Path, res:dict):
    "Write `res` to `out`.json (folders made), and say where."
    import json
    p = Path(out).with_suffix('.json'); p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(res, indent=2)); print(f"wrote {p}")
