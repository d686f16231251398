"""Issue 11 item 13: nbs/00a_tour.ipynb reads as a tutorial with its pictures stored — what AST is, one small run, the
controller at work, the equal-compute question — and nbdev-clean keeps it as committed (outputs included)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT/"nbs"/"00a_tour.ipynb"


def cells():
    return json.loads(TOUR.read_text())["cells"]


def test_tour_has_each_part_with_its_picture():
    cs = cells()
    text = "\n".join("".join(c["source"]) for c in cs if c["cell_type"] == "markdown")
    for heading in ("## What AST is", "## One small run", "## The controller at work", "## The equal-compute question"):
        assert heading in text, heading
    assert not any("".join(c["source"]).startswith("#| default_exp") for c in cs), "a tour, not a module"
    drawing = [c for c in cs if c["cell_type"] == "code" and any(k in "".join(c["source"]) for k in ("plot_run(", "plot_comparison(", "plot_simulation(", "plt.subplots("))]
    assert len(drawing) >= 4
    for c in drawing:
        assert any("image/png" in o.get("data", {}) for o in c.get("outputs", [])), "".join(c["source"])[:80]
    prose = sum(len("".join(c["source"])) for c in cs if c["cell_type"] == "markdown")
    code = sum(len("".join(c["source"])) for c in cs if c["cell_type"] == "code")
    assert prose > code, "a tutorial: more prose than code"


def test_tour_survives_nbdev_clean(tmp_path):
    "sync-check stays clean: nbdev-clean keeps the stored pictures and changes nothing."
    copy = tmp_path/"00a_tour.ipynb"; shutil.copy(TOUR, copy)
    r = subprocess.run([str(Path(sys.executable).parent/"nbdev-clean"), "--fname", str(copy)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert copy.read_text() == TOUR.read_text()
