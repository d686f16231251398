"""The CUDA-only branches, exercised on CPU with the stand-ins torch offers (issue 12): fp16 + GradScaler('cpu') with
gradient accumulation, bf16 autocast through the AST step, torch.compile and channels_last through train(), the AMP
choice on a mocked GPU, and NVML's by-UUID handle with a fake pynvml."""
import math, sys, types

import pytest, torch
from torch import nn

from astlab.learner import Learner, Callback
from astlab.sparse import SelectionCB
from astlab.selection import make_selector


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
