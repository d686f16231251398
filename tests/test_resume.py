"""Nothing is lost on resume (issue 11, items 1, 2 and 4).

Each test causes the real event: a `kill -9` of a real `astlab-run` during epoch 2, a crash right after the
end-of-epoch checkpoint was written, `--resume auto` on a finished run, a real SIGTERM."""
import json, os, shlex, signal, subprocess, sys, time
from pathlib import Path

import pytest

from astlab.config import load_config
from astlab.engine.learner import Callback
from astlab.lab.train import train, checkpoint_dir
from astlab.lab.experiment import completed_results, sweep
from astlab.engine.meters import history_rows

BIN = Path(sys.executable).parent
TINY = ['dataset.num_samples=300', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.epochs=3',
        'training.progress=false', 'training.device=cpu']
ARGS = ['--set', 'dataset.num_samples=500', 'training.batch_size=32', 'model.name=resnet_tiny', 'training.device=cpu',
        '--epochs', '4', '--no-progress']
quiet = lambda *a: None


def cfg_for(d, *extra): return load_config(overrides=TINY + [f'logging.output_dir={d}', *extra])
def epochs(res): return [r['epoch'] for r in history_rows(res)]
def env(): return {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
def cli(*args, **kw): return subprocess.Popen([str(BIN/'astlab-run'), *args], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, env=env(), **kw)
def last_json(out): return json.loads(out.strip().splitlines()[-1])


def wait_for_lines(p, log, n, timeout=180):
    "Wait until the JSONL log has `n` lines (epoch `n` done) while `p` runs."
    t0 = time.time()
    while not (log.exists() and len(log.read_text().splitlines()) >= n):
        assert p.poll() is None and time.time() - t0 < timeout, p.communicate()
        time.sleep(0.02)


def test_sigkill_during_epoch_2_then_resume_keeps_every_epoch(tmp_path):
    "The issue's reproduction: `kill -9` during epoch 2, `--resume auto`: history 1..E, complete."
    d, log = tmp_path/'R', tmp_path/'log.jsonl'
    p = cli('--output-dir', str(d), '--jsonl-path', str(log), *ARGS)
    wait_for_lines(p, log, 1)                      # epoch 1 is done, its checkpoint written: we are in epoch 2
    p.kill(); p.wait()
    assert len(log.read_text().splitlines()) == 1, "the run got past epoch 2 before the kill: make it slower"
    r = subprocess.run([str(BIN/'astlab-run'), '--output-dir', str(d), '--resume', 'auto', *ARGS],
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(Path(last_json(r.stdout)['results_path']).read_text())
    assert epochs(res) == [1, 2, 3, 4] and res['epochs_completed'] == 4 and res['complete'] is True


class CrashAfterCheckpoint(Callback):
    "Die right after `CheckpointCB` (order 45) wrote `last.pt` at the end of epoch `epoch` (0-based)."
    order = 46
    def __init__(self, epoch): self.epoch = epoch
    def after_epoch(self):
        if self.learn.epoch == self.epoch: raise SystemExit('crash')


def test_checkpoint_holds_the_epoch_it_was_written_for(tmp_path):
    with pytest.raises(SystemExit): train(cfg_for(tmp_path), log=quiet, extra_cbs=(CrashAfterCheckpoint(1),))
    res = train(cfg_for(tmp_path), log=quiet, resume='auto')
    assert epochs(res) == [1, 2, 3] and res['epochs_completed'] == 3 and res['complete'] is True


class StoppedAt(Callback):
    order = 100
    def after_fit(self): self.epoch = self.learn.epoch + 1


def test_early_stop_keeps_its_last_epoch(tmp_path):
    "EarlyStopCB (order 50) stops the fit in after_epoch: the epoch it stopped after is still in the history."
    at = StoppedAt()
    res = train(cfg_for(tmp_path, 'training.early_stop_patience=1', 'training.lr=0', 'training.epochs=5'), log=quiet,
                extra_cbs=(at,))
    assert res['stop_reason'] == 'early_stop' and res['complete'] is True
    assert epochs(res) == list(range(1, at.epoch + 1)) and res['epochs_completed'] == at.epoch


def snapshot(d):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(d).rglob('*')) if p.is_file()}


def test_resume_of_a_finished_run_touches_nothing(tmp_path):
    cfg = cfg_for(tmp_path, f'logging.jsonl_path={tmp_path}/log.jsonl')
    res = train(cfg, log=quiet)
    before, notes = snapshot(tmp_path), []
    again = train(cfg, log=notes.append, resume='auto')
    assert snapshot(tmp_path) == before                       # every file: same bytes, same mtime
    assert any('already complete' in n for n in notes)
    assert again['complete'] and again['results_path'] == res['results_path'] and epochs(again) == [1, 2, 3]
    assert completed_results(cfg) == [Path(res['results_path'])]    # astlab-sweep still treats it as finished
    [row] = sweep([None], overrides=TINY, output_dir=str(tmp_path), log=quiet)
    assert row['skipped'] is True and snapshot(tmp_path) == before


def test_raising_epochs_extends_the_run(tmp_path):
    res = train(cfg_for(tmp_path), log=quiet)
    more = train(cfg_for(tmp_path, 'training.epochs=4'), log=quiet, resume='auto')
    assert more['results_path'] == res['results_path']
    assert epochs(more) == [1, 2, 3, 4] and more['epochs_completed'] == 4 and more['complete'] is True
    [row] = sweep([None], overrides=TINY, output_dir=str(tmp_path), epochs=5, log=quiet)   # the sweep extends it too
    assert not row.get('skipped') and row['results_path'] == res['results_path'] and row['epochs_completed'] == 5
    assert epochs(json.loads(Path(res['results_path']).read_text())) == [1, 2, 3, 4, 5]


def test_sigterm_prints_the_resume_command_and_it_works(tmp_path):
    d, log = tmp_path/'R', tmp_path/'log.jsonl'
    p = cli('--output-dir', str(d), '--jsonl-path', str(log), *ARGS, cwd=tmp_path)
    wait_for_lines(p, log, 1)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    [line] = [l for l in err.splitlines() if 'resume with: ' in l]
    cmd = line.split('resume with: ', 1)[1]
    assert 'SIGTERM' in line and cmd.endswith('--resume auto') and '--jsonl-path' in cmd
    res = json.loads(Path(last_json(out)['results_path']).read_text())
    assert res['resume_hint'] == cmd
    argv = shlex.split(cmd); argv[0] = str(BIN/argv[0])           # the printed command, run as printed
    r = subprocess.run(argv, capture_output=True, text=True, env=env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    done = json.loads(Path(last_json(r.stdout)['results_path']).read_text())
    assert done['complete'] and epochs(done) == [1, 2, 3, 4]
