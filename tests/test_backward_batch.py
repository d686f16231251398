"""`ast.backward_batch`: selected samples gather across batches and train N at a time. Each selected sample trains
exactly once (the epoch's last batch flushes the rest), gathering changes neither the counted FLOPs nor what the
controller sees, a run stopped mid-queue resumes exactly, and a user's `SparseStep` loop is the same code path."""
from pathlib import Path

import pytest, torch, torch.nn.functional as F

from astlab.engine.checkpoint import load_checkpoint
from astlab.config import load_config
from astlab.engine.learner import Callback
from astlab.engine.meters import history_rows
from astlab.methods.per_batch import SelectionCB
from astlab.lab.train import train
from stops import StopAt

TINY = ['dataset.num_samples=320', 'dataset.image_size=16', 'training.batch_size=32', 'model.name=resnet_tiny',
        'training.epochs=2', 'training.progress=false', 'training.device=cpu', 'ast.target_activation=0.25']
WALL = {'time_min', 'step_time_ms', 'est_energy_kj', 'epoch_energy_kj'}


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)   # shared machine; one thread keeps float sums in one order
    yield
    torch.set_num_threads(n)


def cfg_for(d, *extra): return load_config(overrides=TINY + [f'logging.output_dir={d}', *extra], env_file=None)
def quiet(cfg, **kw): return train(cfg, log=lambda s: None, **kw)
def history(res): return [{k: v for k, v in h.items() if k not in WALL} for h in history_rows(res)]


class Passes(Callback):
    "Per epoch: the dataset indices each batch selected, and those each train pass trained (with the pass sizes)."
    order = 100
    def before_fit(self): self.selected, self.trained, self.sizes, self.thr, self.rates, self.steps = {}, {}, {}, [], [], {}
    def after_step(self): self.steps[self.learn.epoch] = self.steps.get(self.learn.epoch, 0) + 1
    def after_pred(self):
        L = self.learn
        if not L.training: return
        idx = getattr(L, 'train_idx', None) if L.cb(SelectionCB).step.queue is not None else L.idx[L.selected]
        self.trained.setdefault(L.epoch, []).extend(idx.tolist()); self.sizes.setdefault(L.epoch, []).append(len(L.yb))
    def after_batch(self):
        L, s = self.learn, self.learn.cb(SelectionCB).selector
        self.selected.setdefault(L.epoch, []).extend(L.idx[L.selected].tolist())
        self.thr.append(s.threshold); self.rates.append(s.last_rate)


@pytest.mark.parametrize('extra', [[], ['ast.interrupt_every=3'], ['training.grad_accum_steps=2', 'ast.method=is']])
def test_each_selected_sample_trains_exactly_once(tmp_path, extra):
    "Full passes of training.batch_size; the epoch's last batch flushes; the trained multiset is the selected one."
    rec = Passes()
    res = quiet(cfg_for(tmp_path, 'ast.backward_batch=full', *extra), extra_cbs=(rec,))
    assert set(rec.trained) == set(rec.selected) == {0, 1}
    for e in (0, 1):
        assert sorted(rec.trained[e]) == sorted(rec.selected[e])           # each selected sample once, in its epoch
        assert rec.sizes[e][:-1] == [32] * (len(rec.sizes[e]) - 1)        # full-size passes
        assert 0 < rec.sizes[e][-1] < 64                                  # ... and the flushed remainder
        k = 2 if 'training.grad_accum_steps=2' in extra else 1            # accumulation windows count train passes
        assert rec.steps[e] == -(-len(rec.sizes[e]) // k)
    t = res['totals']
    assert t['samples_trained'] == sum(len(v) for v in rec.trained.values())
    assert t['train_wall_s'] <= t['wall_s'] and t['train_wall_s'] == pytest.approx(
        sum(res['phase_s'].get(k, 0) for k in ('data', 'score', 'train', 'optimizer')))


def test_gathering_changes_neither_flops_nor_what_the_controller_sees(tmp_path):
    "With lr = 0 the selections cannot depend on the steps: off and full must see the same thresholds, rates, counts, FLOPs."
    runs = {}
    for bb in ('off', 'full'):
        rec = Passes()
        res = quiet(cfg_for(tmp_path/bb, f'ast.backward_batch={bb}', 'training.lr=0'), extra_cbs=(rec,))
        runs[bb] = res, rec
    (a, ra), (b, rb) = runs['off'], runs['full']
    assert ra.thr == rb.thr and ra.rates == rb.rates and ra.selected == rb.selected
    assert {e: sorted(v) for e, v in ra.trained.items()} == {e: sorted(v) for e, v in rb.trained.items()}
    for k in ('samples_seen', 'samples_scored', 'samples_trained', 'flops', 'activation_rate'):
        assert a['totals'][k] == b['totals'][k], k
    assert history(a) == history(b)                    # rates, thresholds, FLOPs, train and val accuracy: per epoch
    assert len(rb.sizes[0]) < len(ra.sizes[0])         # ... in fewer, larger train passes


def test_resume_mid_queue_equals_the_straight_run(tmp_path):
    ref = quiet(cfg_for(tmp_path/'ref', 'ast.backward_batch=full'))
    stop = StopAt(1, 2)
    class Queued(Callback):
        order = 80
        def after_cancel_fit(self): self.n = len(self.learn.cb(SelectionCB).step.queue)
    q = Queued()
    part = quiet(cfg_for(tmp_path/'run', 'ast.backward_batch=full'), extra_cbs=(stop, q))
    assert not part['complete'] and q.n > 0              # stopped with samples queued
    [ck] = Path(tmp_path/'run').glob('checkpoints/*/last.pt')
    assert sum(p['n'] for p in load_checkpoint(ck)['callbacks']['SelectionCB']['queue']['parts']) == q.n
    res = quiet(cfg_for(tmp_path/'run', 'ast.backward_batch=full'), resume='auto')
    assert history(res) == history(ref)
    a, b = load_checkpoint(ck)['model'], (load_checkpoint(next(Path(tmp_path/'ref').glob('checkpoints/*/last.pt')))['model'])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_user_gather_loop_is_bit_identical_to_astlab_run(tmp_path):
    "A user's loop with `step.gather` reproduces astlab-run with ast.backward_batch=full: one implementation."
    from astlab import SparseStep
    from astlab.engine.data import get_dataloaders
    from astlab.engine.models import create_model
    from astlab.engine.meters import flops_per_sample
    from astlab.engine.learner import LRSchedCB
    import astlab.lab.train as T
    cfg = cfg_for(tmp_path, 'ast.backward_batch=full')
    res = quiet(cfg, extra_cbs=(rec := Passes(),))
    t, a = cfg.training, cfg.ast
    T.seed_everything(t.seed)
    train_dl, _, bundle = get_dataloaders(cfg, device=torch.device('cpu'))
    model = create_model(cfg.model.name, bundle.num_classes, pretrained=False, image_size=bundle.image_size)
    opt, lr_at = T.make_optimizer(model, cfg), LRSchedCB(t.lr, t.min_lr, t.epochs, t.warmup_epochs).lr_at
    step = SparseStep(model, target=a.target_activation, kp=a.kp, ki=a.ki, min_active=a.min_active,
                      flops=flops_per_sample(model, bundle.image_size), backward_batch=t.batch_size,
                      generator=torch.Generator().manual_seed(t.seed + 1))
    sizes = {}
    for epoch in range(t.epochs):
        model.train(); step.set_epoch(epoch); train_dl.sampler.set_epoch(epoch)
        for i, (x, y, idx) in enumerate(train_dl):
            for g in opt.param_groups: g['lr'] = lr_at(epoch + (i + 1) / len(train_dl))
            for x, y, w in step.gather(x, y, idx, last=i + 1 == len(train_dl)):
                (F.cross_entropy(model(x), y, reduction='none') * w).mean().backward(); opt.step(); opt.zero_grad()
                sizes.setdefault(epoch, []).append(len(y))
    assert sizes == rec.sizes
    prod = rec.learn.model.state_dict()
    for k, v in model.state_dict().items(): assert torch.equal(v, prod[k]), k
    s = step.stats()
    assert (s['seen'], s['trained']) == (res['totals']['samples_seen'], res['totals']['samples_trained'])


def test_select_returns_none_while_gathering_and_train_batches_flushes():
    from astlab import SparseStep
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    X, Y = torch.randn(640, 10), torch.randint(0, 4, (640,))
    step = SparseStep(model, target=0.25, backward_batch=64)
    assert step.select(X[:64], Y[:64]) is None and len(step.queue) > 0
    step = SparseStep(model, target=0.25, backward_batch=64)
    got = [len(y) for _, y, _ in step.train_batches(zip(X.split(64), Y.split(64)))]
    assert got[:-1] == [64] * (len(got) - 1) and sum(got) == step.stats()['trained'] and len(step.queue) == 0


def test_epoch_level_methods_ignore_it_with_a_warning_so_compare_can_set_it_for_all():
    "astlab-compare's `--set ast.backward_batch=full` reaches its RS2 / InfoBatch controls too: ignored there, said once."
    from astlab.engine.preflight import ignored_settings
    for ov in (['ast.method=rs2'], ['ast.method=infobatch'], ['ast.scoring=stale']):
        cfg = load_config(overrides=[*ov, 'ast.backward_batch=full'], env_file=None)
        assert any(s.startswith("ast.backward_batch='full'") for s in ignored_settings(cfg)), ov
    assert not any('backward_batch' in s for s in ignored_settings(load_config(overrides=['ast.backward_batch=full'], env_file=None)))
