"""Exact resume with DataLoader worker processes and random augmentation (every GPU preset uses workers).

Restoring the loader's generator does not bring back what persistent workers had drawn, nor their augmentation RNG.
The loaders therefore take their order from `(seed, epoch)` and seed every sample's augmentation from
`(seed, epoch, index)` (`astlab.engine.data.EpochSampler`), so a resumed run with fresh workers replays the same crops."""
from pathlib import Path

import numpy as np, pytest, torch
from PIL import Image

from astlab.engine.checkpoint import load_checkpoint
from astlab.config import load_config
from astlab.lab.train import train
from stops import StopAt




@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('imgs')
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        (root/c).mkdir()
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root/c/f'{i}.png')
    return root


def cfg(folder, out, *extra):   # image_size 16: Resize + RandomCrop(padding) + flip, all random
    return load_config(overrides=[
        'dataset.type=folder', f'dataset.train_dir={folder}', 'dataset.image_size=16', 'dataset.val_fraction=0.2',
        'model.name=resnet_tiny', 'training.epochs=2', 'training.batch_size=8', 'training.num_workers=2',
        'training.device=cpu', 'training.progress=false', 'ast.target_activation=0.5', f'logging.output_dir={out}', *extra],
        env_file=None)


def weights(d):
    [ck] = Path(d).glob('checkpoints/*/last.pt')
    return load_checkpoint(ck)['model']


@pytest.mark.parametrize('extra', [(), ('ast.scoring=stale',)])
def test_resume_mid_epoch_with_workers_is_exact(folder, tmp_path, extra):
    torch.set_num_threads(1)
    ref = train(cfg(folder, tmp_path/'ref', *extra), log=lambda *a: None)
    part = train(cfg(folder, tmp_path/'run', *extra), log=lambda *a: None, extra_cbs=(StopAt(1, 1),))
    assert not part['complete']
    res = train(cfg(folder, tmp_path/'run', *extra), log=lambda *a: None, resume='auto')
    assert res['complete']
    a, b = weights(tmp_path/'ref'), weights(tmp_path/'run')
    for k in a: assert torch.equal(a[k], b[k]), k
    assert res['training_history']['val_acc'] == ref['training_history']['val_acc']


def test_resumed_epoch_loads_only_the_batches_it_trains(tmp_path, monkeypatch):
    "A mid-epoch resume starts the sampler past the finished batches: they are not loaded (or decoded) again."
    from astlab.engine.data import IndexedDataset
    ov = ['dataset.type=digits', 'dataset.num_samples=200', 'dataset.image_size=8', 'model.name=resnet_tiny',
          'training.epochs=2', 'training.batch_size=16', 'training.num_workers=0', 'training.device=cpu',
          'training.progress=false', 'ast.target_activation=0.5', f'logging.output_dir={tmp_path}']
    c = load_config(overrides=ov, env_file=None)
    part = train(c, log=lambda *a: None, extra_cbs=(StopAt(1, 2),))      # epoch 2: 3 of its batches trained, then stop
    assert not part['complete']
    loads, orig = [], IndexedDataset.__getitem__
    monkeypatch.setattr(IndexedDataset, '__getitem__', lambda self, k: loads.append(k) or orig(self, k))
    res = train(c, log=lambda *a: None, resume='auto')
    assert res['complete']
    train_loads = [k for k in loads if isinstance(k, tuple)]             # training keys are (index, augmentation seed)
    n_batches = 200 // 16                                                 # 200 training samples (+ 40 held out), drop_last
    assert len(train_loads) == (n_batches - 3) * 16, len(train_loads)     # was n_batches * 16: the 3 done were reloaded
    assert len(set(train_loads)) == len(train_loads)
