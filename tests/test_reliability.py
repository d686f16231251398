"""Reliability: exact resume, safe stops, real signals, real NaNs, secrets in checkpoints.

Each test causes the real failure: a real SIGTERM to a real `astlab-run` process, a real NaN in the inputs, a wall-clock
cap, an interruption in the middle of an epoch — and checks that nothing is lost."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest, torch

from astlab.config import load_config
from astlab.engine.checkpoint import load_checkpoint, CheckpointError
from astlab.engine.learner import Callback
from astlab.lab.train import train
from astlab.engine.meters import history_rows
from stops import StopAt

BIN = Path(sys.executable).parent
WALL = {'time_min', 'step_time_ms', 'est_energy_kj', 'epoch_energy_kj'}   # wall-clock fields, allowed to differ
TINY = ['dataset.num_samples=300', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.epochs=3',
        'training.progress=false', 'training.device=cpu']


@pytest.fixture(autouse=True, scope='module')
def _one_thread():   # module scope: the shared reference run must use the same thread count as every test
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg_for(d, *extra):
    return load_config(overrides=TINY + [f'logging.output_dir={d}', *extra])


def history(res):
    return [{k: v for k, v in h.items() if k not in WALL} for h in history_rows(res)]


def final_weights(d):
    [ck] = Path(d).glob('checkpoints/*/last.pt')
    return load_checkpoint(ck)['model']


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k




@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    d = tmp_path_factory.mktemp('straight')
    return d, train(cfg_for(d), log=lambda s: None)


@pytest.mark.parametrize('method', ['ast', 'sb', 'stale'])
@pytest.mark.parametrize('where', [(1, 2), (0, 8)])   # mid-epoch, and the last batch of an epoch
def test_resume_mid_epoch_is_exact(tmp_path, straight, where, method):
    d0, ref = straight
    ov = ['ast.scoring=stale', 'ast.rescale=true'] if method == 'stale' else [f'ast.method={method}']
    if method != 'ast':
        d0 = tmp_path/'ref'; ref = train(cfg_for(d0, *ov), log=lambda s: None)
    d = tmp_path/'run'
    part = train(cfg_for(d, *ov), log=lambda s: None, extra_cbs=(StopAt(*where),))
    assert not part['complete'] and part['epochs_completed'] == where[0]
    assert json.loads(Path(part['results_path']).read_text())['complete'] is False   # a valid, incomplete file
    res = train(cfg_for(d, *ov), log=lambda s: None, resume='auto')
    assert res['complete'] and res['epochs_completed'] == 3 and res['results_path'] == part['results_path']
    assert history(res) == history(ref)
    assert_same_weights(final_weights(d), final_weights(d0))


def test_resume_at_epoch_boundary_is_exact(tmp_path, straight):
    d0, ref = straight
    # (the cosine schedule spans `training.epochs`, so a run extended with more epochs is a different run)
    d2 = tmp_path/'run2'
    train(cfg_for(d2), log=lambda s: None, extra_cbs=(StopAt(1, 8),))          # stops after epoch 2's last batch
    res2 = train(cfg_for(d2), log=lambda s: None, resume='auto')
    assert history(res2) == history(ref)
    assert_same_weights(final_weights(d2), final_weights(d0))


def test_wall_clock_cap_writes_results_and_resume_completes(tmp_path, straight):
    d0, ref = straight
    d = tmp_path/'run'
    part = train(cfg_for(d, 'training.max_minutes=0.0001'), log=lambda s: None)
    assert part['stop_reason'] == 'max_minutes' and not part['complete'] and part['epochs_completed'] == 0
    assert (Path(d)/'checkpoints').exists()
    res = train(cfg_for(d), log=lambda s: None, resume='auto')
    assert res['complete'] and history(res) == history(ref)


def test_resume_refuses_a_different_config(tmp_path):
    d = tmp_path/'run'
    train(cfg_for(d, 'training.epochs=1'), log=lambda s: None)
    ck = next(Path(d).glob('checkpoints/*/last.pt'))
    with pytest.raises(CheckpointError, match='training.lr'):
        train(cfg_for(d, 'training.lr=0.5'), log=lambda s: None, resume=str(ck))
    with pytest.raises(CheckpointError, match='does not exist'):
        train(cfg_for(d), log=lambda s: None, resume=str(tmp_path/'nope.pt'))


# ------------------------------------------------------------------------------------------------ real signals

def _cli(*args, env=None, cwd=None):
    e = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1', **(env or {})}
    return subprocess.Popen([str(BIN/'astlab-run'), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=e, cwd=cwd)


SLOW = ['--set', 'dataset.num_samples=700', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.device=cpu',
        '--epochs', '5', '--no-progress']


# SIGTERM's real-signal resume also runs in make test as test_resume.py::test_sigterm_prints_the_resume_command_and_it_works
@pytest.mark.parametrize('sig', [pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGINT])
def test_real_signal_checkpoints_then_resume_completes_exactly(tmp_path, sig):
    d, ref_d = tmp_path/'run', tmp_path/'ref'
    log = tmp_path/'log.jsonl'
    env = {'HF_TOKEN': 'hf_reliability_secret_42'}
    ref = _cli('--output-dir', str(ref_d), *SLOW, env=env)
    p = _cli('--output-dir', str(d), '--jsonl-path', str(log), *SLOW, env=env)
    t0 = time.time()
    while not (log.exists() and log.read_text().strip()):                    # first epoch done: mid-run now
        assert p.poll() is None and time.time() - t0 < 120, p.communicate()
        time.sleep(0.05)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig.value, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary['complete'] is False and summary['stop_reason'] == f'signal:{sig.name}'
    res = json.loads(Path(summary['results_path']).read_text())
    assert res['epochs_completed'] == sum(h['complete'] for h in history_rows(res)) >= 1
    [ck] = Path(d).glob('checkpoints/*/last.pt')
    assert 'hf_reliability_secret_42' not in repr(load_checkpoint(ck)['meta'])
    r = _cli('--output-dir', str(d), '--resume', 'auto', *SLOW, env=env)
    out2, err2 = r.communicate(timeout=300)
    assert r.returncode == 0, err2
    done = json.loads(Path(json.loads(out2.strip().splitlines()[-1])['results_path']).read_text())
    assert done['complete'] and done['epochs_completed'] == 5
    ref_out, ref_err = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_err
    ref_res = json.loads(Path(json.loads(ref_out.strip().splitlines()[-1])['results_path']).read_text())
    assert history(done) == history(ref_res)
    assert_same_weights(final_weights(d), final_weights(ref_d))


def test_sweep_resumes_the_interrupted_run(tmp_path):
    for m in ('ast', 'random'):
        (tmp_path/f'{m}.yaml').write_text(f"ast: {{method: {m}}}\n")
    args = [str(BIN/'astlab-sweep'), 'ast.yaml', 'random.yaml', '--output-dir', 'D', '--output-log', 'L.jsonl',
            '--set', 'dataset.num_samples=700', 'training.batch_size=32', 'model.name=resnet_tiny',
            'training.device=cpu', '--epochs', '4', '--no-progress']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    t0 = time.time()
    while not list((tmp_path/'D').glob('checkpoints/*random*/last.pt')):      # the 2nd run has checkpointed once
        assert p.poll() is None and time.time() - t0 < 180, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = [json.loads(l) for l in again.stdout.strip().splitlines() if l.startswith('{')]
    assert rows[0]['skipped'] is True and rows[1]['complete'] is True
    assert 'resumed from' in again.stdout


# --------------------------------------------------------------------------------------------------- numerics

class NaNLogits(Callback):
    "Make the network output a real NaN for the first sample of the given training (epoch, batch) pairs."
    def __init__(self, at): self.at = set(at)
    def before_fit(self):
        last = [m for m in self.learn.model.modules() if isinstance(m, torch.nn.Linear)][-1]
        self.h = last.register_forward_hook(self.hook)
    def hook(self, mod, inp, out):
        L = self.learn
        if L.training and (L.epoch, L.iter) in self.at:
            out = out.clone(); out[0] = float('nan'); return out
    def after_fit(self): self.h.remove()


def test_nan_batches_are_skipped_and_counted(tmp_path):
    res = train(cfg_for(tmp_path, 'ast.method=full'), log=lambda s: None, extra_cbs=(NaNLogits({(0, 2), (1, 5)}),))
    assert res['complete'] and res['totals']['nonfinite_skipped'] == 2
    w = final_weights(tmp_path)
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())


def test_nan_every_batch_aborts_with_a_clear_message(tmp_path):
    every = {(e, i) for e in range(3) for i in range(20)}
    with pytest.raises(FloatingPointError, match='non-finite losses in a row'):
        train(cfg_for(tmp_path, 'ast.method=full'), log=lambda s: None, extra_cbs=(NaNLogits(every),))


def test_nan_scores_never_reach_the_controller(tmp_path):
    "AST scores a batch containing NaN: the controller's state stays finite and the run completes."
    res = train(cfg_for(tmp_path), log=lambda s: None, extra_cbs=(NaNLogits({(0, 1), (0, 2), (1, 3)}),))
    assert res['complete']
    assert all(h['threshold'] is not None and h['threshold'] == h['threshold'] for h in history_rows(res))
