"""Selection methods of issue 13 end to end: config relations, weights reaching the loss, exact resume, honest FLOPs."""
import json, math
from pathlib import Path

import pytest, torch

from astlab.config import ConfigError, load_config
from astlab.engine.checkpoint import load_checkpoint
from astlab.engine.learner import Callback
from astlab.lab.train import train
from astlab.engine.meters import history_rows
from stops import StopAt

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


# ------------------------------------------------------------------------------------------------ epoch-level methods

@pytest.mark.parametrize('bad, key', [
    (['ast.method=rs2', 'ast.scoring=stale'], 'ast.scoring'),
    (['ast.method=infobatch', 'ast.interrupt_every=2'], 'ast.interrupt_every'),
    (['ast.scoring=stale', 'ast.interrupt_every=2'], 'ast.interrupt_every'),
    (['ast.start_epoch=6', 'ast.anneal_epochs=5'], 'ast.start_epoch'),
    (['ast.method=infobatch', 'ast.infobatch_prune=1.0'], 'ast.infobatch_prune'),
])
def test_schedule_relations(bad, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')): load_config(overrides=bad)


def test_rs2_counts_only_what_it_draws(tmp_path):
    res = quiet(cfg_for(tmp_path, 'ast.method=rs2', 'ast.target_activation=0.25'))
    t = res['totals']
    N = t['samples_seen'] // 3
    assert t['samples_scored'] == 0 and t['samples_trained'] == 3 * round(0.25 * N)
    assert t['flops'] == pytest.approx(t['samples_trained'] * res['flops_per_sample']['fwd_bwd'])
    assert t['activation_rate'] == pytest.approx(round(0.25 * N) / N)


def test_infobatch_prunes_after_a_full_first_epoch_and_anneals(tmp_path):
    res = quiet(cfg_for(tmp_path, 'ast.method=infobatch', 'training.epochs=4', 'ast.infobatch_delta=0.75'))
    rates = [r['activation_rate'] for r in history_rows(res)]
    assert rates[0] == 1.0 and rates[-1] == 1.0 and 0.5 < rates[1] < 1.0 and 0.5 < rates[2] < 1.0, rates  # e + 1 > 3: full
    res = quiet(cfg_for(tmp_path/'tgt', 'ast.method=infobatch', 'ast.infobatch_prune=null', 'ast.target_activation=0.4',
                        'training.epochs=4', 'ast.infobatch_delta=1.0'))
    rates = [r['activation_rate'] for r in history_rows(res)]
    assert rates[0] == 1.0 and all(abs(r - 0.4) < 0.02 for r in rates[1:]), rates
    assert res['totals']['samples_scored'] == 0


def test_start_anneal_interrupt_for_a_per_batch_method(tmp_path):
    res = quiet(cfg_for(tmp_path, 'ast.method=topk', 'ast.start_epoch=1', 'ast.anneal_epochs=1', 'training.epochs=3'))
    h = history_rows(res)
    assert [r['activation_rate'] for r in h][0::2] == [1.0, 1.0] and h[1]['activation_rate'] < 0.3
    res = quiet(cfg_for(tmp_path/'int', 'ast.method=topk', 'ast.interrupt_every=2', 'training.epochs=1'))
    assert 0.55 < res['totals']['activation_rate'] < 0.7                 # half the batches whole, half at 0.25
    assert res['totals']['samples_scored'] < res['totals']['samples_seen']  # whole batches skip the score pass


@pytest.mark.parametrize('ov', [['ast.method=rs2', 'ast.target_activation=0.4'],
                                ['ast.method=infobatch', 'ast.infobatch_delta=1.0'],
                                ['ast.sharpness=2', 'ast.interrupt_every=3', 'ast.start_epoch=1']])
def test_epoch_and_schedule_resume_mid_epoch_is_exact(tmp_path, ov):
    ref = quiet(cfg_for(tmp_path/'ref', *ov))
    part = quiet(cfg_for(tmp_path/'run', *ov), extra_cbs=(StopAt(1, 1),))
    assert not part['complete']
    res = quiet(cfg_for(tmp_path/'run', *ov), resume='auto')
    assert history(res) == history(ref)
    a, b = final_weights(tmp_path/'run'), final_weights(tmp_path/'ref')
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------ eval_every

def test_eval_every_skips_evaluations_but_not_the_last(tmp_path):
    res = quiet(cfg_for(tmp_path, 'training.eval_every=2', 'ast.method=random'))
    vals = [r['val_acc'] for r in history_rows(res)]
    assert vals[0] is None and vals[1] is not None and vals[2] is not None    # epochs 2 and 3 (the last)
    assert res['best_accuracy'] == max(vals[1:])
    saved = json.loads(Path(res['results_path']).read_text())
    assert saved['training_history']['val_acc'][0] is None      # the seed's dict-of-lists layout on disk
