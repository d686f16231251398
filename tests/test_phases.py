"""Honest step time and where the time goes: a per-phase breakdown in every result, a resumed epoch timed by the
batches it ran, and evaluation's FLOPs reported apart (charged to no method) with a statement of what is counted."""
import pytest, torch

from astlab.config import load_config
from astlab.engine.meters import history_rows
from astlab.lab.train import train
from stops import StopAt

ARGS = ['dataset.type=synthetic', 'dataset.num_samples=240', 'dataset.image_size=16', 'dataset.num_classes=4',
        'model.name=resnet_tiny', 'training.epochs=2', 'training.batch_size=32', 'training.device=cpu',
        'training.progress=false']




def run(out, *extra, **kw):
    return train(load_config(None, [*ARGS, f'logging.output_dir={out}', *extra], env_file=None), log=lambda *a: None, **kw)


def test_phases_eval_flops_and_resumed_step_count(tmp_path):
    ref = run(tmp_path/'ref')
    h = history_rows(ref)
    for row, ph in zip(h, ref['phase_history'], strict=True):
        assert {'data', 'score', 'train', 'optimizer', 'eval', 'checkpoint'} <= set(ph) and ph['epoch'] == row['epoch'], ph
        assert all(v >= 0 for v in ph.values())
        assert row["steps"] == 240 // 32                       # batches of the epoch (drop_last)
    assert set(ref['phase_s']) >= {'data', 'train', 'eval'} and 'flops' in ref['counted']
    tot = ref['totals']
    assert tot['eval_samples'] == 2 * 48 and tot['eval_flops'] == pytest.approx(96 * ref['flops_per_sample']['fwd'])
    # stop in the middle of epoch 2, resume: the epoch counts its 7 batches (3 + 4), not 3 + 7 (the replay counted as steps)
    run(tmp_path/'run', extra_cbs=(StopAt(1, 2),))
    res = run(tmp_path/'run', resume='auto')
    assert [r['steps'] for r in history_rows(res)] == [r['steps'] for r in h]
    assert 'resume' in res['phase_history'][-1] and len(res['phase_history']) == 2
