"""`astlab-compare` end to end, as its console script runs it: bad input exits 2 before any work, a tiny comparison
writes compare.json / compare.md / compare.png with the promised schema, and a second call skips every finished run.

Tiny: 192 digits at 8 px, resnet_tiny, 1 epoch, 1 seed. The calibration math, the statistics and the verdict logic are
tested in nbs/lab/14_compare.ipynb on synthetic numbers."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

LAUNCHER = "import sys\nfrom astlab.lab.compare import compare_cli\nsys.exit(compare_cli())\n"   # what pip's console script does
TINY = ["model.name=resnet_tiny", "dataset.image_size=8", "dataset.num_samples=192", "training.batch_size=32",
        "training.epochs=1", "training.device=cpu", "training.warmup_epochs=0"]
ROW_KEYS = {"method", "role", "budget", "seed", "best_accuracy", "final_accuracy", "flops_ratio", "wall_ratio",
            "activation_rate", "flops_deviation", "within_tolerance", "run_name", "results_path", "command"}


def start(tmp_path, *args):
    "Start astlab-compare exactly as the installed console script would (a script file calling compare_cli())."
    launcher = tmp_path/"astlab-compare"
    if not launcher.exists():       # written once: rewriting it while a started process reads it made that one run nothing (exit 0)
        tmp = tmp_path/"astlab-compare.tmp"; tmp.write_text(LAUNCHER); tmp.replace(launcher)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.Popen([sys.executable, str(launcher), *map(str, args)], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p, timeout=600):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def test_bad_budget_or_method_exits_2_before_any_work(tmp_path):
    cases = {"budget": ["--budgets", "0.5", "1.5", "--methods", "ast"],
             "method": ["--budgets", "0.5", "--methods", "ast", "asst"],
             "reach": ["--budgets", "0.2", "--methods", "ast"],
             "epochs": ["--budgets", "0.5", "--methods", "ast", "--epochs", "0"],
             "early_stop": ["--budgets", "0.5", "--methods", "ast", "--set", "training.early_stop_patience=2"]}
    procs = {k: start(tmp_path, *a, "--out", tmp_path/k) for k, a in cases.items()}
    errs = {}
    for k, p in procs.items():
        rc, out, errs[k] = finish(p)
        assert rc == 2, (k, rc, errs[k][-2000:])
        lines = errs[k].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), errs[k]
        assert not (tmp_path/k).exists(), f"{k}: work started before the input was checked"
    assert "bad budget '1.5'" in errs["budget"] and "unknown method 'asst'" in errs["method"]
    assert "--allow-early-stop" in errs["early_stop"] and "--epochs" in errs["epochs"]


def test_tiny_comparison_schema_and_resume(tmp_path):
    out = tmp_path/"cmp"
    args = ["--budgets", "0.5", "--methods", "topk", "null", "--seeds", "1", "--out", out, "--baselines", "random", "full_budget",
            "--set", *TINY]
    rc, stdout, err = finish(start(tmp_path, *args))
    assert rc == 0, err[-3000:]
    assert "[1/1] full budget 1 seed 0: running" in stdout and "[4/4] full_budget budget 0.5 seed 0" in stdout
    rep = json.loads((out/"compare.json").read_text())
    rows = rep["rows"]
    assert {(r["method"], r["role"]) for r in rows} == {("full", "full"), ("topk", "adaptive"), ("null", "adaptive"),
                                                        ("random", "baseline"), ("full_budget", "baseline")}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert Path(r["results_path"]).exists() and r["command"].startswith("astlab-run --set ")
    by = {r["method"]: r for r in rows}
    assert by["full"]["flops_ratio"] == pytest.approx(1.0) and by["full"]["budget"] == 1.0
    for m in ("random", "full_budget", "topk", "null"):       # the calibration lands every method on its budget
        assert abs(by[m]["flops_ratio"] / 0.5 - 1) <= 0.05, (m, by[m]["flops_ratio"])
    assert by["topk"]["rate"] < 0.5                            # topk pays a score pass: it trains on less
    null = json.loads(Path(by["null"]["results_path"]).read_text())["config"]["ast"]
    assert (null["method"], null["selection_stream"]) == ("random", 1)      # random selection from another stream
    assert {v["method"] for v in rep["verdicts"]} == {"topk", "null"}
    for v in rep["verdicts"]:                                  # 1 seed: no pair to test, never a verdict
        assert v["verdict"] == "inconclusive" and v["n_pairs"] == 1 and v["p_value"] is None
        assert v["control"] == "random" or "best_baseline" in v["kind"]
    assert not rep["goal"]["met"] and rep["goal"]["null"] == {"tests": len([v for v in rep["verdicts"] if v["method"] == "null"]), "wins": 0}
    md = (out/"compare.md").read_text()
    assert "| method | role | budget |" in md and "## Verdicts" in md and "## Goal" in md
    assert (out/"compare.png").stat().st_size > 1000
    # the same command again: every run is found finished, nothing is trained, the report is rewritten the same
    rc, stdout, err = finish(start(tmp_path, *args))
    assert rc == 0, err[-3000:]
    assert stdout.count("done before, skipped") == 5 and "running" not in stdout
    rep2 = json.loads((out/"compare.json").read_text())
    assert rep2["runs_trained"] == 0
    assert [r["final_accuracy"] for r in rep2["rows"]] == [r["final_accuracy"] for r in rows]
    # another --set into the same folder: nothing is reused, every run is trained anew under its own name
    rc, stdout, err = finish(start(tmp_path, *args, "training.lr=0.05"))
    assert rc == 0, err[-3000:]
    rep3 = json.loads((out/"compare.json").read_text())
    assert rep3["runs_trained"] == 5 and "done before" not in stdout
    assert not {r["run_name"] for r in rep3["rows"]} & {r["run_name"] for r in rows}
    # a results file under a run's name that trained something else is refused, naming the key
    res = json.loads(Path(by["topk"]["results_path"]).read_text())
    res["config"]["training"]["lr"] = 0.5
    Path(by["topk"]["results_path"]).write_text(json.dumps(res))
    rc, stdout, err = finish(start(tmp_path, *args))
    assert rc == 2 and "training.lr: 0.5 in the results" in err and len(err.strip().splitlines()) == 1, err[-2000:]
    # the report of the folder gets the comparison's section
    from astlab.lab.analysis import write_report
    page = write_report(out).read_text()
    assert "Equal-compute comparison" in page


def test_folds_pair_seed_and_fold_and_evaluate_every_image_once(tmp_path):
    "--folds 2: every job runs once per (seed, fold); the verdict pairs them; the two folds validate disjoint halves."
    from astlab.lab.compare import compare
    out = tmp_path/"folds"
    rep = compare(None, [0.5], ["topk"], seeds=1, out=out, overrides=TINY, baselines=("random",), folds=2, log=lambda s: None)
    rows = rep["rows"]
    assert sorted((r["method"], r["fold"]) for r in rows) == [(m, f) for m in ("full", "random", "topk") for f in (0, 1)]
    assert all(v["n_pairs"] == 2 for v in rep["verdicts"]) and rep["folds"] == 2 and "--folds 2" in rep["command"]
    names = {r["run_name"] for r in rows}
    assert len(names) == 6 and all(("_f0_" in n) != ("_f1_" in n) for n in names)
    datas = [json.loads(Path(r["results_path"]).read_text())["data"] for r in rows if r["method"] == "full"]
    assert all("fold" in d for d in datas) and datas[0] != datas[1]
