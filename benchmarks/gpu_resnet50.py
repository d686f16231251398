"""GPU throughput and energy: ResNet-50 at 224 px, full training vs AST at r in {0.1, 0.25, 0.5}, with and without full backward batches.

Runs unchanged on any CUDA GPU, Kaggle's included: ResNet-50 (random init, 1000 classes), 224 px, bf16 autocast
(fp16 + GradScaler on GPUs without native bf16, e.g. T4/P100, recorded), channels_last, synthetic data already on
the GPU (so the loader is never the bottleneck). Each method trains through the library (a `Learner` with
`SelectionCB`, as `astlab.lab.train` builds it; AST also with `backward_batch` = B, Selective Backprop's full-size
backprop batches) for warm-up epochs and then timed epochs of a fixed number of steps;
reported: training images/s (samples seen per second: AST still scores every image), median over the timed epochs
timed with CUDA events; NVML joules per epoch (`astlab.engine.meters.EnergyMeter`; a labelled TDP proxy where the board has
no energy counter); and the measured pieces of a step: t_score (no-grad forward, whole batch), t_fb(k) (forward +
backward on k images, measured at every k used: the batch and round(r*B)) and t_opt (one optimiser step, whose cost
does not shrink with r). `model_images_per_s` = B / (t_score + t_fb(round(r*B)) + t_opt) is a *model* (the sum of
the pieces: no overlap, no selection or gather cost, the subset size held at its mean), not a bound.

cudnn autotuning (`torch.backends.cudnn.benchmark`) is OFF by default: AST's subset size changes every step, and
with autotuning on every new size would be tuned inside the timed epochs and charged to AST. `--cudnn-benchmark`
turns it on and first warms every subset size 2..B (forward + backward), so the timed epochs meet no new shape.

    python benchmarks/gpu_resnet50.py              # writes benchmarks/results/gpu_resnet50_<gpu-name>.json
    python benchmarks/gpu_resnet50.py --dry-run    # CPU smoke test of the code path (tiny sizes), writes nothing

Without a CUDA GPU it prints "no CUDA GPU: skipped" and exits 0 (nothing written). On Kaggle: attach the repo (or
`pip install` its wheel), enable a GPU accelerator, and run the command above from the repository root.
"""
# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------
import argparse, copy, json, os, platform, re, statistics, sys, time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))   # run from a checkout without installing

import torch

HP = dict(
    model='resnet50',            # torchvision ResNet-50, random init
    num_classes=1000,
    image_size=224,              # pixels, square
    batch_size=None,             # images per step; None: 256 on GPUs with >= 40 GiB, else 128 (fits 16 GB boards)
    rates=(0.1, 0.25, 0.5),      # AST target activation r
    steps_per_epoch=50,          # optimiser steps in one (synthetic) epoch
    warmup_epochs=1,             # untimed epochs per method (cudnn autotuning, allocator, the controller settling)
    epochs=3,                    # timed epochs per method; medians over these
    piece_repeats=20,            # timed repeats of each measured piece (after 5 warm-up)
    lr=0.1,                      # SGD, Nesterov momentum 0.9, weight decay 5e-5 (values do not affect speed)
    data_batches=4,              # distinct synthetic batches kept on the GPU and cycled
    seed=0,
    cudnn_benchmark=False,       # autotune convolutions (then every subset size is warmed before timing)
)

ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
ap.add_argument('--batch-size', type=int, help='images per step (default: 256 with >= 40 GiB of GPU memory, else 128)')
ap.add_argument('--steps', type=int, default=HP['steps_per_epoch'], help='steps per epoch (default %(default)s)')
ap.add_argument('--epochs', type=int, default=HP['epochs'], help='timed epochs per method (default %(default)s)')
ap.add_argument('--out-dir', default=str(HERE/'results'), help='where the JSON goes (default %(default)s)')
ap.add_argument('--dry-run', action='store_true', help='CPU smoke test: tiny sizes, fp32, nothing written')
ap.add_argument('--cudnn-benchmark', action='store_true', help='autotune convolutions, after warming every subset size')
args = ap.parse_args()

if not torch.cuda.is_available() and not args.dry_run:
    print("no CUDA GPU: skipped (benchmarks/gpu_resnet50.py needs a CUDA GPU; nothing written)")
    sys.exit(0)

try:
    from astlab.engine.models import create_model
    from astlab.engine.learner import Learner, Callback
    from astlab.methods.per_batch import SelectionCB
    from astlab.core.selection import make_selector
    from astlab.core.significance import get_scorer
    from astlab.engine.meters import EnergyMeter, Timer, count_flops
    from astlab.config import load_config
    from astlab.engine.learner import CancelFitException
    from astlab.lab.train import train, versions, device_info, resolve_amp
except ImportError as e:
    print(f"cannot import astlab ({e}): run from the repository root after `pip install -e .` (or install the wheel)")
    sys.exit(1)

if args.dry_run:
    device, amp_dtype, amp_note = torch.device('cpu'), None, 'dry run on CPU: fp32'
    HP.update(image_size=32, batch_size=8, steps_per_epoch=2, warmup_epochs=1, epochs=1, piece_repeats=2, data_batches=1)
    HP['cudnn_benchmark'] = args.cudnn_benchmark   # (no cudnn here: exercises the shape warm-up's code path)
else:
    device = torch.device('cuda', torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    amp_dtype, amp_note = resolve_amp(True, device)   # the trainer's rule: bf16 from sm80 on, else fp16 + GradScaler
    HP.update(steps_per_epoch=args.steps, epochs=args.epochs)
    HP['batch_size'] = args.batch_size or (256 if props.total_memory >= 40 * 2**30 else 128)
    HP['cudnn_benchmark'] = args.cudnn_benchmark
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
torch.manual_seed(HP['seed'])
B, S = HP['batch_size'], HP['image_size']
started_at = datetime.now(timezone.utc).isoformat(timespec='seconds')
t_script = time.perf_counter()

# ---------------------------------------------------------------------------------------------------------------------
# Data and network: synthetic batches on the device; one initial model copied for every method
# ---------------------------------------------------------------------------------------------------------------------
g = torch.Generator().manual_seed(HP['seed'])
pool = []
for _ in range(HP['data_batches']):
    x = torch.randn(B, 3, S, S, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    pool.append((x, torch.randint(0, HP['num_classes'], (B,), generator=g).to(device), torch.arange(B)))
epoch_batches = [pool[i % len(pool)] for i in range(HP['steps_per_epoch'])]

model0 = create_model(HP['model'], HP['num_classes']).to(device).to(memory_format=torch.channels_last)
flops = count_flops(model0, S, device=device)

def fresh():
    "A copy of the initial model and its optimiser (every method starts from the same weights)."
    m = copy.deepcopy(model0)
    opt = torch.optim.SGD(m.parameters(), lr=HP['lr'], momentum=0.9, nesterov=True, weight_decay=5e-5)
    return m, opt

def autocast(): return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

# ---------------------------------------------------------------------------------------------------------------------
# The measured pieces: t_score (no-grad forward, whole batch), t_fb(k) (forward + backward on k images), t_opt (step)
# ---------------------------------------------------------------------------------------------------------------------
def time_piece(fn, repeats):
    t = Timer(device)
    for _ in range(5 if not args.dry_run else 1): fn()
    for _ in range(repeats):
        t.start(); fn(); t.stop()
    return statistics.median(t.laps)

m, opt = fresh(); m.train()
x0, y0, _ = pool[0]
def score_pass():
    with torch.no_grad(), autocast(): m(x0)
def fwd_bwd(k):
    "Forward + backward on the first k images (gradients accumulate; the optimiser is timed apart)."
    def f():
        with autocast(): loss = torch.nn.functional.cross_entropy(m(x0[:k]).float(), y0[:k])
        loss.backward()
    return f
def opt_step():
    opt.step(); opt.zero_grad(set_to_none=False)   # grads kept (zeroed in place) so every repeat steps all parameters
if HP['cudnn_benchmark']:   # warm every shape the AST loop can meet, so no autotuning happens inside a timed epoch
    score_pass()
    for k in range(2, B + 1): fwd_bwd(k)()   # (AST trains at least 2)
    opt.zero_grad(set_to_none=True)
sizes = sorted({B} | {max(2, round(r * B)) for r in HP['rates']})
t_score = time_piece(score_pass, HP['piece_repeats'])
t_fb = {k: time_piece(fwd_bwd(k), HP['piece_repeats']) for k in sizes}
fwd_bwd(B)(); t_opt = time_piece(opt_step, HP['piece_repeats'])
t_full = t_fb[B] + t_opt
del m, opt

# ---------------------------------------------------------------------------------------------------------------------
# The library's training loop, per method: CUDA-event time and NVML energy per epoch
# ---------------------------------------------------------------------------------------------------------------------
class EpochMeter(Callback):
    order = 10_000   # after the other callbacks' epoch-end work
    def __init__(self):
        self.timer, self.energy, self.joules, self.active = Timer(device), EnergyMeter(device), [], []
    def before_train(self): self.energy.start(); self.timer.start()
    def after_train(self):
        self.timer.stop(); self.joules.append(self.energy.read())   # read() waits for the GPU
        s = self.learn.cb(SelectionCB).epoch_stats
        self.active.append(s['trained'] / max(s['seen'], 1))

def run_method(method, r, extra_cbs=(), backward_batch=None):
    "`backward_batch`: gather the selected samples and train B at a time (`ast.backward_batch: full`)."
    m, opt = fresh()
    meter = EpochMeter()
    sel = make_selector(method, target=r)
    cbs = [SelectionCB(sel, get_scorer('significance', entropy_weight=1.0), generator=torch.Generator().manual_seed(1),
                       backward_batch=backward_batch), meter, *extra_cbs]
    learn = Learner(m, epoch_batches, None, opt, cbs=cbs, device=device, amp_dtype=amp_dtype, channels_last=True)
    learn.fit(HP['warmup_epochs'] + HP['epochs'])
    laps = meter.timer.laps[HP['warmup_epochs']:]
    joules = meter.joules[HP['warmup_epochs']:]
    t = statistics.median(laps)
    row = dict(method=method, rate=r, backward_batch=backward_batch, callbacks=[type(c).__name__ for c in cbs if c is not meter], epoch_s=laps, images_per_s=B * HP['steps_per_epoch'] / t,
               trained_images_per_s=B * HP['steps_per_epoch'] * statistics.mean(meter.active[HP['warmup_epochs']:]) / t,
               activation_rate=statistics.mean(meter.active[HP['warmup_epochs']:]),
               joules_per_epoch=statistics.median(joules), joules_per_image=statistics.median(joules) / (B * HP['steps_per_epoch']),
               energy_source=meter.energy.source)
    if method != 'full' and backward_batch:   # gathered: B / t_fb(B) trained per pass, every 1/r batches
        row['model_images_per_s'] = B / (t_score + row['activation_rate'] * (t_fb[B] + t_opt))
        row['fraction_of_model'] = row['images_per_s'] / row['model_images_per_s']
    elif method != 'full':   # the sum of the measured pieces at the subset size: a model, not a bound
        k = max(2, round(r * B))
        row['model_images_per_s'] = B / (t_score + t_fb[k] + t_opt)
        row['fraction_of_model'] = row['images_per_s'] / row['model_images_per_s']
    else: row['model_images_per_s'] = B / t_full
    print(f"{method:>5} r={r:<5}{' gathered' if backward_batch else ''}: {row['images_per_s']:8.1f} images/s, {row['joules_per_epoch']:8.1f} J/epoch "
          f"({row['energy_source']}), active {row['activation_rate']:.3f}", flush=True)
    del learn, m, opt
    if device.type == 'cuda': torch.cuda.empty_cache()
    return row

rows = [run_method('full', 1.0)]
for r in HP['rates']:
    rows.append(run_method('ast', r))
    rows.append(run_method('ast', r, backward_batch=B) | dict(label='ast + full backward batches'))
    rows.append(run_method('topk', r))   # exact k = round(r*B): the step's cost without the controller's variation

# The same AST step with the meters and callbacks `train()` adds (taken from a train() call that stops before its
# first step): on a GPU a callback that reads a value back each step stalls the pipeline, so this is measured too.
import tempfile
tmp = tempfile.TemporaryDirectory(prefix='astlab-gpu-bench-')
class Grab(Callback):
    order = -100_000
    def before_fit(self): self.cbs = list(self.learn.cbs); raise CancelFitException()
grab, r_cb = Grab(), 0.25
train(load_config(None, [f"model.name={HP['model']}", 'dataset.type=synthetic', f'dataset.image_size={S}',
                         f'dataset.num_samples={2*B}', f"dataset.num_classes={HP['num_classes']}", f'training.batch_size={B}',
                         'training.epochs=1', f'training.device={device.type}', 'ast.method=ast',
                         f'ast.target_activation={r_cb}', f'logging.output_dir={tmp.name}'], env_file=None),
      progress=False, log=lambda *a: None, extra_cbs=(grab,))
train_cbs = [c for c in grab.cbs if not isinstance(c, (Grab, SelectionCB))]
rows.append(run_method('ast', r_cb, extra_cbs=train_cbs) | dict(label='ast + train() callbacks'))
ast_same = next(x for x in rows if x['method'] == 'ast' and x['rate'] == r_cb and 'label' not in x)
callback_overhead_pct = 100 * (ast_same['images_per_s'] / rows[-1]['images_per_s'] - 1)
tmp.cleanup()

full = rows[0]
for row in rows[1:]:
    row['speedup_vs_full'] = row['images_per_s'] / full['images_per_s']
    row['energy_vs_full'] = row['joules_per_epoch'] / full['joules_per_epoch'] if full['joules_per_epoch'] else None

# ---------------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------------
gpu = dict(name='cpu (dry run)')
if device.type == 'cuda':
    gpu = dict(name=torch.cuda.get_device_name(device), memory_gib=round(props.total_memory / 2**30, 1),
               capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version(), count=torch.cuda.device_count())
    try:
        import pynvml
        pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        gpu |= dict(driver=pynvml.nvmlSystemGetDriverVersion(),
                    power_limit_w=pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1e3)
    except Exception: pass
res = dict(benchmark='gpu_resnet50', started_at=started_at, finished_at=datetime.now(timezone.utc).isoformat(timespec='seconds'),
           runtime_s=time.perf_counter() - t_script, hyperparameters=HP, amp=amp_note, channels_last=True,
           flops_per_sample=flops, pieces=dict(t_score_ms=1e3 * t_score, t_fwd_bwd_ms={str(k): 1e3 * v for k, v in t_fb.items()},
                                               t_opt_ms=1e3 * t_opt, t_full_ms=1e3 * t_full),
           methods=rows, callback_overhead_pct=callback_overhead_pct, gpu=gpu, device=device_info(device), versions=versions(),
           command=' '.join(['python', *sys.argv]),
           note='images_per_s: images seen (AST scores all of them) per second of training, median over timed epochs '
                '(CUDA events); model_images_per_s = B / (t_score + t_fb(round(r*B)) + t_opt), the sum of the measured '
                'pieces (a model: no overlap, no selection cost), full: B / (t_fb(B) + t_opt); cudnn.benchmark as in '
                'hyperparameters (off: the subset size varies every step); joules from NVML when energy_source is nvml.')
if args.dry_run:
    print(json.dumps(dict(pieces=res['pieces'], callback_overhead_pct=callback_overhead_pct,
                          methods=[{k: r[k] for k in ('method', 'rate', 'backward_batch', 'images_per_s', 'model_images_per_s', 'callbacks')}
                                   for r in rows]), indent=1))
    print('dry run: nothing written')
else:
    name = re.sub(r'[^A-Za-z0-9]+', '-', gpu['name']).strip('-').lower()
    path = Path(args.out_dir) / f'gpu_resnet50_{name}.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2))
    print(f"wrote {path}")
