"""Every override applies (issue 11, items 6 and 7): repeated `--set` flags through the real console scripts, and
overrides given as one string (papermill's `-p overrides ...`)."""
import runpy, sys
from pathlib import Path

import pytest

import astlab.lab.experiment as E
import astlab.integrations.kaggle as K
import astlab.lab.tune as T
from astlab.config import ConfigError, load_config

BIN = Path(sys.executable).parent
WANT = {'ast.method': 'random', 'ast.target_activation': 0.5, 'training.seed': 3}
FORMS = [['--set', 'ast.method=random', '--set', 'ast.target_activation=0.5', '--set', 'training.seed=3'],
         ['--set', 'ast.method=random', 'ast.target_activation=0.5', '--set', 'training.seed=3'],
         ['--set', 'ast.method=random,ast.target_activation=0.5 training.seed=3']]


def console(name, argv, monkeypatch):
    "Run console script `name` in this process exactly as the shell does (`__main__`, sys.argv); its exit code."
    monkeypatch.setattr(sys, 'argv', [name, *argv])
    with pytest.raises(SystemExit) as e: runpy.run_path(str(BIN/name), run_name='__main__')
    return e.value.code


def values(cfg): return {k: getattr(getattr(cfg, k.split('.')[0]), k.split('.')[1]) for k in WANT}


@pytest.fixture
def caught(monkeypatch):
    "Stop each CLI where it would start training, keeping the config it built."
    got = []
    def fake_train(cfg, **kw): got.append(cfg); raise ConfigError('stopped by the test')
    monkeypatch.setattr(E, 'train', fake_train)
    def fake_tune(cfg, *a, **kw): got.append(cfg); raise ConfigError('stopped by the test')
    monkeypatch.setattr(T, 'tune', fake_tune)
    def fake_kernel(out, config, slug, title, gpu, internet, private, sources, install, overrides, *a, **kw):
        got.append(load_config(config, overrides)); raise ConfigError('stopped by the test')
    monkeypatch.setattr(K, 'write_kernel', fake_kernel)
    return got


@pytest.mark.parametrize('form', FORMS, ids=['repeated', 'mixed', 'one-string'])
@pytest.mark.parametrize('cli', ['astlab-run', 'astlab-sweep', 'astlab-tune', 'astlab-kaggle'])
def test_every_set_applies(cli, form, caught, monkeypatch, tmp_path):
    cfg_file = tmp_path/'c.yaml'; cfg_file.write_text('training: {epochs: 1}\n')
    args = {'astlab-run': ['--config', str(cfg_file)], 'astlab-sweep': [str(cfg_file), '--output-dir', str(tmp_path)],
            'astlab-tune': ['--config', str(cfg_file)],
            'astlab-kaggle': ['--config', str(cfg_file), '--out', str(tmp_path/'k')]}[cli]
    assert console(cli, [*args, *form], monkeypatch) == 2          # stopped by the test, not by a parse error
    [cfg] = caught
    assert values(cfg) == WANT and cfg.training.epochs == 1


@pytest.mark.parametrize('ov', ['training.epochs=1', 'training.epochs=1,training.lr=0.5', 'training.epochs=1 training.lr=0.5',
                                ['training.epochs=1', 'training.lr=0.5']])
def test_overrides_as_one_string_or_a_list(ov):
    "papermill's `-p overrides training.epochs=1` hands over a string: never iterated one character at a time."
    cfg = load_config(overrides=ov)
    assert cfg.training.epochs == 1 and cfg.training.lr == (0.5 if 'lr' in str(ov) else load_config().training.lr)
    assert E.build_config(None, ov, epochs=2).training.epochs == 2          # CLI shortcuts still win
    assert E.build_config(None, ov).training.epochs == 1
