"Error paths, overrides, .env handling and redaction for `astlab.config` (happy paths live in nbs/00_config.ipynb)."
import json, os
from dataclasses import fields

import pytest

from astlab.config import (Config, ConfigError, config_from_dict, load_config, redact, save_config)

SEED_YAML = """\
model: {name: resnet50, pretrained: true}
dataset: {type: folder, train_dir: /data/train, val_dir: /data/val, num_classes: 1000, image_size: 224}
ast: {target_activation: 0.25, initial_threshold: 3.0, min_threshold: 0.1, kp: 0.1, ki: 0.01, kp_warmup_epochs: 1, ki_warmup_epochs: 2, entropy_weight: 0.5, min_active: 8}
training: {epochs: 90, batch_size: 256, lr: 0.1, momentum: 0.9, weight_decay: 0.0001, min_lr: 0.0, num_workers: 8, mixed_precision: true, grad_accum_steps: 1, max_minutes: 540, early_stop_patience: 10}
logging: {output_dir: results, jsonl_path: results/log.jsonl}
metrics: {base_flop_per_sample: 4.1e9, gpu_tdp_watts: 300}
"""

SEED_KEYS = {
    'model': {'name', 'pretrained'},
    'dataset': {'type', 'train_dir', 'val_dir', 'name', 'split_train', 'split_val', 'num_classes', 'image_size'},
    'ast': {'target_activation', 'initial_threshold', 'min_threshold', 'kp', 'ki', 'kp_warmup_epochs',
            'ki_warmup_epochs', 'entropy_weight', 'min_active'},
    'training': {'epochs', 'batch_size', 'lr', 'momentum', 'weight_decay', 'min_lr', 'num_workers', 'mixed_precision',
                 'grad_accum_steps', 'max_minutes', 'early_stop_patience'},
    'logging': {'output_dir', 'jsonl_path'},
    'metrics': {'base_flop_per_sample', 'gpu_tdp_watts'},
}
NEW_KEYS = {
    'ast': {'method', 'scorer', 'max_threshold', 'ema', 'sb_beta', 'sb_history'},
    'training': {'seed', 'optimizer', 'nesterov', 'warmup_epochs', 'device'},
    'dataset': {'config', 'image_column', 'label_column', 'num_samples', 'val_fraction', 'on_bad_image'},
    'logging': {'run_name'},
}


def write(tmp_path, text, name='cfg.yaml'):
    p = tmp_path / name
    p.write_text(text)
    return p


def err(fn, *args, **kw) -> str:
    with pytest.raises(ConfigError) as e: fn(*args, **kw)
    assert isinstance(e.value, ValueError)
    return str(e.value)


# ---------------------------------------------------------------- defaults and the seed contract

def test_defaults():
    c = load_config(env_file=None)
    assert c == Config()
    assert (c.model.name, c.model.pretrained) == ('resnet_small', False)
    assert (c.dataset.type, c.dataset.image_size, c.dataset.num_classes) == ('digits', 32, None)
    assert (c.dataset.split_train, c.dataset.split_val, c.dataset.val_fraction) == ('train', 'validation', 0.2)
    assert (c.ast.method, c.ast.scorer, c.ast.max_threshold, c.ast.min_active) == ('ast', 'significance', None, 2)
    assert (c.training.epochs, c.training.batch_size, c.training.lr, c.training.weight_decay) == (10, 128, 0.1, 5e-4)
    assert (c.training.optimizer, c.training.nesterov, c.training.device, c.training.seed) == ('sgd', True, 'auto', 0)
    assert c.training.mixed_precision is True and c.training.max_minutes is None
    assert (c.logging.output_dir, c.logging.jsonl_path, c.logging.run_name) == ('results', None, None)
    assert (c.metrics.base_flop_per_sample, c.metrics.gpu_tdp_watts) == (None, 300.0)


def test_all_contract_keys_present():
    d = Config().to_dict()
    assert list(d) == ['model', 'dataset', 'ast', 'training', 'logging', 'metrics']
    for section, keys in list(SEED_KEYS.items()) + list(NEW_KEYS.items()):
        assert keys <= set(d[section]), (section, keys - set(d[section]))


def test_to_dict_is_plain_and_roundtrips():
    d = Config().to_dict()
    assert type(d) is dict and all(type(v) is dict for v in d.values())
    json.dumps(d)
    assert config_from_dict(d) == Config()


def test_seed_yaml_loads(tmp_path):
    c = load_config(write(tmp_path, SEED_YAML), env_file=None)
    assert (c.model.name, c.model.pretrained) == ('resnet50', True)
    assert (c.dataset.type, c.dataset.train_dir, c.dataset.num_classes, c.dataset.image_size) == ('folder', '/data/train', 1000, 224)
    assert (c.ast.initial_threshold, c.ast.min_active, c.ast.entropy_weight) == (3.0, 8, 0.5)
    assert c.training.max_minutes == 540.0 and isinstance(c.training.max_minutes, float)
    assert c.training.weight_decay == 1e-4 and c.training.early_stop_patience == 10
    assert c.metrics.base_flop_per_sample == 4.1e9 and isinstance(c.metrics.base_flop_per_sample, float)
    assert c.metrics.gpu_tdp_watts == 300.0 and isinstance(c.metrics.gpu_tdp_watts, float)
    assert c.logging.jsonl_path == 'results/log.jsonl'


def test_json_file(tmp_path):
    p = write(tmp_path, json.dumps({'training': {'lr': 0.01}, 'ast': {'method': 'random'}}), 'cfg.json')
    c = load_config(p, env_file=None)
    assert (c.training.lr, c.ast.method) == (0.01, 'random')


def test_yml_extension_and_exponent_floats(tmp_path):
    c = load_config(write(tmp_path, 'training: {lr: 1e-3, weight_decay: 5E-5}\n', 'c.yml'), env_file=None)
    assert (c.training.lr, c.training.weight_decay) == (1e-3, 5e-5)


def test_empty_section_keeps_defaults(tmp_path):
    c = load_config(write(tmp_path, 'training:\nast:\n  kp: 0.2\n'), env_file=None)
    assert c.training == Config().training and c.ast.kp == 0.2


# ---------------------------------------------------------------- file-level errors

def test_missing_file(tmp_path):
    m = err(load_config, tmp_path / 'nope.yaml', env_file=None)
    assert 'nope.yaml' in m and 'not found' in m


def test_path_is_directory(tmp_path):
    m = err(load_config, tmp_path, env_file=None)
    assert str(tmp_path) in m and 'directory' in m


@pytest.mark.parametrize('text', ['', '   \n', '# only a comment\n'])
def test_empty_file(tmp_path, text):
    m = err(load_config, write(tmp_path, text, 'empty.yaml'), env_file=None)
    assert 'empty.yaml' in m and 'empty' in m


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    m = err(load_config, write(tmp_path, 'training:\n  lr: 0.1\n   epochs: 3\n', 'broken.yaml'), env_file=None)
    assert 'broken.yaml' in m and 'line 3' in m and 'YAML' in m


def test_yaml_unclosed_flow(tmp_path):
    m = err(load_config, write(tmp_path, 'training: {lr: 0.1\nast: {}\n', 'flow.yaml'), env_file=None)
    assert 'flow.yaml' in m and 'line' in m


def test_json_syntax_error(tmp_path):
    m = err(load_config, write(tmp_path, '{"training": {"lr": 0.1,}}', 'bad.json'), env_file=None)
    assert 'bad.json' in m and 'line 1' in m


def test_unsafe_yaml_tag_rejected(tmp_path):
    m = err(load_config, write(tmp_path, 'model: !!python/object/apply:os.system ["echo hi"]\n', 'evil.yaml'), env_file=None)
    assert 'evil.yaml' in m


@pytest.mark.parametrize('text,kind', [('- training\n- ast\n', 'list'), ('just text\n', 'str'), ('42\n', 'int')])
def test_top_level_not_mapping(tmp_path, text, kind):
    m = err(load_config, write(tmp_path, text, 'top.yaml'), env_file=None)
    assert 'top.yaml' in m and 'mapping' in m and kind in m


def test_dict_top_level_not_mapping():
    m = err(config_from_dict, ['training'], 'mydict')
    assert 'mydict' in m and 'mapping' in m


@pytest.mark.parametrize('text', ['training: [0.1, 0.9]\n', 'training: 0.1\n', 'training: fast\n'])
def test_section_not_mapping(tmp_path, text):
    m = err(load_config, write(tmp_path, text, 'sec.yaml'), env_file=None)
    assert "'training'" in m and 'sec.yaml' in m and 'mapping' in m


# ---------------------------------------------------------------- unknown names

def test_unknown_section(tmp_path):
    m = err(load_config, write(tmp_path, 'trainng: {lr: 0.1}\n', 'u.yaml'), env_file=None)
    assert "'trainng'" in m and 'u.yaml' in m and "Did you mean 'training'?" in m


def test_unknown_key_suggests(tmp_path):
    m = err(load_config, write(tmp_path, 'training: {lrr: 0.1}\n', 'u.yaml'), env_file=None)
    assert "'training.lrr'" in m and 'u.yaml' in m and "Did you mean 'training.lr'?" in m


def test_unknown_key_without_close_match_lists_keys(tmp_path):
    m = err(load_config, write(tmp_path, 'model: {zzzzzz: 1}\n', 'u.yaml'), env_file=None)
    assert "'model.zzzzzz'" in m and 'u.yaml' in m and 'name, pretrained' in m and 'Did you mean' not in m


def test_unknown_key_from_dict_names_source():
    m = err(config_from_dict, {'ast': {'targt_activation': 0.3}}, 'sweep point 3')
    assert "'ast.targt_activation'" in m and 'sweep point 3' in m and "'ast.target_activation'" in m


# ---------------------------------------------------------------- types

@pytest.mark.parametrize('section,key,yaml_value,want', [
    ('model', 'name', '50', 'expected str, got int 50'),          # int where str expected
    ('model', 'pretrained', '"yes"', 'expected bool'),            # str where bool expected
    ('model', 'pretrained', '1', 'expected bool'),                # int where bool expected
    ('training', 'epochs', 'ten', "expected int, got str 'ten'"), # str where int expected
    ('training', 'epochs', 'true', 'expected int, got bool'),     # bool is not an int
    ('training', 'epochs', '10.5', 'expected int, got float'),    # float is not an int
    ('training', 'lr', 'true', 'expected float, got bool'),       # bool is not a float
    ('training', 'lr', '"0.1"', "expected float, got str '0.1'"),
    ('training', 'lr', '[0.1]', 'expected float, got list'),
    ('training', 'lr', 'null', 'expected float, got null'),       # None only for Optional
    ('model', 'name', 'null', 'expected str, got null'),
    ('training', 'max_minutes', 'soon', 'expected float or null'),
    ('dataset', 'num_classes', '10.0', 'expected int or null'),
])
def test_wrong_type(tmp_path, section, key, yaml_value, want):
    m = err(load_config, write(tmp_path, f'{section}:\n  {key}: {yaml_value}\n', 'types.yaml'), env_file=None)
    assert f"'{section}.{key}'" in m and 'types.yaml' in m and want in m


def test_int_accepted_for_float_and_none_for_optional():
    c = config_from_dict({'training': {'lr': 1, 'max_minutes': None}, 'metrics': {'gpu_tdp_watts': 250}})
    assert c.training.lr == 1.0 and type(c.training.lr) is float
    assert c.metrics.gpu_tdp_watts == 250.0 and type(c.metrics.gpu_tdp_watts) is float
    assert c.training.max_minutes is None


# ---------------------------------------------------------------- ranges and choices

@pytest.mark.parametrize('section,key,value', [
    ('ast', 'target_activation', 0), ('ast', 'target_activation', 1.5), ('ast', 'target_activation', -0.1),
    ('training', 'lr', -0.1), ('training', 'weight_decay', -1e-4),
    ('training', 'epochs', 0), ('training', 'batch_size', 0), ('ast', 'min_active', 0),
    ('training', 'grad_accum_steps', 0),
    ('ast', 'kp', -0.1), ('ast', 'ki', -0.01), ('ast', 'entropy_weight', -1.0),
    ('ast', 'method', 'magic'), ('ast', 'scorer', 'vibes'), ('dataset', 'type', 'csv'),
    ('training', 'optimizer', 'adam'), ('dataset', 'on_bad_image', 'ignore'),
    ('dataset', 'val_fraction', 1.0), ('ast', 'ema', 1.0), ('training', 'max_minutes', 0),
])
def test_out_of_range(tmp_path, section, key, value):
    m = err(load_config, write(tmp_path, json.dumps({section: {key: value}}), 'range.yaml'), env_file=None)
    assert f"'{section}.{key}'" in m and 'range.yaml' in m and repr(value) in m


def test_choice_suggestion():
    m = err(config_from_dict, {'ast': {'method': 'top-k'}}, 'x.yaml')
    assert "Did you mean 'topk'?" in m and 'ast, random, topk, sb, full' in m
    m = err(config_from_dict, {'training': {'optimizer': 'adam'}}, 'x.yaml')
    assert "'adamw'" in m


def test_boundaries_accepted():
    c = config_from_dict({'ast': {'target_activation': 1.0, 'min_active': 4, 'kp': 0, 'ki': 0, 'entropy_weight': 0},
                          'training': {'batch_size': 4, 'lr': 0, 'weight_decay': 0, 'epochs': 1}})
    assert c.ast.target_activation == 1.0 and c.ast.min_active == c.training.batch_size


def test_min_active_exceeds_batch_size(tmp_path):
    m = err(load_config, write(tmp_path, 'training: {batch_size: 4}\nast: {min_active: 8}\n', 'mb.yaml'), env_file=None)
    assert 'ast.min_active=8' in m and 'training.batch_size=4' in m and 'mb.yaml' in m


def test_min_active_default_vs_small_batch(tmp_path):
    m = err(load_config, write(tmp_path, 'training: {batch_size: 1}\n', 'mb.yaml'), env_file=None)
    assert 'ast.min_active=2 (from default)' in m and 'training.batch_size=1 (from ' in m and 'mb.yaml)' in m


def test_min_threshold_above_initial(tmp_path):
    m = err(load_config, write(tmp_path, 'ast: {min_threshold: 2.0, initial_threshold: 1.0}\n', 'th.yaml'), env_file=None)
    assert 'ast.min_threshold=2.0' in m and 'ast.initial_threshold=1.0' in m and 'th.yaml' in m


def test_min_threshold_above_max(tmp_path):
    m = err(load_config, write(tmp_path, 'ast: {min_threshold: 0.5, initial_threshold: 0.5, max_threshold: 0.4}\n', 'th.yaml'),
            env_file=None)
    assert 'ast.min_threshold=0.5' in m and 'ast.max_threshold=0.4' in m and 'th.yaml' in m


def test_initial_threshold_above_max():
    m = err(config_from_dict, {'ast': {'initial_threshold': 5.0, 'max_threshold': 2.0}}, 'th.yaml')
    assert 'ast.initial_threshold=5.0' in m and 'ast.max_threshold=2.0' in m and 'th.yaml' in m


def test_folder_needs_train_dir_and_hf_needs_name():
    m = err(config_from_dict, {'dataset': {'type': 'folder'}}, 'd.yaml')
    assert 'dataset.train_dir' in m and 'd.yaml' in m
    m = err(config_from_dict, {'dataset': {'type': 'hf'}}, 'd.yaml')
    assert 'dataset.name' in m and 'd.yaml' in m


# ---------------------------------------------------------------- overrides

def test_override_values_are_yaml_scalars():
    c = load_config(overrides=['training.lr=0.05', 'training.mixed_precision=false', 'ast.max_threshold=null',
                               'dataset.type=hf', 'dataset.name=frgfm/imagenette', 'dataset.config=160px',
                               'training.epochs=3', 'metrics.base_flop_per_sample=4.1e9', 'training.weight_decay=1e-4',
                               'logging.run_name=001', 'model.name = resnet18 '], env_file=None)
    assert c.training.lr == 0.05 and c.training.mixed_precision is False and c.ast.max_threshold is None
    assert (c.dataset.type, c.dataset.name, c.dataset.config) == ('hf', 'frgfm/imagenette', '160px')
    assert c.training.epochs == 3 and c.metrics.base_flop_per_sample == 4.1e9 and c.training.weight_decay == 1e-4
    assert c.logging.run_name == '001' and c.model.name == 'resnet18'


def test_override_value_may_contain_equals():
    c = load_config(overrides=['logging.run_name=lr=0.1'], env_file=None)
    assert c.logging.run_name == 'lr=0.1'


def test_single_string_override():
    assert load_config(overrides='training.epochs=2', env_file=None).training.epochs == 2


def test_overrides_applied_after_file(tmp_path):
    p = write(tmp_path, 'training: {lr: 0.2, epochs: 5}\nast: {max_threshold: 3.0}\n')
    c = load_config(p, ['training.lr=0.01', 'ast.max_threshold=null'], env_file=None)
    assert (c.training.lr, c.training.epochs, c.ast.max_threshold) == (0.01, 5, None)


def test_override_fixes_file_relation(tmp_path):
    p = write(tmp_path, 'training: {batch_size: 4}\nast: {min_active: 8}\n')
    assert load_config(p, ['training.batch_size=16'], env_file=None).training.batch_size == 16


@pytest.mark.parametrize('o', ['training.lr', 'training.lr 0.1', ''])
def test_malformed_override_no_equals(o):
    m = err(load_config, overrides=[o], env_file=None)
    assert 'Malformed' in m and repr(o) in m and 'section.key=value' in m


@pytest.mark.parametrize('o', ['lr=0.1', 'training.lr.x=0.1', '=0.1'])
def test_malformed_override_key(o):
    m = err(load_config, overrides=[o], env_file=None)
    assert 'Malformed' in m and repr(o) in m and 'section.key' in m


def test_override_unknown_key_and_section():
    m = err(load_config, overrides=['training.lrr=0.1'], env_file=None)
    assert "'training.lrr'" in m and "override 'training.lrr=0.1'" in m and "'training.lr'" in m
    m = err(load_config, overrides=['trainig.lr=0.1'], env_file=None)
    assert "'trainig'" in m and "Did you mean 'training'?" in m


def test_override_wrong_type_and_range(tmp_path):
    m = err(load_config, overrides=['training.epochs=ten'], env_file=None)
    assert "'training.epochs'" in m and "override 'training.epochs=ten'" in m
    m = err(load_config, overrides=['training.mixed_precision=maybe'], env_file=None)
    assert "'training.mixed_precision'" in m and 'expected bool' in m
    p = write(tmp_path, 'training: {lr: 0.1}\n', 'ok.yaml')
    m = err(load_config, p, ['training.lr=-1'], env_file=None)
    assert "'training.lr'" in m and "override 'training.lr=-1'" in m


# ---------------------------------------------------------------- .env

def test_env_file_does_not_override_existing(tmp_path, monkeypatch):
    env = write(tmp_path, 'ASTLAB_T_SET=from_file\nASTLAB_T_NEW=from_file\n', '.env')
    monkeypatch.setenv('ASTLAB_T_SET', 'from_shell')
    monkeypatch.setenv('ASTLAB_T_NEW', 'x'); monkeypatch.delenv('ASTLAB_T_NEW')  # restored (= unset) after the test
    load_config(env_file=env)
    assert os.environ['ASTLAB_T_SET'] == 'from_shell'
    assert os.environ['ASTLAB_T_NEW'] == 'from_file'


def test_default_env_file_is_dot_env_in_cwd(tmp_path, monkeypatch):
    write(tmp_path, 'ASTLAB_T_CWD=yes\n', '.env')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('ASTLAB_T_CWD', 'x'); monkeypatch.delenv('ASTLAB_T_CWD')
    load_config()
    assert os.environ['ASTLAB_T_CWD'] == 'yes'


def test_missing_env_file_is_fine(tmp_path):
    assert load_config(env_file=tmp_path / 'absent.env') == Config()
    assert load_config(env_file=None) == Config()


# ---------------------------------------------------------------- save

def test_save_roundtrip_yaml_and_json(tmp_path):
    c = load_config(overrides=['training.lr=1e-3', 'ast.max_threshold=4', 'metrics.base_flop_per_sample=4.1e9',
                               'dataset.num_samples=100', 'logging.run_name=001'], env_file=None)
    for name in ['sub/dir/config.yaml', 'config.json']:
        p = save_config(c, tmp_path / name)
        assert p == tmp_path / name
        assert load_config(p, env_file=None) == c


def test_save_is_atomic_and_overwrites(tmp_path, monkeypatch):
    p = tmp_path / 'config.yaml'
    save_config(Config(), p)
    save_config(config_from_dict({'training': {'epochs': 3}}), p)
    assert load_config(p, env_file=None).training.epochs == 3
    assert [q.name for q in tmp_path.iterdir()] == ['config.yaml']
    calls = []
    real = os.replace
    monkeypatch.setattr(os, 'replace', lambda a, b: (calls.append((a, b)), real(a, b)))
    save_config(Config(), p)
    (src, dst), = calls
    assert os.path.dirname(src) == str(tmp_path) and str(dst) == str(p)


def test_save_failure_leaves_old_file(tmp_path, monkeypatch):
    p = save_config(config_from_dict({'training': {'epochs': 3}}), tmp_path / 'config.yaml')
    def boom(a, b): raise OSError('disk full')
    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(OSError): save_config(Config(), p)
    monkeypatch.undo()
    assert load_config(p, env_file=None).training.epochs == 3
    assert [q.name for q in tmp_path.iterdir()] == ['config.yaml']


def test_save_validates_dicts(tmp_path):
    m = err(save_config, {'training': {'lrr': 1}}, tmp_path / 'c.yaml')
    assert "'training.lrr'" in m


# ---------------------------------------------------------------- redact

def test_redact_secret_keys_case_insensitive():
    d = {'HF_TOKEN': 'abc', 'kaggle': {'Kaggle_Key': 'k', 'api_secret': 's', 'db_password': 'p', 'username': 'me'},
         'unset_token': None}
    r = redact(d)
    assert r == {'HF_TOKEN': '***', 'kaggle': {'Kaggle_Key': '***', 'api_secret': '***', 'db_password': '***',
                                               'username': 'me'}, 'unset_token': None}
    assert d['HF_TOKEN'] == 'abc'  # input untouched


def test_redact_leaves_config_alone(monkeypatch):
    for k in [k for k in os.environ if any(w in k.upper() for w in ('TOKEN', 'KEY', 'SECRET', 'PASSWORD'))]:
        monkeypatch.delenv(k)
    d = Config().to_dict()
    assert redact(d) == d and redact(Config()) == d
    assert redact(d)['ast']['kp'] == 0.1 and redact(d)['ast']['ki'] == 0.01


def test_redact_env_values(monkeypatch):
    monkeypatch.setenv('HF_TOKEN', 'hf_secretvalue123')
    monkeypatch.setenv('SHORT_KEY', 'abc')        # < 4 characters: ignored
    monkeypatch.setenv('EMPTY_SECRET', '')
    monkeypatch.setenv('PUBLIC_THING', 'resnet_small')  # not a secret name: ignored
    d = Config().to_dict()
    d['dataset']['name'] = 'hf_secretvalue123'
    d['logging']['run_name'] = 'abc'
    d['notes'] = ['https://u:hf_secretvalue123@huggingface.co', ('hf_secretvalue123', 1)]
    r = redact(d)
    assert r['dataset']['name'] == '***'
    assert r['logging']['run_name'] == 'abc'
    assert r['model']['name'] == 'resnet_small'
    assert r['notes'] == ['https://u:***@huggingface.co', ('***', 1)]
    assert d['dataset']['name'] == 'hf_secretvalue123'


def test_redact_deep_copies():
    inner = {'x': [1, 2]}
    r = redact({'a': inner})
    r['a']['x'].append(3)
    assert inner == {'x': [1, 2]}


# ---------------------------------------------------------------- extensibility

def test_every_field_settable_from_file(tmp_path):
    "Every key, old or new, goes through the same load path: write a full file and read it back."
    c = Config()
    p = save_config(c, tmp_path / 'full.yaml')
    assert load_config(p, env_file=None) == c
    assert sum(len(fields(type(getattr(c, f.name)))) for f in fields(c)) == sum(len(v) for v in c.to_dict().values())


def test_stale_scoring_takes_ast_or_its_controls():
    "Stale scoring draws per epoch with ast, or with random/topk (the controls); other methods are refused by name."
    for m in ('ast', 'random', 'topk'):
        assert load_config(None, ['ast.scoring=stale', f'ast.method={m}'], env_file=None).ast.method == m
    msg = err(load_config, None, ['ast.scoring=stale', 'ast.method=sb'], env_file=None)
    assert 'ast.method' in msg and 'random' in msg
    # exploration is part of AST's drawn share only: the controls take any explore
    err(load_config, None, ['ast.scoring=stale', 'ast.target_activation=0.1', 'ast.explore=0.2'], env_file=None)
    load_config(None, ['ast.scoring=stale', 'ast.method=random', 'ast.target_activation=0.1', 'ast.explore=0.2'], env_file=None)
