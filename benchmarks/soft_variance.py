"""What soft AST's knobs do to the gradient: bias and variance of each selector's weighted-subset gradient against the
whole batch's gradient, at one target rate, on digits.

Setup: a resnet_small trained on full data for a few epochs (so losses are spread as they are mid-training), then
frozen in eval mode (BatchNorm uses running statistics, so only the *selection* moves the gradient). For each of a few
batches, the reference is the gradient of the batch's mean loss; each selector draws `draws` subsets of it, and the
estimate is the gradient of the learner's loss, mean over the kept samples of w_i * loss_i (w = last_weights, 1 if
unweighted). Reported, relative to ||g||^2 and averaged over batches:
  bias2 = ||E[g_hat] - g||^2,  var = E||g_hat - E[g_hat]||^2,  mse = bias2 + var,  and the realised kept fraction.
The bias term has a floor of var/draws from estimating E[g_hat] with `draws` samples (reported as bias2_floor).

    python benchmarks/soft_variance.py            # ~5 min on 2 idle cores; writes results/soft_variance.json
    python benchmarks/soft_variance.py --threads 1   # on a busy machine (2 OpenMP threads stall when one is descheduled)
"""
import json, math, sys, time
from pathlib import Path
import torch, torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import git_state, cpu_model
from astlab.config import load_config
from astlab.engine.data import get_dataloaders
from astlab.engine.models import create_model
from astlab.core.selection import make_selector, SelectionState
from astlab.core.significance import get_scorer

# ---------------------------------------------------------------------------------------------------- Setup
HP = dict(target=0.25,        # kept fraction every selector aims for
          warm_epochs=3,      # full-data epochs before measuring (lr 0.05, SGD momentum 0.9)
          batches=4,          # batches the gradient is measured on
          batch_size=128,     # samples per batch
          draws=48,           # subsets drawn per selector and batch
          seed=0)
VARIANTS = {  # label: make_selector kwargs
    'random': dict(method='random'),
    'ast (hard)': dict(method='ast'),
    'soft beta=4': dict(method='ast', sharpness=4.0),
    'soft beta=2': dict(method='ast', sharpness=2.0),
    'is (beta=1)': dict(method='is'),
    'is clip 8': dict(method='is', weight_clip=8.0),
    'is clip 4': dict(method='is', weight_clip=4.0),
    'is floor 0.1': dict(method='is', uniform_floor=0.1),
    'is floor 0.3': dict(method='is', uniform_floor=0.3),
    'soft beta=2 floor 0.3': dict(method='ast', sharpness=2.0, uniform_floor=0.3),
}

def main(out='benchmarks/results/soft_variance.json', threads=2):
    t0 = time.time(); torch.manual_seed(HP['seed']); torch.set_num_threads(threads)
    cfg = load_config(overrides=[f"training.batch_size={HP['batch_size']}", f"training.seed={HP['seed']}"], env_file=None)
    train_dl, _, bundle = get_dataloaders(cfg)
    model = create_model('resnet_small', bundle.num_classes, image_size=bundle.image_size)
    # ------------------------------------------------------------------------------------------- Network (warm-up)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(HP['warm_epochs']):
        for x, y, _ in train_dl:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    scorer = get_scorer('significance')
    def grad(x, y, w=None):
        ce = F.cross_entropy(model(x), y, reduction='none')
        loss = (ce if w is None else ce * w).mean()
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])
    batches = [b for _, b in zip(range(HP['batches']), train_dl)]
    with torch.no_grad(): all_scores = [scorer(model(x), y) for x, y, _ in batches]
    # ------------------------------------------------------------------------------------------- Measurement
    rows = []
    for label, kw in VARIANTS.items():
        kw = dict(kw); method = kw.pop('method')
        sel = make_selector(method, target=HP['target'], **kw)
        g = torch.Generator().manual_seed(HP['seed'])
        for _ in range(20):                                  # settle the controller on these batches' scores
            for s in all_scores: sel(s, SelectionState(n=len(s), generator=g))
        per = []
        for (x, y, _), s in zip(batches, all_scores):
            ref = grad(x, y); est, kept = [], []
            for _ in range(HP['draws']):
                m = sel(s, SelectionState(n=len(s), generator=g))
                w = sel.last_weights[m] if sel.last_weights is not None else None
                est.append(grad(x[m], y[m], w)); kept.append(m.float().mean().item())
            est = torch.stack(est); mean = est.mean(0); nrm = ref.pow(2).sum()
            var = (est - mean).pow(2).sum(1).mean() / nrm
            per.append(dict(bias2=((mean - ref).pow(2).sum() / nrm).item(), var=var.item(),
                            bias2_floor=(var / HP['draws']).item(), kept=sum(kept) / len(kept)))
        row = dict(label=label, **{k: sum(p[k] for p in per) / len(per) for k in per[0]})
        row['mse'] = row['bias2'] + row['var']
        rows.append(row)
        print(f"{label:>22}: kept {row['kept']:.3f}  bias2 {row['bias2']:.4f} (floor {row['bias2_floor']:.4f})  "
              f"var {row['var']:.4f}  mse {row['mse']:.4f}", flush=True)
        res = dict(benchmark='soft_variance', hp=HP, rows=rows, units='relative to ||batch gradient||^2',
                   complete=len(rows) == len(VARIANTS), command=' '.join(['python', 'benchmarks/soft_variance.py', *sys.argv[1:]]),
                   threads=threads, git=git_state(),
                   cpu=cpu_model(), torch=torch.__version__, seconds=round(time.time() - t0, 1))
        Path(out).parent.mkdir(parents=True, exist_ok=True)   # after every variant: a slow run leaves what it measured
        Path(out).write_text(json.dumps(res, indent=2) + '\n')
    print(f"wrote {out}")

if __name__ == '__main__':
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--threads', type=int, default=2)   # torch threads (accuracy and variance do not depend on it)
    main(threads=ap.parse_args().threads)
