"""Selection methods of issue 13 end to end: config relations, weights reaching the loss, exact resume, honest FLOPs."""
import json, math
from pathlib import Path

import pytest, torch

from astlab.config import ConfigError, load_config
from astlab.checkpoint import load_checkpoint
from astlab.learner import Callback, CancelFitException
from astlab.train import train
from astlab.meters import history_rows

TINY = ['dataset.num_samples=300', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.epochs=3',
        'training.progress=false', 'training.device=cpu']
WALL = {'time_min', 'step_time_ms', 'est_energy_kj', 'epoch_energy_kj'}


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_for(d, *extra): return load_config(overrides=TINY + [f'logging.output_dir={d}', *extra])
def quiet(cfg, **kw): return train(cfg, log=lambda s: None, **kw)
def history(res): return [{k: v for k, v in h.items() if k not in WALL} for h in history_rows(res)]


class StopAt(Callback):
    "Interrupt the fit after batch `it` of epoch `epoch`."
    order = 70
    def __init__(self, epoch, it): self.at = (epoch, it)
    def after_batch(self):
        if (self.learn.epoch, self.learn.iter) == self.at:
            self.learn.stop_reason = 'test_stop'; raise CancelFitException()


def final_weights(d):
    [ck] = Path(d).glob('checkpoints/*/last.pt')
    return load_checkpoint(ck)['model']


# ------------------------------------------------------------------------------------------------ config relations

@pytest.mark.parametrize('bad, key', [
    (['ast.method=random', 'ast.sharpness=2'], 'ast.sharpness'),
    (['ast.method=is', 'ast.sharpness=2'], 'ast.sharpness'),
    (['ast.weight_clip=5'], 'ast.weight_clip'),                       # hard AST has no weights to clip
    (['ast.uniform_floor=0.1', 'ast.method=topk'], 'ast.uniform_floor'),
    (['ast.scoring=stale', 'ast.sharpness=2'], 'ast.scoring'),
    (['ast.sharpness=0'], 'ast.sharpness'),
])
def test_soft_relations(bad, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')): load_config(overrides=bad)


def test_soft_configs_accepted():
    for ok in (['ast.sharpness=2', 'ast.weight_clip=10'], ['ast.method=is', 'ast.uniform_floor=0.2'],
               ['ast.sharpness=.inf']):
        load_config(overrides=ok)


# ------------------------------------------------------------------------------------------------ soft AST / IS

class Weights(Callback):
    "Record the loss weights the learner applied."
    order = 1
    def __init__(self): self.seen = []
    def after_pred(self):
        w = self.learn.weights
        if self.learn.training: self.seen.append(None if w is None else w.detach().clone())


def test_is_trains_with_weights_and_default_ast_is_unweighted(tmp_path):
    rec = Weights()
    res = quiet(cfg_for(tmp_path/'is', 'ast.method=is'), extra_cbs=(rec,))
    assert res['complete'] and res['method'] == 'is'
    assert all(w is not None for w in rec.seen) and any(not torch.allclose(w, torch.ones_like(w)) for w in rec.seen)
    assert 0.15 < res['totals']['activation_rate'] < 0.4
    rec = Weights()
    quiet(cfg_for(tmp_path/'ast', 'training.epochs=1'), extra_cbs=(rec,))
    assert all(w is None for w in rec.seen)              # hard AST (sharpness inf): today's unweighted loss


@pytest.mark.parametrize('ov', [['ast.method=is'], ['ast.sharpness=3', 'ast.uniform_floor=0.1']])
def test_soft_resume_mid_epoch_is_exact(tmp_path, ov):
    ref = quiet(cfg_for(tmp_path/'ref', *ov))
    part = quiet(cfg_for(tmp_path/'run', *ov), extra_cbs=(StopAt(1, 2),))
    assert not part['complete']
    res = quiet(cfg_for(tmp_path/'run', *ov), resume='auto')
    assert history(res) == history(ref)
    a, b = final_weights(tmp_path/'run'), final_weights(tmp_path/'ref')
    assert all(torch.equal(a[k], b[k]) for k in a)
