"""The results file has the seed's layout (issue 11, item 5): `training_history` is a dict of lists, the seed's fields
first; every reader goes through `astlab.engine.meters.history_rows/history_columns`, so old row-style files still work."""
import json, runpy, sys
from pathlib import Path

import pytest

from astlab.lab.analysis import results_table
from astlab.config import load_config
from astlab.lab.experiment import summarize
from astlab.engine.meters import SEED_HISTORY, history_rows
from astlab.lab.train import train
from astlab.lab.tune import objective_value

BIN = Path(sys.executable).parent
SEED = ['epoch', 'train_acc', 'val_acc', 'energy_savings', 'activation_rate', 'time_min', 'threshold', 'step_time_ms',
        'est_energy_kj', 'est_flops_g']     # the seed README's training_history keys, in its order


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp('fmt')
    cfg = load_config(overrides=['dataset.num_samples=200', 'training.batch_size=32', 'model.name=resnet_tiny',
                                 'training.epochs=2', 'training.progress=false', 'training.device=cpu',
                                 f'logging.output_dir={d}'])
    res = train(cfg, log=lambda *a: None)
    return d, json.loads(Path(res['results_path']).read_text())


def test_training_history_is_the_seeds_dict_of_lists(run):
    _, r = run
    th = r['training_history']
    assert isinstance(th, dict) and list(th)[:len(SEED)] == SEED == list(SEED_HISTORY)
    assert all(isinstance(v, list) and len(v) == 2 for v in th.values())       # one value per epoch, every field
    assert th['epoch'] == [1, 2] and r['epochs_completed'] == 2
    assert all(isinstance(a, float) for a in th['val_acc'])                    # r["training_history"]["val_acc"] works
    assert {'val_loss', 'lr', 'samples_trained', 'complete'} <= set(th)        # astlab's extras: more lists, same dict
    assert th['complete'] == [True, True]


def rowstyle(r):
    "The same results file as earlier astlab versions wrote it: a list of per-epoch rows."
    return r | dict(training_history=history_rows(r))


def test_readers_accept_both_layouts(run):
    _, r = run
    old = rowstyle(r)
    assert isinstance(old['training_history'], list) and history_rows(old) == history_rows(r)
    for obj in ('accuracy', 'tracking'):
        assert objective_value(old, obj, 0.25) == objective_value(r['training_history'], obj, 0.25)
    p = dict(results_path='x.json')
    assert results_table([old | p]).equals(results_table([r | p]))
    assert summarize(old | p) == summarize(r | p)


def test_analyze_reads_old_row_style_files(run, tmp_path, monkeypatch, capsys):
    _, r = run
    (tmp_path/'final_results_old_1.json').write_text(json.dumps(rowstyle(r) | dict(run_name='old_run')))
    (tmp_path/'final_results_new_1.json').write_text(json.dumps(r | dict(run_name='new_run')))
    monkeypatch.setattr(sys, 'argv', ['astlab-analyze', '--results-dir', str(tmp_path), '--plot'])
    with pytest.raises(SystemExit) as e: runpy.run_path(str(BIN/'astlab-analyze'), run_name='__main__')
    out = capsys.readouterr().out
    assert e.value.code == 0 and 'old_run' in out and 'new_run' in out
    assert (tmp_path/'plots'/'old_run.png').is_file() and (tmp_path/'plots'/'new_run.png').is_file()
