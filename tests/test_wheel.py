"""`python -m build --wheel` makes a wheel that installs into a fresh venv, imports from there, and whose console scripts run.

The wheel is built from a copy of the sources (pyproject.toml, README.md, astlab/) so the checkout gets no build/ or
egg-info, without build isolation (no download of setuptools). The fresh venv has no pip and no packages; the wheel goes in
with this environment's pip (`pip --python`, `--no-deps --no-index`), and only *then* a .pth file lends it this
environment's site-packages for the heavy dependencies (torch & co.), which would take minutes to install. A plain path in
a .pth does not run the .pth files of that folder, so the checkout's editable install stays inactive: `astlab` can only
come from the wheel.
"""
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("astlab-run", "astlab-sweep", "astlab-analyze", "astlab-sim", "astlab-kaggle", "astlab-imagenette",
           "astlab-compare")


def run(*args, cwd, **kw):
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN")}
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([str(a) for a in args], cwd=cwd, env=e, capture_output=True, text=True, timeout=300, **kw)


def test_wheel_installs_imports_and_runs_its_scripts(tmp_path):
    src = tmp_path/"src"; src.mkdir()
    for f in ("pyproject.toml", "README.md"): shutil.copy(ROOT/f, src/f)
    shutil.copytree(ROOT/"astlab", src/"astlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    r = run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path/"dist", src, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr        # `make demo` printed setuptools' deprecation of `license = {text = ...}`
    assert "deprecated" not in log.lower(), [l for l in log.splitlines() if "deprecat" in l.lower()]
    (whl,) = (tmp_path/"dist").glob("astlab-*.whl")

    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        ep = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    modules = {p.name for p in (ROOT/"astlab").glob("*.py")}
    assert modules <= {Path(n).name for n in names if n.startswith("astlab/")}, "every module is in the wheel"
    for s in SCRIPTS: assert f"{s} = astlab." in ep, f"console script {s} missing from the wheel"
    assert "Requires-Dist: torch" in meta and "Provides-Extra: kaggle" in meta
    assert "License-Expression: Apache-2.0" in meta, "license as an SPDX string (PEP 639)"

    venv = tmp_path/"venv"
    r = run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    py = venv/"bin"/"python"
    r = run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", whl, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    purelib = run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib)/"_astlab_test_deps.pth").write_text("\n".join(deps) + "\n")

    r = run(py, "-c", "import json, astlab, astlab.lab.experiment, astlab.integrations.kaggle, astlab.lab.imagenette; "
                      "print(json.dumps([astlab.__file__, astlab.__version__]))", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path, version = json.loads(r.stdout.splitlines()[-1])
    assert Path(path).resolve().is_relative_to(Path(purelib).resolve()), f"astlab imported from {path}, not the wheel"
    assert version in whl.name

    def script(name, *args): return run(venv/"bin"/name, *args, cwd=tmp_path)
    with ThreadPoolExecutor(4) as ex:
        helps = dict(zip(SCRIPTS, ex.map(lambda s: script(s, "--help"), SCRIPTS)))
        trained = ex.submit(script, "astlab-run", "--epochs", "1", "--no-progress", "--output-dir", tmp_path/"results",
                            "--set", "dataset.num_samples=100", "model.name=resnet_tiny", "training.device=cpu").result()
    for s, r in helps.items():
        assert r.returncode == 0 and "usage:" in r.stdout, f"{s} --help failed: {r.stderr[-2000:]}"
    assert trained.returncode == 0, trained.stderr[-3000:]
    res = json.loads(Path(json.loads(trained.stdout.splitlines()[-1])["results_path"]).read_text())
    assert res["epochs_completed"] == 1 and res["versions"]["astlab"] == version
