"""papermill runs the execution notebook `nbs/run.ipynb`, as a user would: from the repo root, from `nbs/`, and from a
folder outside the checkout; one config or a sweep; the analysis table and plots end up inline in the output notebook.

Every papermill process starts a kernel and imports torch (~5 s), so all of them are started side by side when the module's
fixture first runs, each in its own temporary folder, offline and with one OpenMP thread; each test then waits for its own.
Runs are tiny (digits, 120-200 samples, 1 epoch, CPU).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARAMS = ("config", "config_text", "overrides", "output_dir", "sweep", "force", "resume", "device", "progress")
TINY = "{overrides: [training.epochs=1, dataset.num_samples=200, training.batch_size=32]}"


def env():
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "MPLBACKEND")}
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return e


def papermill(*args, cwd):
    return subprocess.Popen([str(BIN/"papermill"), *map(str, args), "--no-progress-bar"], cwd=cwd, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Start every papermill job at once; `runs[name]` is `(returncode, output, out_notebook, tmp)` once waited for."
    t = {k: tmp_path_factory.mktemp(k) for k in ("root", "nbs", "sweep", "resume", "missing")}
    jobs = {
        "help": (papermill("--help-notebook", "nbs/run.ipynb", cwd=ROOT), None),
        "root": (papermill("nbs/run.ipynb", t["root"]/"out.ipynb", "-p", "config", "configs/digits_ast.yaml",
                           "-p", "output_dir", t["root"]/"results", "-y", TINY, cwd=ROOT), t["root"]),
        "nbs": (papermill("run.ipynb", t["nbs"]/"out.ipynb", "-p", "config", "configs/digits_random.yaml",
                          "-p", "output_dir", t["nbs"]/"results", "-p", "device", "cpu",   # overrides as one string (issue 11.7)
                          "-p", "overrides", "training.epochs=1,dataset.num_samples=200 training.batch_size=32", cwd=ROOT/"nbs"),
                t["nbs"]),
        "sweep": (papermill(ROOT/"nbs/run.ipynb", t["sweep"]/"out.ipynb", "-p", "output_dir", t["sweep"]/"results",
                            "-y", "{sweep: [configs/digits_ast.yaml, configs/digits_full.yaml], "
                                  "overrides: [training.epochs=1, dataset.num_samples=120, model.name=resnet_tiny]}",
                            cwd=t["sweep"]), t["sweep"]),
        "resume": (papermill("nbs/run.ipynb", t["resume"]/"out.ipynb", "-p", "config", "configs/digits_ast.yaml",
                             "-p", "output_dir", t["resume"]/"results", "-p", "resume", "auto", "-y", TINY, cwd=ROOT), t["resume"]),
        "missing": (papermill("nbs/run.ipynb", t["missing"]/"out.ipynb", "-p", "config", "configs/nope.yaml", cwd=ROOT),
                    t["missing"]),
    }
    done = {}
    class Runs(dict):
        def __getitem__(self, k):
            if k not in done:
                p, tmp = jobs[k]
                out, err = p.communicate(timeout=300)
                done[k] = (p.returncode, out + err, tmp/"out.ipynb" if tmp else None, tmp)
            return done[k]
    yield Runs()
    for p, _ in jobs.values():
        if p.poll() is None: p.kill()


def outputs(nb_path):
    "All outputs of the executed notebook, flattened."
    nb = json.loads(Path(nb_path).read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def text_of(outs):
    return "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) for o in outs)


def results_in(d):
    return sorted(Path(d).glob("final_results_*.json"))


def test_help_notebook_lists_parameters_with_help(runs):
    rc, out, _, _ = runs["help"]
    assert rc == 0, out
    for p in PARAMS: assert f"  {p}: " in out, f"parameter {p} missing from --help-notebook:\n{out}"
    assert "relative to the working directory or the repo root" in out and "tiny CPU smoke run" in out
    assert "Unknown type" not in out, "every parameter should carry a type annotation"


def test_runs_from_repo_root_and_shows_table_and_plots(runs):
    rc, out, nb, tmp = runs["root"]
    assert rc == 0, out
    (res,) = results_in(tmp/"results")
    r = json.loads(res.read_text())
    assert r["epochs_completed"] == 1 and r["method"] == "ast" and r["complete"]
    outs = outputs(nb)
    html = [o["data"]["text/html"] for o in outs if "text/html" in o.get("data", {})]
    assert any("digits_resnet_small_ast25_s0" in "".join(h) and "best_acc" in "".join(h) for h in html), "no results table"
    assert sum("image/png" in o.get("data", {}) for o in outs) == 1, "one run: one run plot, no comparison"
    assert "configs/digits_ast.yaml" in text_of(outs)


def test_runs_from_nbs_with_relative_config_and_device(runs):
    rc, out, nb, tmp = runs["nbs"]
    assert rc == 0, out
    (res,) = results_in(tmp/"results")
    r = json.loads(res.read_text())
    assert r["method"] == "random" and r["device"]["type"] == "cpu" and r["config"]["training"]["device"] == "cpu"
    assert (r["config"]["training"]["epochs"], r["config"]["dataset"]["num_samples"], r["config"]["training"]["batch_size"]) \
        == (1, 200, 32), "every override of the -p string applied"
    assert str(ROOT/"configs/digits_random.yaml") in text_of(outputs(nb)), "a relative config resolves against the repo root"


def test_sweep_from_outside_the_checkout(runs):
    rc, out, nb, tmp = runs["sweep"]
    assert rc == 0, out
    rs = [json.loads(p.read_text()) for p in results_in(tmp/"results")]
    assert sorted(r["method"] for r in rs) == ["ast", "full"]
    outs = outputs(nb)
    assert sum("image/png" in o.get("data", {}) for o in outs) == 3, "two run plots and the comparison"
    html = "".join("".join(o["data"]["text/html"]) for o in outs if "text/html" in o.get("data", {}))
    assert "digits_resnet_tiny_ast25_s0" in html and "digits_resnet_tiny_full_s0" in html


def test_resume_is_passed_through(runs):
    rc, out, nb, tmp = runs["resume"]
    assert rc == 0, out
    assert results_in(tmp/"results")


def test_run_notebook_has_no_stale_text():
    "run.ipynb once said resume 'arrives with the checkpoint/resume work' and worked around its absence."
    text = (ROOT/"nbs/run.ipynb").read_text()
    for stale in ("arrives with the checkpoint/resume work", "takes no resume yet", "with_resume", "clutter a saved notebook"):
        assert stale not in text, stale


def test_missing_config_names_both_places(runs):
    rc, out, _, _ = runs["missing"]
    assert rc != 0
    assert "configs/nope.yaml" in out and "not found in" in out and "repo root" in out
