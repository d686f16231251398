"""`training.budget` (budget-matched full training) and `dataset.label_noise`, end to end through `train(cfg)`.

Tiny: digits at 8 px, resnet_tiny, 2-3 epochs, on the CPU."""
import json, os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import pytest, torch
from astlab.config import load_config, ConfigError
from astlab.engine.data import get_datasets
from astlab.lab.train import train
from astlab.engine.meters import history_rows

BASE = ['model.name=resnet_tiny', 'dataset.type=digits', 'dataset.image_size=8', 'dataset.num_samples=300',
        'training.batch_size=32', 'training.device=cpu', 'training.progress=false', 'training.lr=0.05',
        'training.min_lr=0.001', 'training.warmup_epochs=1']

def run(tmp_path, *ov):
    torch.set_num_threads(1)
    cfg = load_config(None, [*BASE, f'logging.output_dir={tmp_path}', *ov], env_file=None)
    return train(cfg, progress=False, log=lambda *a: None)

def test_budget_realises_flops_and_decays_lr(tmp_path):
    "budget 0.55 of 3 epochs x 9 batches: 15 steps (0.556 of full's FLOPs, within 5 %), LR at min_lr on the last one."
    full = run(tmp_path/'full', 'ast.method=full', 'training.epochs=3')
    part = run(tmp_path/'part', 'ast.method=full', 'training.epochs=3', 'training.budget=0.55')
    ratio = part['totals']['flops'] / full['totals']['flops']
    assert abs(ratio / 0.55 - 1) < 0.05, ratio
    assert part['complete'] and part['epochs_completed'] == 2
    h = history_rows(part)
    assert h[-1]['lr'] == pytest.approx(0.001)             # fully decayed at the end of the budget ...
    assert h[0]['lr'] > 0.01                               # ... not before
    assert history_rows(full)[1]['lr'] > 0.01        # the full run is still high at its epoch 2
    assert part['totals']['samples_trained'] == 15 * 32

def test_budget_needs_fresh_scoring(tmp_path):
    with pytest.raises(ConfigError, match='training.budget'):
        load_config(None, ['ast.scoring=stale', 'training.budget=0.5'], env_file=None)

def test_label_noise_flips_train_labels_only(tmp_path):
    cfg = lambda q: load_config(None, [*BASE, f'dataset.label_noise={q}'], env_file=None)
    clean, noisy = get_datasets(cfg(0.0)), get_datasets(cfg(0.2))
    y = lambda ds: np.array([ds[i][1] for i in range(len(ds))])
    changed = y(noisy.train_ds) != y(clean.train_ds)
    assert changed.sum() == round(0.2 * len(clean.train_ds))          # exactly the fraction
    assert (np.flatnonzero(changed) == np.flatnonzero(noisy.train_ds.flipped)).all()
    assert (y(noisy.val_ds) == y(clean.val_ds)).all()                 # validation clean
    assert (y(get_datasets(cfg(0.2)).train_ds) == y(noisy.train_ds)).all()   # fixed seed

def test_label_noise_run_reports_noisy_picks(tmp_path):
    res = run(tmp_path, 'ast.method=random', 'ast.target_activation=0.5', 'training.epochs=1', 'dataset.label_noise=0.2')
    ln = res['label_noise']
    assert ln['flipped'] == 60 and ln['fraction'] == pytest.approx(0.2)
    assert ln['trained'] == res['totals']['samples_trained']
    assert 0.05 < ln['trained_noisy_fraction'] < 0.4                  # a random pick: about the data's 20 %
    saved = json.loads(open(res['results_path']).read())
    assert saved['label_noise'] == ln
