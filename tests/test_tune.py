"""`astlab-tune`: a 3-trial Optuna study that is interrupted by SIGTERM after its first trial and resumed to 3 trials.

The CLI runs as a real subprocess from its installed console script, offline, on the CPU, single-threaded (see
test_cli.py for why), on tiny digits (200 training images, 2 configured epochs, batch 32, resnet_tiny). With the
default accuracy objective and budget (half of full-data training's counted FLOPs) each trial trains 1 epoch.
"""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

optuna = pytest.importorskip("optuna")

from astlab.config import ConfigError, load_config
from astlab.lab.tune import tune

BIN = Path(sys.executable).parent
TINY_YAML = """\
model: {name: resnet_tiny, pretrained: false}
dataset: {type: digits, num_samples: 200}
ast: {method: ast, target_activation: 0.25}
training: {epochs: 2, batch_size: 32, lr: 0.05, device: cpu, progress: false}
"""
FINISHED = ("COMPLETE", "PRUNED")


def env():
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MPLBACKEND")}
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return e


def start(*args, cwd):
    return subprocess.Popen([str(BIN/"astlab-tune"), *map(str, args)], cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished_in(db: Path) -> int:
    "Finished (complete or pruned) trials in an Optuna SQLite file, read directly (0 before the schema exists)."
    if not db.exists(): return 0
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return c.execute(f"SELECT count(*) FROM trials WHERE state IN {FINISHED}").fetchone()[0]
    except sqlite3.OperationalError: return 0   # tables not created yet


def summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture()
def study_args(tmp_path):
    (tmp_path/"tiny.yaml").write_text(TINY_YAML)
    db = tmp_path/"tune.db"
    return db, ["--config", "tiny.yaml", "--trials", 3, "--storage", f"sqlite:///{db}", "--study", "tiny",
                "--output-dir", "out"]


def test_interrupted_study_resumes_to_three_trials(tmp_path, study_args):
    db, args = study_args
    # 1. start a 3-trial study; SIGTERM it as soon as its first trial is stored
    p = start(*args, cwd=tmp_path)
    t0 = time.time()
    while finished_in(db) < 1:
        if p.poll() is not None: pytest.fail(f"astlab-tune exited early ({p.returncode}):\n{p.stderr.read()[-3000:]}")
        if time.time() - t0 > 120: p.kill(); pytest.fail("no trial finished within 120 s")
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err[-3000:]
    first = summary(out)
    assert first["stop_reason"] == "signal:SIGTERM"
    assert 1 <= first["trials_finished"] < 3, first
    assert finished_in(db) == first["trials_finished"]

    # 2. the same command again resumes the study and runs only the missing trials
    p = start(*args, cwd=tmp_path)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]
    s = summary(out)
    assert (s["trials_finished"], s["trials_run_now"], s["stop_reason"]) == (3, 3 - first["trials_finished"], None)
    assert "different setup" not in err

    # 3. the storage holds three finished trials with distinct parameters (the resumed run did not replay draws)
    st = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    done = [t for t in st.trials if t.state.name in FINISHED]
    assert len(done) == 3 == finished_in(db)
    assert len({tuple(sorted(t.params.items())) for t in done}) == 3
    assert st.user_attrs["setup"]["objective"] == "accuracy"
    for t in done:                                           # each trial ran in its own folder under its own run name
        res = json.loads((tmp_path/t.user_attrs["results_path"]).read_text())   # relative to the CLI's cwd
        assert res["run_name"] == f"tiny_trial{t.number}"
        assert Path(t.user_attrs["results_path"]).parent.name == f"trial_{t.number}"
        assert res["totals"]["flops"] / 1e9 <= s["budget_gflops"] * (1 + 1e-9)   # within the FLOPs budget
        assert t.user_attrs["epochs"] == 1
    assert not (tmp_path/"out"/"checkpoints").exists() and not list((tmp_path/"out").glob("trial_*/checkpoints"))

    # 4. best config (YAML, loads and validates), history plot and summary are in the output folder
    best = load_config(tmp_path/s["best_config"])
    bt = st.best_trial
    assert bt.number == s["best_trial"] and bt.value == s["best_value"]
    assert (best.ast.kp, best.ast.ki, best.ast.entropy_weight) == (bt.params["ast.kp"], bt.params["ast.ki"],
                                                                 bt.params["ast.entropy_weight"])
    assert best.training.epochs == 1 and best.logging.run_name is None
    png = tmp_path/s["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path/"out"/"tune_summary.json").read_text())["trials_finished"] == 3

    # 5. resuming with a different base config is refused, naming the key (in-process: the CLI's exit 2 is tested below)
    other = load_config(tmp_path/"tiny.yaml", ["training.lr=0.2", f"logging.output_dir={tmp_path/'out'}"])
    with pytest.raises(ConfigError, match=r"different setup \(training\.lr: 0\.05 -> 0\.2\)"):
        tune(other, trials=3, storage=f"sqlite:///{db}", study="tiny", log=lambda m: None)


def test_tune_errors(tmp_path):
    "A config error exits 2 with one line and no traceback; bad arguments are `ConfigError`s naming what to change."
    (tmp_path/"tiny.yaml").write_text(TINY_YAML)
    p = start("--config", "tiny.yaml", "--trials", 1, "--set", "ast.method=random", cwd=tmp_path)
    cfg = load_config(tmp_path/"tiny.yaml", [f"logging.output_dir={tmp_path/'api'}"])
    with pytest.raises(ConfigError, match="objective"): tune(cfg, objective="speed")
    with pytest.raises(ConfigError, match="trials"): tune(cfg, trials=0)
    with pytest.raises(ConfigError, match="less than one epoch.*--budget-fraction"): tune(cfg, budget_fraction=0.1)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, err[-3000:]
    assert err.strip().splitlines() == ["error: ast.method='random': astlab-tune tunes AST's controller (kp, ki, "
                                        "entropy_weight); set ast.method=ast"]
