"""Issue 11 item 9: a run talks while it trains. One compact line per epoch in every mode (progress bar on or off, the
CLI with --no-progress as `make demo` runs it, a Jupyter kernel), a progress bar that ends drawn at 100 %, a widget bar
in a notebook without tqdm.auto's `IProgress not found` warning, and an overall line per sweep run.

Everything is tiny: digits at 16 px, 160 samples, resnet_tiny, 2 epochs, CPU.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from astlab.lab.experiment import build_config, sweep
from astlab.lab.train import train

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = ["dataset.type=digits", "dataset.num_samples=160", "dataset.image_size=16", "model.name=resnet_tiny",
        "training.epochs=2", "training.batch_size=32", "training.device=cpu"]
LINE = re.compile(r"^epoch (\d+)/2 \| train \d\.\d{3} \| val \d\.\d{3} \| trained \d+\.\d% \| threshold \S+ \| "
                  r"([\d.]+) ([MGTP])FLOPs counted \| \d+:\d\d elapsed \| ETA \d+:\d\d$")


def epoch_lines(text):
    return [m for m in map(LINE.match, text.splitlines()) if m]


def check_lines(text, res):
    "Two epoch lines, in order, whose counted FLOPs are the history's (the seed's est_flops_g, cumulative)."
    ms = epoch_lines(text)
    assert [int(m[1]) for m in ms] == [1, 2], text
    flops = [r["est_flops_g"] for r in res["training_history"]] if isinstance(res["training_history"], list) \
        else res["training_history"]["est_flops_g"]
    scale = {"M": 1e-3, "G": 1.0, "T": 1e3, "P": 1e6}
    for m, g in zip(ms, flops): assert float(m[2]) * scale[m[3]] == pytest.approx(g, rel=5e-3)


def test_one_line_per_epoch_without_progress(tmp_path, capsys):
    res = train(build_config(None, TINY + [f"logging.output_dir={tmp_path}"]), progress=False)
    out, err = capsys.readouterr()
    check_lines(out, res)
    assert "%|" not in out + err, "no progress bar when progress is off"


def test_progress_bar_ends_at_100_percent_then_the_line(tmp_path, capsys):
    res = train(build_config(None, TINY + [f"logging.output_dir={tmp_path}"]), progress=True)
    out, err = capsys.readouterr()
    check_lines(out, res)
    assert "IProgress" not in err
    for e in (1, 2):   # the last frame tqdm drew of each epoch's bar is the complete one, not a throttled 69 %
        frames = [f for f in re.split(r"[\r\n]", err) if f.startswith(f"epoch {e}/2:")]
        assert frames and re.match(rf"epoch {e}/2: 100%\|", frames[-1]), frames[-3:]


def test_sweep_prints_run_i_of_n(tmp_path):
    lines = []
    cfgs = [tmp_path/"a.yaml", tmp_path/"b.yaml"]
    for c, m in zip(cfgs, ("ast", "random")): c.write_text(f"ast: {{method: {m}}}\n")
    ov = TINY[:-3] + ["training.epochs=1", "training.batch_size=32", "training.device=cpu", f"logging.output_dir={tmp_path}"]
    sweep([str(c) for c in cfgs], ov, log=lines.append)
    heads = [l for l in lines if l.startswith("sweep run")]
    assert [h.split(":")[0] for h in heads] == ["sweep run 1/2", "sweep run 2/2"], lines
    assert "into the sweep" in heads[1] and any(l.startswith("epoch 1/1 |") for l in lines)
    lines.clear(); sweep([str(c) for c in cfgs], ov, log=lines.append)
    assert sum("already complete, skipped" in l for l in lines) == 2, lines


def test_cli_no_progress_prints_epoch_lines(tmp_path):
    "What `make demo` runs: astlab-sweep --no-progress talks once per epoch and per run, then the summary row."
    cfg = tmp_path/"c.yaml"; cfg.write_text("ast: {method: ast}\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"} | dict(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([str(BIN/"astlab-sweep"), str(cfg), "--no-progress", "--output-log", str(tmp_path/"log.jsonl"),
                        "--output-dir", str(tmp_path/"out"), "--set", *TINY], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "sweep run 1/1: " in r.stdout
    row = json.loads(r.stdout.splitlines()[-1])
    check_lines(r.stdout, json.loads(Path(row["results_path"]).read_text()))
    assert "%|" not in r.stderr


KERNEL_CELL = """
import sys, json
from astlab.lab.experiment import build_config
from astlab.lab.train import train
if {no_widgets}: sys.modules['ipywidgets'] = None     # as in a kernel without ipywidgets
res = train(build_config(None, {tiny!r} + ['logging.output_dir={out}', 'logging.run_name={name}']), progress=True)
"""


@pytest.fixture(scope="module")
def kernel_outputs(tmp_path_factory):
    "One kernel, two cells: a tiny run with the widget bar, then one as if ipywidgets were missing (outputs, folder)."
    pytest.importorskip("ipywidgets")
    import nbformat
    from nbclient import NotebookClient
    d = tmp_path_factory.mktemp("kernel")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(KERNEL_CELL.format(
        tiny=TINY, out=d, no_widgets=w, name=f"w{int(not w)}")) for w in (False, True)])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(d)}}).execute()
    return [c.outputs for c in nb.cells], d


def stream(outputs, name): return "".join(o.get("text", "") for o in outputs if o.get("name") == name)


def test_notebook_bar_is_a_widget_without_warning(kernel_outputs):
    (outs, _), d = kernel_outputs
    text = json.dumps(outs)
    assert "IProgress" not in text and "TqdmWarning" not in text
    widgets = [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 2, "one widget bar per epoch"
    assert "%|" not in stream(outs, "stderr"), "no text bar next to the widget"
    (res,) = d.glob("final_results_w1_*.json")
    check_lines(stream(outs, "stdout"), json.loads(res.read_text()))


def test_notebook_without_ipywidgets_falls_back_to_a_complete_text_bar(kernel_outputs):
    "astlab picks tqdm.std itself (a library that imports tqdm.auto, such as huggingface_hub, may still warn: hence the dependency)."
    (_, outs), d = kernel_outputs
    err = stream(outs, "stderr")
    assert not [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    for e in (1, 2):
        frames = [f for f in re.split(r"[\r\n]", err) if f.startswith(f"epoch {e}/2:")]
        assert frames and re.match(rf"epoch {e}/2: 100%\|", frames[-1]), frames[-3:]
    (res,) = d.glob("final_results_w0_*.json")
    check_lines(stream(outs, "stdout"), json.loads(res.read_text()))
