"""RHO-LOSS end to end: aux FLOPs charged once into totals.flops, resume without retraining, astlab-compare's cost."""
from pathlib import Path

import pytest, torch

import astlab.methods.rholoss as rl
from astlab.config import ConfigError, load_config
from astlab.engine.data import get_datasets
from astlab.engine.meters import history_rows
from test_methods import StopAt, final_weights, history, quiet, _one_thread   # _one_thread: autouse, one torch thread

TINY = ['dataset.num_samples=300', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.epochs=3',
        'training.progress=false', 'training.device=cpu', 'ast.method=rholoss', 'ast.target_activation=0.5',
        'ast.rho_aux_epochs=2']


def cfg_for(d, *extra): return load_config(overrides=TINY + [f'logging.output_dir={d}', *extra])


@pytest.fixture(scope='module')
def ref_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('ref'); return d, quiet(cfg_for(d))


def test_rholoss_charges_aux_flops_into_totals(ref_run):
    d, res = ref_run
    t, f, rho = res['totals'], res['flops_per_sample'], res['rholoss']
    assert rho['aux_flops'] > 0 and rho['aux_samples_trained'] == 2 * rho['aux_samples_scored']   # 2 epochs over both halves
    main = t['samples_scored'] * f['fwd'] + t['samples_trained'] * f['fwd_bwd']
    assert t['flops'] == pytest.approx(main + rho['aux_flops'])                # the aux models are in the total, once
    assert rho['aux_share'] == pytest.approx(rho['aux_flops'] / t['flops'])
    assert history_rows(res)[-1]['est_flops_g'] == pytest.approx(t['flops'] / 1e9)
    assert t['activation_rate'] == pytest.approx(0.5, abs=0.02)
    assert not rho['cached'] and list(Path(d).glob(f'checkpoints/*/{rl.IL_FILE}'))


@pytest.mark.parametrize('drop', ['cache_file', 'checkpoint'])
def test_rholoss_resume_reuses_irreducible_losses(ref_run, tmp_path, monkeypatch, drop):
    "Stopped mid-epoch, resumed from the checkpoint (cache file gone) or rerun from the cache file (checkpoint gone)."
    ref_dir, ref = ref_run
    part = quiet(cfg_for(tmp_path/'run'), extra_cbs=(StopAt(1, 1),))
    assert not part['complete']
    [ck_dir] = (tmp_path/'run'/'checkpoints').iterdir()
    if drop == 'cache_file': (ck_dir/rl.IL_FILE).unlink()
    else:
        for p in ck_dir.glob('*.pt'):
            if p.name != rl.IL_FILE: p.unlink()
    def no_retrain(*a, **k): raise AssertionError('the irreducible-loss models were trained again')
    monkeypatch.setattr(rl, 'irreducible_losses', no_retrain)
    res = quiet(cfg_for(tmp_path/'run'), resume='auto')
    assert res['rholoss']['cached'] and res['rholoss']['il_checksum'] == ref['rholoss']['il_checksum']
    assert res['totals']['flops'] == pytest.approx(ref['totals']['flops'])   # aux charged once, not per start
    assert history(res) == history(ref)                                     # and training is the same as uninterrupted
    a, b = final_weights(tmp_path/'run'), final_weights(ref_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_irreducible_loss_is_high_on_flipped_labels(tmp_path):
    "The aux models train on the same noisy labels; a flipped sample's IL is high, so its reducible loss is low."
    b = get_datasets(load_config(overrides=['dataset.label_noise=0.2', 'dataset.image_size=8']))
    il, info = rl.irreducible_losses(b.train_ds, b.num_classes, b.image_size, epochs=5)
    flipped = torch.as_tensor(b.train_ds.flipped)
    assert il[flipped].mean() > 2 * il[~flipped].mean(), (il[flipped].mean(), il[~flipped].mean())
    assert info['aux_accuracy'] > 0.6       # against the noisy labels of the half it never saw (clean share 0.8)


def test_compare_accepts_rholoss_and_charges_the_aux_cost():
    from astlab.lab.compare import available_methods, check_inputs, cost_model, method_overrides
    from astlab.lab.experiment import build_config
    assert 'rholoss' in available_methods()
    conf = 'configs/digits_compare.yaml'
    cost = lambda m, *ov: cost_model(build_config(conf, [*ov, *method_overrides(m, 0.5, 0.5)]))
    big = ['ast.rho_aux_model=resnet_tiny']                                 # aux as costly as the main model
    share = rl.aux_cost_share(build_config(conf, [*big, 'ast.method=rholoss']))
    assert cost('rholoss', *big)(0.3) == pytest.approx(cost('topk')(0.3) + share)
    assert cost('rholoss')(0.3) > cost('topk')(0.3)                         # the default mlp costs a little
    check_inputs(conf, ['0.5'], ['rholoss'])                                # reachable with the small aux model
    with pytest.raises(ConfigError, match='cannot reach any budget.*irreducible-loss'): check_inputs(conf, ['0.5'], ['rholoss'], big)
