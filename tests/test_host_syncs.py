"""Host syncs on the hot path, counted per training batch through the whole `train()` stack.

On a GPU, every op that brings a value back to the host (`.item()`, `int(t)`, `bool(t)`, `.tolist()`, `nonzero`, a
boolean-mask index) stalls the CPU until the GPU has drained its queue, and so does a blocking host<->device copy
(`.to(device)` without `non_blocking`). Counting those ops at the dispatcher (and `.tolist()` / `.to()` at the
torch-function layer, which sees them even when the tensor already lives on the CPU) finds them on the CPU too, where
CI runs: the same Python code issues the same ops on either device.
"""
import collections

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from astlab.config import load_config
from astlab.engine.learner import Callback
from astlab.lab.train import train

SYNC_OPS = {'aten::_local_scalar_dense', 'aten::nonzero', 'aten::nonzero_static', 'aten::masked_select',
            'aten::is_nonzero', 'aten::equal'}

def _names_a_device(args, kwargs):
    return 'device' in kwargs or any(isinstance(a, (torch.device, str, int)) and not isinstance(a, bool) for a in args)

class SyncCounter(TorchDispatchMode):
    "Counts the ops that read device data on the host, by the training phase they happen in."
    def __init__(self):
        super().__init__(); self.phase, self.counts, self.batches = 'setup', collections.Counter(), 0
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNC_OPS or (name == 'aten::index' and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ()))):
            self.counts[self.phase, name] += 1
        return func(*args, **(kwargs or {}))

class CopyCounter(TorchFunctionMode):
    "Counts `.tolist()` (a host read the dispatcher never sees) and blocking copies to a named device (`.to(dev)`)."
    def __init__(self, sc): super().__init__(); self.sc = sc
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '')
        if name == 'tolist': self.sc.counts[self.sc.phase, 'tolist'] += 1
        elif name in ('to', 'cuda', 'cpu') and not kwargs.get('non_blocking', False) and \
                (name != 'to' or _names_a_device(args[1:], kwargs)):
            self.sc.counts[self.sc.phase, 'blocking copy'] += 1
        return func(*args, **kwargs)

class Phase(Callback):
    "Marks where a batch starts (`order` first) or ends (`order` last) and where validation runs."
    def __init__(self, sc, order, start):
        self.sc, self.order, self.start = sc, order, start
    def before_batch(self):
        if self.start and self.learn.training: self.sc.phase = 'batch'; self.sc.batches += 1
    def after_batch(self):
        if not self.start and self.learn.training: self.sc.phase = 'between'
    def before_validate(self): self.sc.phase = 'validate'
    def after_validate(self): self.sc.phase = 'between'

def syncs_per_batch(tmp_path, method, *extra, progress=True):
    cfg = load_config(None, ['dataset.type=synthetic', 'dataset.num_samples=256', 'dataset.image_size=16',
                             'dataset.num_classes=4', 'model.name=resnet_tiny', 'training.epochs=2',
                             'training.batch_size=64', 'training.device=cpu', f'ast.method={method}',
                             'ast.target_activation=0.25', f'logging.output_dir={tmp_path}', *extra], env_file=None)
    sc = SyncCounter()
    with sc, CopyCounter(sc):
        train(cfg, progress=progress, log=lambda *a: None, extra_cbs=(Phase(sc, -10_000, True), Phase(sc, 10_000, False)))
    batches = sc.batches
    per = collections.Counter()
    for (phase, op), n in sc.counts.items():
        if phase == 'batch': per[op] += n
    return {op: n / batches for op, n in per.items()}, sc.counts

@pytest.mark.parametrize('extra', [(), ('ast.bucket=8',)])
def test_ast_step_reads_back_only_the_count(tmp_path, extra):
    "The AST step's host reads: the active count (the train pass's shape depends on it) and the NaN guard; bar on."
    per, counts = syncs_per_batch(tmp_path, 'ast', *extra)
    # 1 count (int(mask.sum())), 1 read of the loss (NaN guard; the bar reuses it); the indices come from the top-k
    assert sum(per.values()) <= 2.0, (per, counts)
    assert per.get('aten::_local_scalar_dense', 0) <= 1.0 and per.get('aten::nonzero', 0) == 0, per

@pytest.mark.parametrize('method', ['full', 'topk', 'random'])
def test_fixed_size_step_reads_back_only_the_nan_guard(tmp_path, method):
    "full, top-k and random know the subset's size on the host: one read per batch (the loss), bar on."
    per, counts = syncs_per_batch(tmp_path, method)
    assert sum(per.values()) <= 1.0, (per, counts)

def test_sb_step_reads_its_rate_lazily_and_copies_nothing(tmp_path):
    "Selective-Backprop: the draw's size (one nonzero) and the NaN guard; its rate is not read per batch, no copies."
    per, counts = syncs_per_batch(tmp_path, 'sb')
    assert per.get('blocking copy', 0) == 0, per
    assert sum(per.values()) <= 2.0, (per, counts)

@pytest.mark.parametrize('extra', [(), ('ast.rescale=true',)])
def test_stale_step_has_no_selection_sync_and_no_index_copy(tmp_path, extra):
    "Stale scoring selects before the epoch: the indices come with the batch, nothing is copied per batch."
    per, _ = syncs_per_batch(tmp_path, 'ast', 'ast.scoring=stale', *extra)
    assert per.get('blocking copy', 0) == 0, per
    assert sum(per.values()) <= 1.0, per
