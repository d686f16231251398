"""End to end: `train(cfg)` and the console scripts a user runs (astlab-run, astlab-sweep, astlab-analyze).

The CLIs run as real subprocesses from their installed console scripts, in a temporary working directory, offline
(HF_HUB_OFFLINE=1) and on the CPU. Everything is tiny (a couple of hundred 16-32 px images, 1-3 epochs, resnet_tiny).

Speed: every CLI process spends ~4 s importing torch/torchvision, so the independent CLI runs are *jobs* started side by
side, all at once, by the first test that needs one (only the jobs that the selected tests use); each test then waits
for its job's result. Subprocesses get OMP_NUM_THREADS=1: on a 2-core box a busy neighbour otherwise makes torch's two
OpenMP threads wait on each other (a 7 s run takes 20 s), and single-threaded processes overlap well.
"""
import json
import os
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports datasets: never touch the network

import numpy as np
import pytest
import torch
from PIL import Image

import astlab.lab.train as T
from astlab.config import load_config
from astlab.lab.experiment import build_config
from astlab.engine.meters import history_rows

BIN = Path(sys.executable).parent
SECRET = "hf_secretvalue123"
SEED_FIELDS = ("best_accuracy", "total_time_hours", "epochs_completed", "training_history")
HISTORY_FIELDS = ("epoch", "train_acc", "val_acc", "energy_savings", "activation_rate", "time_min", "threshold",
                  "step_time_ms", "est_energy_kj", "est_flops_g")
DIGITS_YAML = """\
model: {name: resnet_tiny, pretrained: false}
dataset: {type: digits, image_size: 16}
ast: {method: ast, target_activation: 0.25}
training: {batch_size: 32, lr: 0.05, device: cpu, progress: false}
"""


# ---------------------------------------------------------------- helpers

def env(**extra):
    "The subprocess environment: offline, one OpenMP thread, no stray token unless given."
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MPLBACKEND")}
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    e.update(extra)
    return e


def start(script, *args, cwd, **extra_env):
    "Start a console script (`astlab-run` ...) as a subprocess; `finish` collects it."
    p = subprocess.Popen([str(BIN/script), *map(str, args)], cwd=cwd, env=env(**extra_env), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.cwd = Path(cwd)
    return p


def finish(p, timeout=300):
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill(); out, err = p.communicate()
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    r.cwd = p.cwd  # where it ran: relative paths in its output are relative to this
    return r


def cli(script, *args, cwd, **extra_env):
    "Run a console script to completion."
    return finish(start(script, *args, cwd=cwd, **extra_env))


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


def json_lines(text):
    "The lines of `text` that are JSON objects, parsed."
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try: out.append(json.loads(line))
            except json.JSONDecodeError: pass
    return out


def results_files(d):
    return sorted(Path(d).glob("final_results_*.json"))


def mtimes(d):
    "{results file name: mtime in ns} in `d`."
    return {p.name: p.stat().st_mtime_ns for p in results_files(d)}


def write_images(root, classes=("cat", "dog", "fox"), n=12, size=40, seed=0):
    "An ImageFolder of `n` random-colour PNGs per class under `root`."
    rng = np.random.default_rng(seed)
    for c in classes:
        (root/c).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root/c/f"{c}{j}.png")
    return root


def check_results(res):
    "The seed's fields, and each history row's."
    for k in SEED_FIELDS: assert k in res, k
    assert isinstance(res["best_accuracy"], float) and 0 <= res["best_accuracy"] <= 1
    assert isinstance(res["total_time_hours"], float) and 0 < res["total_time_hours"] < 1
    assert isinstance(res["epochs_completed"], int)
    h = history_rows(res)
    assert isinstance(h, list) and len(h) == res["epochs_completed"]
    for i, row in enumerate(h, 1):
        missing = [k for k in HISTORY_FIELDS if k not in row]
        assert not missing, f"history row {i} lacks {missing}"
        assert row["epoch"] == i
    assert res["best_accuracy"] == max(r["val_acc"] for r in h)


# ---------------------------------------------------------------- jobs: CLI runs started side by side

WORKERS = 3  # CLI processes at a time (plus the in-process training on the main thread)
BAD_YAML = "training:\n  lr: 0.1\n   epochs: 2\n"   # line 3 is indented under a scalar
ERROR_CASES = {
    # name: (args after `astlab-run --output-dir D --no-progress`, strings the one-line message must contain)
    "unknown_key": (["--set", "training.lrr=0.1"], ["training.lrr", "Did you mean 'training.lr'?"]),
    "wrong_type": (["--set", "training.epochs=abc"], ["training.epochs", "abc", "whole number"]),
    "yaml_syntax": (["--config", "bad.yaml"], ["bad.yaml", "line 3"]),
    "missing_config": (["--config", "nope/missing.yaml"], ["nope/missing.yaml", "not found"]),
    "target_out_of_range": (["--target-activation", "1.5"], ["ast.target_activation", "1.5"]),
    "workers_word": (["--set", "training.num_workers=many"], ["training.num_workers", "'many'", "auto"]),
    "backward_batch_word": (["--set", "ast.backward_batch=fulll"], ["ast.backward_batch", "'fulll'", "Did you mean 'full'?"]),
    "backward_batch_small": (["--set", "ast.backward_batch=16"], ["ast.backward_batch=16", "training.batch_size"]),
    "missing_train_dir": (["--set", "dataset.type=folder", "dataset.train_dir={cwd}/no/such/dir"],
                          ["dataset.train_dir", "{cwd}/no/such/dir", "does not exist"]),
    "redundancy_zero": (["--set", "dataset.redundancy=0"], ["dataset.redundancy", ">= 1"]),
    "one_fold": (["--set", "dataset.folds=1"], ["dataset.folds", ">= 2"]),
    "fold_without_folds": (["--set", "dataset.fold=2"], ["dataset.fold=2", "dataset.folds", "set dataset.folds (>= 2) too"]),
    "fold_out_of_range": (["--set", "dataset.folds=5", "dataset.fold=5"], ["dataset.fold=5", "0..dataset.folds-1"]),
}


def job_plain(cwd):
    "astlab-run on digits from a config file, with --set and the CLI shortcuts."
    (cwd/"cfg.yaml").write_text(DIGITS_YAML)
    return cli("astlab-run", "--config", "cfg.yaml", "--output-dir", "D", "--epochs", "1", "--no-progress",
               "--set", "dataset.num_samples=200", cwd=cwd)


def job_secret(cwd):
    "astlab-run for 2 epochs with a JSONL log, HF_TOKEN in the environment and the same secret pasted into the config."
    (cwd/"cfg.yaml").write_text(DIGITS_YAML)
    return cli("astlab-run", "--config", "cfg.yaml", "--output-dir", "S", "--epochs", "2", "--no-progress",
               "--jsonl-path", "S/epochs.jsonl", "--set", "dataset.num_samples=200", f"logging.run_name={SECRET}",
               cwd=cwd, HF_TOKEN=SECRET)


def job_folder(cwd):
    "astlab-run on an ImageFolder tree of PNGs (3 classes: 12 train and 4 val images each)."
    train_dir, val_dir = write_images(cwd/"data"/"train"), write_images(cwd/"data"/"val", n=4, seed=1)
    r = cli("astlab-run", "--output-dir", "D", "--epochs", "1", "--no-progress", "--set", "dataset.type=folder",
            f"dataset.train_dir={train_dir}", f"dataset.val_dir={val_dir}", "dataset.image_size=32",
            "dataset.num_classes=3", "training.batch_size=8", "model.name=resnet_tiny", "training.device=cpu", cwd=cwd)
    return dict(cwd=cwd, r=r, train_dir=train_dir, val_dir=val_dir)


def job_hf(cwd):
    "astlab-run on a Hugging Face DatasetDict written by save_to_disk (3 ClassLabel classes)."
    import datasets
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "fox"])})
    rng = np.random.default_rng(0)
    def split(n):
        imgs = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]
        return datasets.Dataset.from_dict({"image": imgs, "label": [i % 3 for i in range(n)]}, features=feats)
    path = cwd/"hfdata"
    datasets.DatasetDict(train=split(36), validation=split(12)).save_to_disk(str(path))
    r = cli("astlab-run", "--output-dir", "D", "--epochs", "1", "--no-progress", "--set", "dataset.type=hf",
            f"dataset.name={path}", "dataset.image_size=32", "training.batch_size=8", "model.name=resnet_tiny",
            "training.device=cpu", cwd=cwd)
    return dict(cwd=cwd, r=r, path=path)


def job_sweep(cwd):
    "astlab-sweep of two configs three times (fresh, again: skips, --force: re-runs), then astlab-analyze --plot."
    (cwd/"A.yaml").write_text(DIGITS_YAML)
    (cwd/"B.yaml").write_text(DIGITS_YAML.replace("method: ast", "method: random"))
    args = ["A.yaml", "B.yaml", "--output-log", "L.jsonl", "--output-dir", "D", "--epochs", "1", "--no-progress",
            "--set", "dataset.num_samples=200"]
    out = dict(cwd=cwd)
    out["first"] = cli("astlab-sweep", *args, cwd=cwd)
    out["log1"] = (cwd/"L.jsonl").read_text() if (cwd/"L.jsonl").exists() else ""
    out["files1"] = mtimes(cwd/"D")
    out["again"] = cli("astlab-sweep", *args, cwd=cwd)
    out["files2"] = mtimes(cwd/"D")
    out["force"] = cli("astlab-sweep", *args, "--force", cwd=cwd)
    out["analyze"] = cli("astlab-analyze", "--results-dir", "D", "--plot", cwd=cwd)
    return out


def job_analyze_empty(cwd):
    (cwd/"empty").mkdir()
    return cli("astlab-analyze", "--results-dir", "empty", cwd=cwd)


def _bad_job(case):
    def run(cwd):
        (cwd/"bad.yaml").write_text(BAD_YAML)
        args = [a.format(cwd=cwd) for a in ERROR_CASES[case][0]]
        return cli("astlab-run", "--output-dir", "D", "--no-progress", *args, cwd=cwd)
    return run


def job_debug(cwd):
    return cli("astlab-run", "--output-dir", "D", "--no-progress", "--debug", "--set", "training.lrr=0.1", cwd=cwd)


# longest first, so that the sweep's chain of five processes is not the tail
JOBS = dict(sweep=job_sweep, plain=job_plain, secret=job_secret, hf=job_hf, folder=job_folder,
            **{f"bad_{c}": _bad_job(c) for c in ERROR_CASES}, debug=job_debug, analyze_empty=job_analyze_empty)


def uses(*names):
    "Mark a test as needing the results of these jobs."
    def deco(fn): fn.jobs = names; return fn
    return deco


@pytest.fixture(scope="module")
def jobs(request, tmp_path_factory):
    "Start every job the selected tests use, side by side, now; `jobs(name)` waits for that job's result."
    wanted = {n for item in request.session.items for n in getattr(getattr(item, "function", None), "jobs", ())}
    pool, futures = ThreadPoolExecutor(max_workers=WORKERS), {}
    def submit(name):
        if name not in futures: futures[name] = pool.submit(JOBS[name], tmp_path_factory.mktemp(name))
        return futures[name]
    for name in JOBS:
        if name in wanted: submit(name)
    yield lambda name: submit(name).result()
    pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- 1, 9, 10: astlab-run on digits

@uses("plain")
def test_run_prints_one_json_summary_line_last(jobs):
    r = ok(jobs("plain"))
    lines = r.stdout.strip().splitlines()
    summaries = json_lines(r.stdout)
    assert len(summaries) == 1, r.stdout
    assert summaries[0] == json.loads(lines[-1])
    s = summaries[0]
    assert s["run"] == "digits_resnet_tiny_ast25_s0"
    assert s["method"] == "ast" and s["target"] == 0.25 and s["epochs_completed"] == 1 and s["complete"] is True
    assert s["energy_source"] == "proxy_tdp"
    assert Path(s["results_path"]).parent == Path("D")
    assert (r.cwd/s["results_path"]).is_file()


@uses("plain")
def test_run_results_file_has_seed_fields_and_additive_keys(jobs, tmp_path):
    r = ok(jobs("plain"))
    files = results_files(r.cwd/"D")
    assert len(files) == 1
    s = json_lines(r.stdout)[-1]
    assert files[0].name == Path(s["results_path"]).name
    res = json.loads(files[0].read_text())
    check_results(res)
    assert res["epochs_completed"] == 1 and len(history_rows(res)) == 1
    for k in ("config", "method", "versions", "device", "energy_source", "totals"): assert k in res, k
    assert res["method"] == "ast"
    assert res["energy_source"] == "proxy_tdp"          # CPU: no NVML, energy is time x TDP and says so
    assert res["device"]["type"] == "cpu"
    assert {"astlab", "torch", "python"} <= set(res["versions"])
    # the config is echoed: the file's values, the --set overrides and the CLI shortcuts
    cfg = res["config"]
    assert cfg["model"]["name"] == "resnet_tiny" and cfg["dataset"]["image_size"] == 16
    assert cfg["dataset"]["num_samples"] == 200 and cfg["training"]["epochs"] == 1
    assert cfg["training"]["batch_size"] == 32 and cfg["logging"]["output_dir"] == "D"
    (tmp_path/"cfg.yaml").write_text(DIGITS_YAML)
    assert cfg == build_config(str(tmp_path/"cfg.yaml"), ["dataset.num_samples=200"], output_dir="D", epochs=1).to_dict()
    t = res["totals"]
    assert t["samples_seen"] == 192 and t["samples_scored"] == 192      # 200 train samples -> 6 full batches of 32
    assert 2 <= t["samples_trained"] < t["samples_seen"]
    assert t["flops"] > 0 and t["energy_j"] > 0
    assert sum(h["samples_trained"] for h in history_rows(res)) == t["samples_trained"]


@uses("plain")
def test_run_leaves_no_temp_files(jobs):
    r = ok(jobs("plain"))
    d = r.cwd/"D"
    files = results_files(d)
    assert len(files) == 1
    assert not list(d.rglob(".*.tmp")) and not list(d.rglob("*.tmp"))
    assert sorted(p.name for p in d.iterdir()) == sorted([files[0].name, "checkpoints"])
    ck = d/"checkpoints"/files[0].name[len("final_results_"):-len("_YYYYmmdd-HHMMSS.json")]
    assert sorted(p.name for p in ck.iterdir()) == ["best.pt", "last.pt"]


@uses("secret")
def test_jsonl_gets_one_line_per_epoch(jobs):
    r = ok(jobs("secret"))
    cwd = r.cwd
    rows = [json.loads(l) for l in (cwd/"S"/"epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        missing = [k for k in HISTORY_FIELDS if k not in row]
        assert not missing, missing
    res = json.loads(results_files(cwd/"S")[0].read_text())
    assert [h["epoch"] for h in history_rows(res)] == [1, 2]
    assert [h["val_acc"] for h in history_rows(res)] == [row["val_acc"] for row in rows]


@uses("secret")
def test_secrets_stay_out_of_results_and_jsonl(jobs):
    r = ok(jobs("secret"))
    cwd = r.cwd
    files = results_files(cwd/"S")
    assert len(files) == 1
    text = files[0].read_text()
    assert SECRET not in text
    assert json.loads(text)["config"]["logging"]["run_name"] == "***"
    assert SECRET not in (cwd/"S"/"epochs.jsonl").read_text()


@uses("secret")
def test_secrets_stay_out_of_results_path_and_stdout(jobs):
    r = ok(jobs("secret"))
    assert not any(SECRET in p.name for p in (r.cwd/"S").iterdir())
    assert SECRET not in r.stdout


# ---------------------------------------------------------------- 2, 3: ImageFolder and a local HF dataset

@uses("folder")
def test_imagefolder_end_to_end(jobs):
    j = jobs("folder")
    r = ok(j["r"])
    s = json_lines(r.stdout)[-1]
    res = json.loads((j["cwd"]/s["results_path"]).read_text())
    check_results(res)
    assert res["config"]["dataset"]["train_dir"] == str(j["train_dir"])
    assert res["config"]["dataset"]["val_dir"] == str(j["val_dir"])
    assert res["totals"]["samples_seen"] == 32                 # 36 images, batches of 8, the last partial one dropped
    assert res["totals"]["bad_images_skipped"] == 0
    assert "36 train / 12 val, 3 classes (cat, dog, fox)" in res["data"]


@uses("folder")
def test_folder_run_is_named_after_the_dataset(jobs):
    s = json_lines(ok(jobs("folder")["r"]).stdout)[-1]
    assert s["run"] == "data_resnet_tiny_ast25_s0"             # '.../data/train' is named after its parent, as in data


@uses("hf")
def test_hf_local_dataset_end_to_end(jobs):
    j = jobs("hf")
    r = ok(j["r"])
    s = json_lines(r.stdout)[-1]
    assert s["run"] == "hfdata_resnet_tiny_ast25_s0"
    res = json.loads((j["cwd"]/s["results_path"]).read_text())
    check_results(res)
    assert res["config"]["dataset"]["name"] == str(j["path"])
    assert res["totals"]["samples_seen"] == 32
    assert "36 train / 12 val, 3 classes (cat, dog, fox)" in res["data"]


# ---------------------------------------------------------------- 4, 5: what really reaches backward, in-process

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train(cfg)` on digits per method, with a backward hook on the model's first conv counting the samples whose
    gradient really flows (the FLOP counter's deep copy of the model carries the hook too, so count only the original)."""
    out = tmp_path_factory.mktemp("inproc")
    runs = {}
    def run(method):
        if method in runs: return runs[method]
        count = dict(samples=0, calls=0)
        orig = T.create_model
        def create_model(*a, **k):
            model = orig(*a, **k)
            conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
            def hook(mod, grad_in, grad_out):
                if mod is conv: count["samples"] += grad_out[0].shape[0]; count["calls"] += 1
            conv.register_full_backward_hook(hook)
            return model
        ov = ["dataset.num_samples=800", "training.epochs=3", "training.batch_size=64", "model.name=resnet_tiny",
              "training.device=cpu", "training.progress=false", f"logging.output_dir={out}",
              f"ast.method={method}", "ast.target_activation=0.25"]
        threads = torch.get_num_threads()
        with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            mp.setattr(T, "create_model", create_model)
            torch.set_num_threads(1)   # the CLI jobs run alongside; see the module docstring
            try: res = T.train(load_config(overrides=ov, env_file=None), log=lambda *a: None)
            finally: torch.set_num_threads(threads)
        runs[method] = (res, count)
        return runs[method]
    return run


def test_ast_trains_backward_only_on_the_selected_samples(trained):
    res, count = trained("ast")
    t = res["totals"]
    assert t["samples_seen"] == 3 * 12 * 64                 # 800 train samples -> 12 full batches of 64, 3 epochs
    assert t["samples_scored"] == t["samples_seen"]          # every sample gets the no-grad score pass
    assert count["calls"] == 36                              # one backward per batch
    assert count["samples"] == t["samples_trained"]          # ... over exactly the samples counted as trained
    assert sum(h["samples_trained"] for h in history_rows(res)) == t["samples_trained"]
    assert t["samples_trained"] >= 36 * 2                    # the min_active floor


def test_ast_saves_compute_against_full(trained):
    "A loose guard that holds today: AST trains well under half of each batch and costs clearly less than full."
    (ast, _), (full, _) = trained("ast"), trained("full")
    rate = ast["totals"]["samples_trained"] / ast["totals"]["samples_seen"]
    assert 0.15 <= rate <= 0.4
    assert ast["totals"]["flops"] < 0.75 * full["totals"]["flops"]
    fl = ast["flops_per_sample"]
    assert ast["totals"]["flops"] == pytest.approx(ast["totals"]["samples_scored"] * fl["fwd"]
                                                   + ast["totals"]["samples_trained"] * fl["fwd_bwd"])
    assert 0 < ast["totals"]["energy_savings"] < 1 and full["totals"]["energy_savings"] == 0


def test_ast_tracks_its_target_and_costs_under_0_6_of_full(trained):
    (ast, _), (full, _) = trained("ast"), trained("full")
    rate = ast["totals"]["samples_trained"] / ast["totals"]["samples_seen"]
    assert 0.2 <= rate <= 0.3
    assert ast["totals"]["flops"] < 0.6 * full["totals"]["flops"]


def test_random_trains_exactly_round_target_per_batch_and_scores_none(trained):
    res, count = trained("random")
    t = res["totals"]
    batches = 3 * 12
    assert t["samples_seen"] == batches * 64
    assert t["samples_trained"] == batches * 16              # round(0.25 * 64) every batch (drop_last: all full)
    assert t["samples_scored"] == 0                          # no score pass for random
    assert count["samples"] == t["samples_trained"] and count["calls"] == batches
    assert all(h["activation_rate"] == 0.25 for h in history_rows(res))
    assert t["flops"] == pytest.approx(t["samples_trained"] * res["flops_per_sample"]["fwd_bwd"])


def test_full_trains_everything_and_scores_none(trained):
    res, count = trained("full")
    t = res["totals"]
    assert t["samples_seen"] == 3 * 12 * 64
    assert t["samples_trained"] == t["samples_seen"] and t["samples_scored"] == 0
    assert count["samples"] == t["samples_seen"] and count["calls"] == 36
    assert t["energy_savings"] == 0 and all(h["activation_rate"] == 1 for h in history_rows(res))
    assert t["flops"] == pytest.approx(t["samples_seen"] * res["flops_per_sample"]["fwd_bwd"])


# ---------------------------------------------------------------- 6: bad input

@uses(*[f"bad_{c}" for c in ERROR_CASES])
@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_exits_2_with_one_line_message(jobs, case):
    r = jobs(f"bad_{case}")
    cwd = r.cwd
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for s in ERROR_CASES[case][1]: assert s.format(cwd=cwd) in err[0], (s, err[0])
    assert not json_lines(r.stdout)
    assert not (cwd/"D").exists() or not results_files(cwd/"D")


@uses("debug")
def test_debug_shows_the_traceback(jobs):
    r = jobs("debug")
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "ConfigError" in r.stderr and "training.lrr" in r.stderr
    assert not (r.cwd/"D").exists() or not results_files(r.cwd/"D")


# ---------------------------------------------------------------- 7, 8: sweep and analyze

RUNS = ["digits_resnet_tiny_ast25_s0", "digits_resnet_tiny_random25_s0"]


@uses("sweep")
def test_sweep_prints_one_json_line_per_run(jobs):
    j = jobs("sweep")
    rows = json_lines(ok(j["first"]).stdout)
    assert [row["config"] for row in rows] == ["A.yaml", "B.yaml"]
    assert [row["method"] for row in rows] == ["ast", "random"]
    assert [row["run"] for row in rows] == RUNS
    assert not any(row.get("skipped") for row in rows)
    for row in rows: assert (j["cwd"]/row["results_path"]).is_file()
    assert len(j["files1"]) == 2
    assert [json.loads(l) for l in j["log1"].splitlines()] == rows


@uses("sweep")
def test_sweep_again_skips_finished_runs(jobs):
    j = jobs("sweep")
    rows, first = json_lines(ok(j["again"]).stdout), json_lines(j["first"].stdout)
    assert len(rows) == 2 and all(row["skipped"] is True for row in rows)
    assert [row["run"] for row in rows] == RUNS
    assert [row["results_path"] for row in rows] == [row["results_path"] for row in first]
    assert j["files2"] == j["files1"]                          # nothing trained, nothing written (same files, mtimes)


@uses("sweep")
def test_sweep_force_reruns(jobs):
    j = jobs("sweep")
    rows = json_lines(ok(j["force"]).stdout)
    assert len(rows) == 2 and not any(row.get("skipped") for row in rows)
    assert [row["run"] for row in rows] == RUNS and all("best_accuracy" in row for row in rows)
    first = json_lines(j["first"].stdout)
    for row, old in zip(rows, first):
        p = j["cwd"]/row["results_path"]
        # a fresh results file (names are stamped to the second, so a re-run within the same second replaces it)
        assert p.is_file() and p.stat().st_mtime_ns > j["files1"][Path(old["results_path"]).name]
        assert json.loads(p.read_text())["run_name"] == row["run"]


@uses("sweep")
def test_sweep_log_gets_one_line_per_run_per_invocation(jobs):
    j = jobs("sweep")
    rows = [json.loads(l) for l in (j["cwd"]/"L.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert [bool(r.get("skipped")) for r in rows] == [False, False, True, True, False, False]
    assert [r["config"] for r in rows] == ["A.yaml", "B.yaml"] * 3
    assert [r["run"] for r in rows] == RUNS * 3


@uses("sweep")
def test_analyze_prints_table_and_writes_plots(jobs):
    j = jobs("sweep")
    r, plots = ok(j["analyze"]), j["cwd"]/"D"/"plots"
    main_table = r.stdout.split("where the time goes")[0]            # the per-phase table follows, one row per run too
    assert "where the time goes" in r.stdout
    table = [l for l in main_table.splitlines() if "digits_resnet_tiny" in l]
    assert len(table) == 2                                     # one row per run: the newest results file of each
    for run in RUNS:
        assert sum(run in l for l in table) == 1
        png = plots/f"{run}.png"
        assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cmp = plots/"comparison.png"
    assert cmp.is_file() and cmp.stat().st_size > 1000 and cmp.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in plots.iterdir()) == sorted([*(f"{run}.png" for run in RUNS), "comparison.png", "phases.png"])


@uses("analyze_empty")
def test_analyze_empty_dir_exits_2_naming_it(jobs):
    r = jobs("analyze_empty")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "'empty'" in err[0]
    assert "Traceback" not in r.stderr and not r.stdout.strip()
