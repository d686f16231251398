"""Checked before training (issue 11, items 3 and 8): every path a run writes, and settings the method ignores.

The tests run as root in CI, and root ignores permission bits, so they block a path the way root cannot get around: a
regular file where a folder must be (or a folder where a file must be)."""
import json, runpy, sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TINY = ['--set', 'dataset.num_samples=100', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.device=cpu',
        '--epochs', '1', '--no-progress']


def console(name, argv, monkeypatch):
    "Run console script `name` in this process exactly as the shell does; its exit code."
    monkeypatch.setattr(sys, 'argv', [name, *argv])
    with pytest.raises(SystemExit) as e: runpy.run_path(str(BIN/name), run_name='__main__')
    return e.value.code


@pytest.fixture
def blocker(tmp_path):
    f = tmp_path/'a_file'; f.write_text('not a folder'); return f


@pytest.mark.parametrize('flag', ['--output-dir', '--jsonl-path'])
def test_unwritable_path_exits_2_before_training(flag, blocker, tmp_path, monkeypatch, capsys):
    bad = blocker/'sub'/('log.jsonl' if flag == '--jsonl-path' else 'results')
    args = ['--output-dir', str(tmp_path/'out'), '--jsonl-path', str(tmp_path/'out'/'log.jsonl')]
    args[args.index(flag) + 1] = str(bad)
    assert console('astlab-run', [*args, *TINY], monkeypatch) == 2
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()                                       # one line, no traceback
    assert line.startswith('error: cannot write') and str(bad) in line and flag in line
    assert 'data:' not in out and not (tmp_path/'out'/'checkpoints').exists()   # nothing loaded, nothing trained


RESULT = dict(run_name='r', method='ast', target_activation=0.25, best_accuracy=0.5, epochs_completed=1,
              total_time_hours=0.01, complete=True, energy_source='proxy_tdp', totals=dict(flops=1e9, energy_j=100.0),
              training_history=dict(epoch=[1], train_acc=[0.4], val_acc=[0.5], energy_savings=[0.4],
                                    activation_rate=[0.25], time_min=[0.1], threshold=[1.0], step_time_ms=[1.0],
                                    est_energy_kj=[0.1], est_flops_g=[1.0]))


@pytest.mark.parametrize('flag', ['--plot', '--report'])
def test_analyze_unwritable_output_exits_2_naming_it(flag, tmp_path, monkeypatch, capsys):
    (tmp_path/'final_results_r_1.json').write_text(json.dumps(RESULT))
    if flag == '--plot': (tmp_path/'plots').write_text('a file where the plots folder goes'); bad = tmp_path/'plots'
    else: (tmp_path/'report.html').mkdir(); bad = tmp_path/'report.html'
    assert console('astlab-analyze', ['--results-dir', str(tmp_path), flag], monkeypatch) == 2
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert line.startswith('error: cannot write') and str(bad) in line
    assert out == ''                                                        # checked before the table is printed


def test_ignored_settings_warned_once_in_one_line(blocker, monkeypatch, capsys):
    "ast.method=full ignores the target and the gains: one warning line, printed before anything else happens."
    args = ['--set', 'ast.method=full', 'ast.target_activation=0.5', 'ast.kp=0.3', 'ast.sb_beta=2',
            '--output-dir', str(blocker/'x')]                      # unwritable: the run stops right after the checks
    assert console('astlab-run', [*args, *TINY], monkeypatch) == 2
    warn = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning:')]
    assert len(warn) == 1
    for k in ('ast.target_activation=0.5', 'ast.kp=0.3', 'ast.sb_beta=2.0'): assert k in warn[0]


@pytest.mark.parametrize('method, ov, ignored, used', [
    ('rs2', ['ast.kp=0.3', 'ast.min_active=4', 'ast.scorer=loss', 'ast.infobatch_prune=0.3'],
     ['ast.kp=0.3', 'ast.min_active=4', "ast.scorer='loss'", 'ast.infobatch_prune=0.3'], []),
    ('infobatch', ['ast.target_activation=0.5', 'ast.rho_aux_epochs=2', 'ast.ki=0.2', 'ast.infobatch_delta=0.5'],
     ['ast.target_activation=0.5', 'ast.rho_aux_epochs=2', 'ast.ki=0.2'], ['ast.infobatch_delta']),
    ('rholoss', ['ast.rho_aux_epochs=2', 'ast.entropy_weight=0.5', 'ast.normalize=none', 'ast.infobatch_prune=0.3'],
     ['ast.entropy_weight=0.5', "ast.normalize='none'", 'ast.infobatch_prune=0.3'], ['ast.rho_aux_epochs']),
])
def test_ignored_settings_of_the_new_methods_warned(method, ov, ignored, used, blocker, monkeypatch, capsys):
    "rs2, infobatch and rholoss: keys of other methods, the controller, and what they do not score, in one line."
    args = ['--set', f'ast.method={method}', *ov, '--output-dir', str(blocker/'x')]
    assert console('astlab-run', [*args, *TINY], monkeypatch) == 2
    [warn] = [l for l in capsys.readouterr().err.splitlines() if l.startswith('warning:')]
    for k in ignored: assert k in warn, (k, warn)
    for k in used: assert k not in warn, (k, warn)


def test_tune_unwritable_output_dir_exits_2(blocker, monkeypatch, capsys):
    bad = blocker/'study'
    assert console('astlab-tune', ['--output-dir', str(bad), '--trials', '1', '--set', 'training.epochs=1'], monkeypatch) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith('error: cannot write') and str(bad) in line
