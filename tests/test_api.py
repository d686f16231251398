"""The public API: `from astlab import SparseStep, PrunedDataset`; a 20-line user loop reproduces `astlab-run` exactly;
only the selected samples reach backward; DDP keeps one global controller (SparseStep) and one global draw (PrunedDataset)."""
import os, socket, subprocess, sys, textwrap, warnings

import pytest, torch, torch.nn.functional as F

from astlab.config import load_config
from astlab.engine.learner import Callback
import astlab.lab.train as T

ARGS = ["dataset.num_samples=256", "dataset.image_size=16", "training.epochs=2", "training.batch_size=32", "model.name=resnet_tiny",
        "training.device=cpu", "training.progress=false", "ast.target_activation=0.25"]


def test_public_names():
    import astlab
    from astlab import SparseStep, PrunedDataset
    from astlab.core.api import SparseStep as S, PrunedDataset as P
    assert SparseStep is S and PrunedDataset is P and set(astlab.__all__) >= {"SparseStep", "PrunedDataset"}
    with pytest.raises(AttributeError): astlab.NoSuchThing


class Record(Callback):
    "What the trainer's selection did per batch: threshold after the update, controller rate, selected ids, weights."
    order = 100
    def before_fit(self): self.rows = []
    def after_pred(self):
        if not self.learn.training: return
        sel = self.learn.cb(T.SelectionCB).selector
        w = self.learn.weights
        self.rows.append((sel.threshold, sel.last_rate, self.learn.idx[self.learn.selected].tolist(),
                          torch.ones(len(self.learn.yb)) if w is None else w.detach().clone()))


def user_loop(cfg):
    """A user's own loop, written with nothing but the public helpers: same seed, data order and optimiser as astlab-run.
    The data order is astlab's loader's (`EpochSampler`: a function of (seed, epoch)), so the loop calls
    `sampler.set_epoch(epoch)` as it would for a `DistributedSampler`; without it every epoch replays epoch 0's order
    and the loop parts from astlab-run at the first batch of epoch 2."""
    from astlab import SparseStep
    from astlab.engine.data import get_dataloaders
    from astlab.engine.models import create_model
    from astlab.engine.meters import flops_per_sample
    from astlab.engine.learner import LRSchedCB
    t, a, rows = cfg.training, cfg.ast, []
    T.seed_everything(t.seed)
    train_dl, _, bundle = get_dataloaders(cfg, device=torch.device("cpu"))
    model = create_model(cfg.model.name, bundle.num_classes, pretrained=False, image_size=bundle.image_size)
    flops = flops_per_sample(model, bundle.image_size)
    opt, lr_at = T.make_optimizer(model, cfg), LRSchedCB(t.lr, t.min_lr, t.epochs, t.warmup_epochs).lr_at
    soft = {} if a.sharpness is None else dict(sharpness=a.sharpness)   # soft AST: keep with a probability, weight 1/p
    step = SparseStep(model, target=a.target_activation, kp=a.kp, ki=a.ki, entropy_weight=a.entropy_weight,
                      min_active=a.min_active, flops=flops, generator=torch.Generator().manual_seed(t.seed + 1), **soft)
    for epoch in range(t.epochs):
        model.train(); step.set_epoch(epoch); train_dl.sampler.set_epoch(epoch)   # each epoch's order, as in DDP
        for i, (x, y, idx) in enumerate(train_dl):
            for g in opt.param_groups: g["lr"] = lr_at(epoch + (i + 1) / len(train_dl))
            whole = a.interrupt_every > 0 and (i + 1) % a.interrupt_every == 0   # Composer's interrupt: train all
            x, y, w = step.select(x, y, prune=not whole)
            loss = (F.cross_entropy(model(x), y, reduction="none") * w).mean()
            loss.backward(); opt.step(); opt.zero_grad()
            rows.append((step.threshold, step.selector.last_rate, idx[step.last_mask].tolist(), w))
    return model, rows, step


VARIANTS = {"ast": [], "soft_ast_interrupted": ["ast.sharpness=2", "ast.interrupt_every=3"]}

@pytest.mark.parametrize("variant", VARIANTS)
def test_user_loop_is_bit_identical_to_astlab_run(tmp_path, variant):
    "astlab-run and a user's SparseStep loop are one code path: same thresholds, rates, subsets, weights, model, counts."
    args = ARGS + VARIANTS[variant] + [f"logging.output_dir={tmp_path}"]
    cfg = load_config(overrides=args, env_file=None)
    rec, threads = Record(), torch.get_num_threads()
    torch.set_num_threads(1)          # the machine is shared; one thread also keeps float reductions in one order
    try:
        res = T.train(cfg, log=lambda *a: None, extra_cbs=(rec,))
        model, rows, step = user_loop(load_config(overrides=args, env_file=None))
    finally: torch.set_num_threads(threads)
    assert len(rows) == len(rec.rows) == 16                # 2 epochs of 8 batches
    if variant != "ast":                                   # weights really vary; every 3rd batch trains whole
        assert any(not torch.equal(w, torch.ones_like(w)) for *_, w in rows)
        assert [len(i) == 32 for _, _, i, _ in rows[:8]] == [(k + 1) % 3 == 0 for k in range(8)]
    for (t1, r1, i1, w1), (t2, r2, i2, w2) in zip(rec.rows, rows):
        assert t1 == t2 and r1 == r2 and i1 == i2        # thresholds, controller rates, the selected samples: exact
        assert torch.equal(w1, w2)
    prod = rec.learn.model.state_dict()
    for k, v in model.state_dict().items(): assert torch.equal(v, prod[k]), k      # and so the same weights
    s, tot = step.stats(), res["totals"]
    assert (s["seen"], s["scored"], s["trained"]) == (tot["samples_seen"], tot["samples_scored"], tot["samples_trained"])
    assert s["flops"] == pytest.approx(tot["flops"])


def test_backward_only_on_the_selected_samples():
    "A backward hook on the first layer counts the rows of gradient that really flow in the user's loop."
    from astlab import SparseStep
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    seen = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        model[0].register_full_backward_hook(lambda m, gi, go: seen.append(go[0].shape[0]))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        step = SparseStep(model, target=0.25)
        X, Y = torch.randn(1280, 10), torch.randint(0, 4, (1280,))
        kept = []
        for x, y in zip(X.split(64), Y.split(64)):
            x, y, w = step.select(x, y)                   # the score pass runs under no_grad: no hook call
            (F.cross_entropy(model(x), y, reduction="none") * w).mean().backward(); opt.step(); opt.zero_grad()
            kept.append(len(y))
    assert seen == kept and len(seen) == 20                # one backward per batch, over exactly the subset
    assert sum(seen) == step.stats()["trained"] < 0.5 * 1280


def test_weights_come_from_the_selectors_last_weights():
    "A selector that reweights (CONTRACTS: `last_weights`) hands the selected samples' weights to the loop."
    from astlab import SparseStep
    from astlab.core.selection import TopKSelector
    class Weighted(TopKSelector):
        def select(self, scores, state):
            m = super().select(scores, state); self.last_weights = 1 + torch.arange(state.n, dtype=torch.float); return m
    model = torch.nn.Linear(5, 3)
    step = SparseStep(model, method=Weighted(0.5))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    xs, ys, w = step.select(x, y)
    assert torch.equal(w, 1 + step.last_mask.nonzero().squeeze(1).float())
    assert torch.equal(SparseStep(model, method="topk", target=0.5).select(x, y)[2], torch.ones(4))


def test_methods_by_name_and_unknown_method():
    from astlab import SparseStep
    from astlab.core.selection import SELECTORS
    model = torch.nn.Linear(5, 3)
    for m in SELECTORS:
        if getattr(SELECTORS[m], "needs_table", False):          # epoch-level (infobatch, rs2): PrunedDataset's job
            with pytest.raises(ValueError, match="PrunedDataset"): SparseStep(model, method=m)
        else: assert SparseStep(model, method=m).selector.name == m
    from astlab.core.selection import Selector
    class Epochly(Selector): name, needs_table = "epochly", True
    with pytest.raises(ValueError, match="PrunedDataset"): SparseStep(model, method=Epochly())
    with pytest.raises(ValueError, match="unknown selection method"): SparseStep(model, method="nope")



def test_pruned_dataset_draws_with_the_infobatch_selector():
    "InfoBatch's rule lives in one place: a PrunedDataset epoch is InfoBatchSelector's draw (mask, weights, annealing)."
    from astlab import PrunedDataset
    from astlab.core.selection import InfoBatchSelector
    v = torch.rand(200, generator=torch.Generator().manual_seed(1))      # 97 below the mean: fewer than 1 - target
    for prune in (None, 0.3):
        ds = PrunedDataset(list(range(200)), target=0.5, prune=prune, epochs=4, delta=0.5, shuffle=False)
        ds.scores = v.clone()
        ib = InfoBatchSelector(target=0.5, prune=prune, delta=0.5)
        assert [ds.pruning(e) for e in range(4)] == [True, True, False, False]  # InfoBatch: prune while e + 1 <= delta * E
        for e in range(2):
            keep, w = ib.draw(v, torch.Generator().manual_seed(ds.seed + 7919 * e))
            assert torch.equal(ds._draw(e), keep.nonzero().squeeze(1)) and torch.equal(ds.weights, w)
        for e in (2, 3): assert len(ds._draw(e)) == 200 and torch.equal(ds.weights, torch.ones(200))

# ------------------------------------------------------------------------------------------ DDP: 2 processes on CPU
WORKER = textwrap.dedent('''
    import sys, torch, torch.distributed as dist, torch.nn.functional as F
    from astlab import SparseStep, PrunedDataset
    dist.init_process_group("gloo"); r = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                                                          torch.nn.Linear(16, 4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(r)
    step = SparseStep(model, target=0.25)
    th, kept = [], []
    for i in range(30):
        x, y = torch.randn(32, 10, generator=g) * (1 + 3 * r), torch.randint(0, 4, (32,), generator=g)
        x, y, w = step.select(x, y)
        (F.cross_entropy(model(x), y, reduction="none") * w).mean().backward(); opt.step(); opt.zero_grad()
        th.append(step.threshold); kept.append(len(y))
    s = step.stats()
    class Known(torch.utils.data.Dataset):
        def __init__(self): self.v = torch.rand(101, generator=torch.Generator().manual_seed(5))
        def __len__(self): return 101
        def __getitem__(self, i): return self.v[i:i+1], i
    ds = PrunedDataset(Known(), target=0.5, epochs=3, delta=1.0)
    dl = torch.utils.data.DataLoader(ds, sampler=ds.sampler, batch_size=8)
    got = []
    for e in range(3):
        ds.set_epoch(e); ids = []
        for x, i in dl: ds.update(x[:, 0]); ids += i.tolist()
        got.append(ids)
    ds._sync_scores()
    torch.save(dict(th=th, kept=kept, stats=s, ids=got, scores=ds.scores), sys.argv[1] + f"/r{r}.pt")
''')


def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def test_two_ranks_one_controller_one_draw(tmp_path):
    (tmp_path/"w.py").write_text(WORKER)
    port, procs = _free_port(), []
    for r in range(2):
        env = {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(tmp_path/"w.py"), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120); assert p.returncode == 0, err
    a, b = (torch.load(tmp_path/f"r{r}.pt", weights_only=False) for r in range(2))
    assert a["th"] == b["th"]                                   # one controller: the same threshold on both ranks
    assert a["kept"] != b["kept"]                               # ... selecting from different batches
    assert a["stats"] == b["stats"] and a["stats"]["seen"] == 2 * 30 * 32     # stats() sums over the ranks
    for e in range(3):
        ea, eb = set(a["ids"][e]), set(b["ids"][e])
        assert len(a["ids"][e]) == len(b["ids"][e])             # equal shares (padded like DistributedSampler)
        assert len(ea | eb) == (101 if e == 0 else len(ea | eb)) and len(ea & eb) <= 1   # disjoint but the padding
    assert len(a["ids"][1]) * 2 < 101                          # epoch 1 is pruned on both ranks alike
    assert torch.equal(a["scores"], b["scores"]) and torch.isfinite(a["scores"]).all()


def test_running_stats_come_from_the_score_pass_only():
    "As in the trainer: the whole-batch score pass updates BatchNorm's running stats; the subset's train forward does not."
    from astlab import SparseStep
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    step = SparseStep(model, method="topk", target=0.25)
    x, y = torch.randn(32, 6) * 3 + 1, torch.randint(0, 3, (32,))
    before = model[1].running_mean.clone()
    xs, ys, w = step.select(x, y)
    after_score = model[1].running_mean.clone()
    assert not torch.equal(before, after_score) and int(model[1].num_batches_tracked) == 1
    model(xs)                                              # the train forward on the subset
    assert torch.equal(model[1].running_mean, after_score) and int(model[1].num_batches_tracked) == 1
    model(x)                                               # tracking is back on for any later forward
    assert int(model[1].num_batches_tracked) == 2


@pytest.mark.slow   # a benchmark smoke run: `make test-slow`
def test_overhead_benchmark_runs(tmp_path):
    "benchmarks/api_overhead.py at tiny sizes: the whole code path and the output schema (no timing asserted)."
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "benchmarks/api_overhead.py", "--quick", "--threads", "1", "--wait-budget", "0",
                        "--out", str(tmp_path/"o")], cwd=root, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/"o.json").read_text())
    assert set(res["summary"]) == {"resnet_tiny_32", "resnet_small_32", "mlp_64"}
    for s in res["summary"].values():
        assert s["bare_score_ms"] > 0 and s["select_ms"] > 0 and s["used"] in ("clean", "all")
    assert {"versions", "device", "git", "noise", "command"} <= set(res)
