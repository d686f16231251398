"""`astlab-analyze --report`: one self-contained HTML page comparing every run of a results directory.

Two tiny digits runs (AST and full data, resnet_tiny, 16 px, 2 epochs) are trained in-process; the report is written by
the installed console script in a subprocess, offline, with a secret in its environment that must not reach the page.
"""
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from astlab.config import load_config
from astlab.lab.train import train
from astlab.lab.analysis import pareto_front, results_table, load_results

BIN = Path(sys.executable).parent
SECRET = "hf_reportsecret987"
HEADERS = ("method", "target", "best accuracy", "counted GFLOPs", "energy (kJ)", "energy source", "wall time",
           "tracking error")
TINY = ["model.name=resnet_tiny", "dataset.num_samples=200", "dataset.image_size=16", "training.epochs=2",
        "training.batch_size=32", "training.device=cpu", "training.progress=false"]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    n = torch.get_num_threads()
    torch.set_num_threads(1)       # tiny nets: one thread is faster, and much faster on a busy 2-core box
    try:
        for m in ("ast", "full"):
            train(load_config(None, TINY + [f"ast.method={m}", f"logging.output_dir={d}"]), log=lambda s: None)
    finally: torch.set_num_threads(n)
    return d


def report(d, **env_extra):
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "MPLBACKEND")}
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run([str(BIN/"astlab-analyze"), "--results-dir", str(d), "--report"], env=e, text=True,
                          capture_output=True, timeout=300)


def test_report_is_one_self_contained_page(results_dir):
    # a third, hand-edited results file: markup and a secret in its text must come out escaped / redacted
    src = sorted(results_dir.glob("final_results_*ast*.json"))[0]
    r = json.loads(src.read_text())
    r.update(run_name=f"<script>alert(1)</script>_{SECRET}", energy_source='nvml" onerror="x')
    (results_dir/"final_results_hostile.json").write_text(json.dumps(r))
    try:
        p = report(results_dir, HF_TOKEN=SECRET)
    finally: (results_dir/"final_results_hostile.json").unlink()
    assert p.returncode == 0, p.stderr[-3000:]
    out = results_dir/"report.html"
    assert f"report: {out}" in p.stdout
    page = out.read_text()
    names = [x["run_name"] for x in load_results(results_dir)]
    assert len(names) == 2 and all(n in page for n in names)
    for h in HEADERS: assert f"<th>{h}" in page, h
    # self-contained: every src/href is a PNG data URI; no remote or file references, no scripts, no stylesheets
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert len(refs) == 1 + 2 and all(u.startswith("data:image/png;base64,") for u in refs)   # Pareto + 2 AST traces
    assert "full: trains on every sample, no controller to trace" in page   # no empty panel for full data
    assert 'src="http' not in page and "file:" not in page and "<link" not in page
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onerror="x' not in page and "nvml&quot; onerror=&quot;x" in page
    assert SECRET not in page and "_***" in page
    for u in refs: assert base64.b64decode(u.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    # the table marks the Pareto front
    df = results_table(load_results(results_dir))
    for run, on in zip(df.run, pareto_front(df)):
        assert bool(re.search(rf'<tr class="front"><td>{re.escape(run)}</td>', page)) == on, run


def test_pareto_front_of_real_runs(results_dir):
    df = results_table(load_results(results_dir))
    front = pareto_front(df)
    top = df[df.best_acc == df.best_acc.max()]
    assert front[top.gflops.idxmin()]                  # the cheapest of the most accurate runs is never dominated
    low = df[df.gflops == df.gflops.min()]
    assert front[low.best_acc.idxmax()]                # nor the most accurate of the cheapest
    assert df.set_index("method").gflops["ast"] < df.set_index("method").gflops["full"]


def test_report_without_results_exits_2(tmp_path):
    p = report(tmp_path)
    assert p.returncode == 2 and "no final_results_*.json" in p.stderr
    assert not (tmp_path/"report.html").exists()
