"""Host syncs on the hot path, counted per training batch through the whole `train()` stack.

On a GPU, every op that brings a value back to the host (`.item()`, `int(t)`, `bool(t)`, `nonzero`, a boolean-mask
index) stalls the CPU until the GPU has drained its queue. Counting those ops at the dispatcher finds them on the CPU
too, where CI runs: the same Python code issues the same ops on either device.
"""
import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from astlab.config import load_config
from astlab.learner import Callback
from astlab.train import train

SYNC_OPS = {'aten::_local_scalar_dense', 'aten::nonzero', 'aten::nonzero_static', 'aten::masked_select',
            'aten::is_nonzero', 'aten::equal'}

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

def syncs_per_batch(tmp_path, method, *extra):
    cfg = load_config(None, ['dataset.type=synthetic', 'dataset.num_samples=512', 'dataset.image_size=16',
                             'dataset.num_classes=4', 'model.name=resnet_tiny', 'training.epochs=2',
                             'training.batch_size=64', 'training.device=cpu', f'ast.method={method}',
                             'ast.target_activation=0.25', f'logging.output_dir={tmp_path}', *extra], env_file=None)
    sc = SyncCounter()
    with sc: train(cfg, progress=False, log=lambda *a: None,
                         extra_cbs=(Phase(sc, -10_000, True), Phase(sc, 10_000, False)))
    batches = sc.batches
    per = collections.Counter()
    for (phase, op), n in sc.counts.items():
        if phase == 'batch': per[op] += n
    return {op: n / batches for op, n in per.items()}, sc.counts

@pytest.mark.parametrize('extra', [(), ('ast.bucket=8',)])
def test_ast_step_reads_back_only_the_count(tmp_path, extra):
    "The AST step's host reads: the active count (the train pass's shape depends on it) and the NaN guard."
    per, counts = syncs_per_batch(tmp_path, 'ast', *extra)
    total = sum(per.values())
    # 1 count (int(mask.sum())), 1 boolean-mask index (right after it: no second drain), 1 finiteness check
    assert total <= 3.0, (per, counts)
    assert per.get('aten::_local_scalar_dense', 0) <= 2.0, per

def test_full_step_reads_back_only_the_nan_guard(tmp_path):
    per, counts = syncs_per_batch(tmp_path, 'full')
    assert sum(per.values()) <= 1.0, (per, counts)

def test_random_step_reads_back_only_the_subset_indices_and_the_nan_guard(tmp_path):
    per, counts = syncs_per_batch(tmp_path, 'random')
    assert sum(per.values()) <= 2.0, (per, counts)

def test_stale_step_has_no_selection_sync(tmp_path):
    "Stale scoring selects before the epoch: its batches read back no more than full training's."
    per, _ = syncs_per_batch(tmp_path, 'ast', 'ast.scoring=stale')
    assert sum(per.values()) <= 1.0, per
