"""The CUDA-only branches, exercised on CPU with the stand-ins torch offers (issue 12): fp16 + GradScaler('cpu') with
gradient accumulation, bf16 autocast through the AST step, torch.compile and channels_last through train(), the AMP
choice on a mocked GPU, and NVML's by-UUID handle with a fake pynvml."""
import math, sys, types

import pytest, torch
from torch import nn

from astlab.engine.learner import Learner, Callback
from astlab.methods.per_batch import SelectionCB
from astlab.core.selection import make_selector


def _batches(n=256, bs=32, seed=0, shape=(3, 8, 8), classes=10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g); y = torch.randint(0, classes, (n,), generator=g)
    return [(x[i:i+bs], y[i:i+bs], torch.arange(i, i+bs)) for i in range(0, n, bs)]


class Scales(Callback):
    order = 100
    def before_fit(self): self.s = []
    def after_step(self): self.s.append(self.learn.scaler.get_scale())


def _mlp(): torch.manual_seed(0); return nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))


def test_fp16_grad_accumulation_keeps_the_scale_and_counts_skipped_steps():
    "fp16 + GradScaler with grad_accum_steps=2: the summed loss used to overflow (65536 -> 8192, 3 of 8 steps skipped)."
    m, rec = _mlp(), Scales()
    learn = Learner(m, _batches(n=512, bs=64, shape=(3, 4, 4)), None, torch.optim.SGD(m.parameters(), lr=0.05), cbs=[rec],
                    amp_dtype=torch.float16, grad_accum_steps=2)
    assert learn.scaler is not None and learn.scaler._device == 'cpu'
    learn.fit(2)
    assert rec.s == [65536.0] * 8, rec.s                      # no overflow, no back-off
    assert learn.amp_skipped_steps == 0
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_fp16_skipped_step_is_counted():
    "A step whose gradients overflow is skipped by the scaler and counted."
    class Blowup(Callback):
        def after_loss(self):
            if self.learn.iter == 2: self.learn.loss_bwd = self.learn.loss_bwd * 1e30
    m, rec = _mlp(), Scales()
    w0 = [p.detach().clone() for p in m.parameters()]
    learn = Learner(m, _batches(n=128, bs=32, shape=(3, 4, 4)), None, torch.optim.SGD(m.parameters(), lr=0.05), cbs=[rec, Blowup()],
                    amp_dtype=torch.float16, grad_accum_steps=2)
    learn.fit(1)
    assert learn.amp_skipped_steps == 1 and rec.s == [65536.0, 32768.0], rec.s
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(w0, m.parameters()))   # the other step did train


def test_fp16_accumulation_is_the_exact_mean_over_trained_samples():
    "Accumulating 3 + 5 trained samples under the new normaliser equals one step on all 8 (fp32, no AMP)."
    torch.manual_seed(0)
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    m1 = nn.Linear(2, 2); m2 = nn.Linear(2, 2); m2.load_state_dict(m1.state_dict())
    class Subset(Callback):         # the first batch (of 4 seen) trains 3, the second (of 4 seen) trains all 4 + ...
        def before_batch(self):
            if self.learn.iter == 0: self.learn.xb, self.learn.yb = self.learn.xb[:3], self.learn.yb[:3]
    Learner(m1, [(x[:4], y[:4], None), (x[3:], y[3:], None)], None, torch.optim.SGD(m1.parameters(), lr=1.0),
            cbs=[Subset()], grad_accum_steps=2).fit(1)
    Learner(m2, [(torch.cat([x[:3], x[3:]]), torch.cat([y[:3], y[3:]]), None)], None,
            torch.optim.SGD(m2.parameters(), lr=1.0)).fit(1)
    torch.testing.assert_close(m1.weight, m2.weight)


def _conv_bn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_ast_step_under_cpu_autocast(dtype):
    "Learner + SelectionCB under torch.autocast('cpu', bf16 / fp16 + GradScaler('cpu') with grad accumulation)."
    m = _conv_bn()
    sel = SelectionCB(make_selector('ast', target=0.25), generator=torch.Generator().manual_seed(0))
    accum = 2 if dtype == torch.float16 else 1
    learn = Learner(m, _batches(n=128, bs=32), _batches(n=64, seed=1), torch.optim.SGD(m.parameters(), lr=0.05),
                    cbs=[sel], amp_dtype=dtype, grad_accum_steps=accum)
    learn.fit(2)
    assert all(torch.isfinite(p).all() for p in m.parameters())
    assert 0.1 < sel.epoch_stats['activation_rate'] < 0.5
    assert learn.val_acc is not None and math.isfinite(learn.val_loss)
    if dtype == torch.float16: assert learn.scaler is not None and learn.amp_skipped_steps == 0
    else: assert learn.scaler is None and learn.amp_skipped_steps == 0
    assert int(m[1].num_batches_tracked) == 2 * 4              # one running-stats update per batch (item 6)


# ---------------------------------------------------------------- the AMP choice (item 3)

@pytest.mark.parametrize('cap, dtype', [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                                        ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_amp_is_chosen_on_compute_capability(monkeypatch, cap, dtype):
    "A T4 (sm75) reports emulated bf16 as supported; it must get fp16 + GradScaler, sm80+ native bf16."
    from astlab.lab.train import resolve_amp
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: cap)
    got, note = resolve_amp(True, torch.device('cuda', 0))
    assert got == dtype and f"sm{cap[0]}{cap[1]}" in note
    assert resolve_amp(False, torch.device('cuda', 0))[0] is None


def test_gpu_benchmark_uses_the_trainers_amp_rule():
    "benchmarks/gpu_resnet50.py decides bf16/fp16 with astlab.lab.train.resolve_amp, not a rule of its own."
    import ast
    from pathlib import Path
    src = (Path(__file__).parent.parent/'benchmarks'/'gpu_resnet50.py').read_text()
    calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, 'attr', None)
             for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)}
    # fp16 gets its GradScaler from the Learner the benchmark trains with (amp_dtype=resolve_amp's choice)
    assert 'resolve_amp' in calls and 'is_bf16_supported' not in calls and 'Learner' in calls
    assert 'amp_dtype=amp_dtype' in src.replace(' ', '').replace('amp_dtype=amp_dtype', 'amp_dtype=amp_dtype')


# ---------------------------------------------------------------- NVML by UUID (what a real GPU takes)

def test_nvml_handle_by_uuid(monkeypatch):
    "torch knows the GPU's UUID: the handle comes from nvmlDeviceGetHandleByUUID('GPU-<uuid>'), not the CUDA index."
    from astlab.engine.meters import EnergyMeter
    calls, counter = [], iter([1_000, 50_000, 57_500])
    nv = types.ModuleType('pynvml')
    nv.nvmlInit = lambda: calls.append('init')
    nv.nvmlDeviceGetHandleByUUID = lambda u: calls.append(('uuid', u)) or f"h-{u}"
    nv.nvmlDeviceGetHandleByIndex = lambda i: calls.append(('index', i)) or f"h-{i}"
    nv.nvmlDeviceGetTotalEnergyConsumption = lambda h: calls.append(('energy', h)) or next(counter)
    monkeypatch.setitem(sys.modules, 'pynvml', nv)
    uuid = '8f2c9a1e-0b7d-4c3e-9a55-1d2e3f405162'
    seen = []
    monkeypatch.setattr(torch.cuda, 'get_device_properties',
                        lambda i: seen.append(i) or types.SimpleNamespace(uuid=uuid, name='fake GPU'))
    em = EnergyMeter(torch.device('cuda', 1), tdp_watts=1.0)
    assert em.source == 'nvml' and seen == [1]
    assert ('uuid', f'GPU-{uuid}') in calls and not any(c[0] == 'index' for c in calls if isinstance(c, tuple))
    em.start()
    assert em.read() == pytest.approx(7.5)                    # (57 500 - 50 000) mJ, from the UUID's handle
    assert calls[-1] == ('energy', f'h-GPU-{uuid}')


# ---------------------------------------------------------------- through train(): sb target, compile, channels_last

def _cfg(tmp_path, *overrides):
    from astlab.config import load_config
    return load_config(overrides=['dataset.type=synthetic', 'dataset.num_samples=320', 'dataset.image_size=8',
                                  'model.name=resnet_tiny', 'training.batch_size=32', 'training.epochs=1',
                                  'training.device=cpu', 'training.progress=false', 'training.mixed_precision=false',
                                  f'logging.output_dir={tmp_path}', *overrides], env_file=None)


def test_sb_through_the_config_trains_at_the_target(tmp_path):
    "ast.method=sb with target 0.25 and no sb_beta: beta = 1/0.25 - 1 = 3 and the realised rate is ~0.25 (was 0.5)."
    from astlab.lab.train import train
    cfg = _cfg(tmp_path, 'ast.method=sb', 'ast.target_activation=0.25', 'training.epochs=3', 'ast.sb_history=64')
    assert cfg.ast.sb_beta is None
    class Grab(Callback):
        order = 100
        def before_fit(self): self.sel = self.learn.cb(SelectionCB).selector
    g = Grab()
    res = train(cfg, log=lambda *a: None, extra_cbs=(g,))
    assert g.sel.beta == pytest.approx(3.0)
    assert abs(res['totals']['activation_rate'] - 0.25) < 0.07, res['totals']['activation_rate']
    cfg2 = _cfg(tmp_path, 'ast.method=sb', 'ast.target_activation=0.25', 'ast.sb_beta=1')   # explicit beta still wins
    g2 = Grab(); train(cfg2, log=lambda *a: None, extra_cbs=(g2,))
    assert g2.sel.beta == 1.0


class Shapes(Callback):
    "Subset sizes of the train pass and the memory format of what the model sees."
    order = 100
    def before_fit(self): self.sizes, self.cl = set(), []
    def after_pred(self):
        L = self.learn
        if L.training: self.sizes.add(len(L.yb))
        self.cl.append(L.xb.is_contiguous(memory_format=torch.channels_last))


def test_channels_last_through_train_on_cpu(tmp_path):
    "training.channels_last=true is honoured on CPU (it used to be CUDA-only); the default stays CUDA-only."
    from astlab.lab.train import train
    from astlab.engine.checkpoint import _module
    rec = Shapes()
    res = train(_cfg(tmp_path, 'training.channels_last=true'), log=lambda *a: None, extra_cbs=(rec,))
    assert rec.cl and all(rec.cl) and res['complete']
    conv = next(m for m in _module(rec.learn.model).modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    rec2 = Shapes()
    train(_cfg(tmp_path), log=lambda *a: None, extra_cbs=(rec2,))
    assert not any(rec2.cl)


def test_compile_through_train_on_cpu_with_bounded_recompiles(tmp_path):
    "training.compile=true with the aot_eager backend compiles on CPU; varying subset sizes cost a bounded number of graphs."
    import torch._dynamo
    from torch._dynamo.utils import counters
    from astlab.lab.train import train
    torch._dynamo.reset(); counters.clear()
    rec = Shapes()
    res = train(_cfg(tmp_path, 'training.compile=true', 'training.compile_backend=aot_eager', 'training.epochs=2'),
                log=lambda *a: None, extra_cbs=(rec,))
    assert res['complete'] and type(rec.learn.model).__name__ == 'OptimizedModule'
    graphs = counters['stats']['unique_graphs']
    assert len(rec.sizes) >= 4, rec.sizes                      # the subset size really varied ...
    assert 1 <= graphs <= 6, (graphs, rec.sizes)               # ... yet dynamo built a few graphs, not one per size
    torch._dynamo.reset()
