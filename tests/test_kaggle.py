"""`astlab-kaggle`: the kernel folder it writes passes the checks `kaggle kernels push` makes offline, its notebook runs
locally under papermill on the CPU (install skipped by parameter, Kaggle secrets read through a stand-in `kaggle_secrets`),
`--push` calls the real client command and fails clearly without the client or credentials, no secret value is ever
written or printed, and the starter folders in kaggle/ are exactly what kaggle/README.md's commands generate.

No network: the `kaggle` client is replaced by a small script on PATH where a push is needed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KAGGLE_KEY = "kagglesecretkey0123456789"
HF_SECRET = "hf_secretvalue123"
TINY = ["--set", "training.epochs=1", "dataset.num_samples=200", "training.batch_size=32"]
STARTERS = {  # kaggle/README.md: the two astlab-kaggle lines with U=your-kaggle-username
    "digits-ast": ["--config", "configs/digits_ast.yaml", "--slug", "your-kaggle-username/astlab-digits-ast", "--no-gpu"],
    "imagenette-resnet18-ast": ["--config", "configs/imagenette_resnet18_ast.yaml",
                                "--slug", "your-kaggle-username/astlab-imagenette-resnet18-ast", "--gpu"],
}
WHEEL = ["--dataset-sources", "your-kaggle-username/astlab-wheel",
         "--install", "/kaggle/input/astlab-wheel/astlab-0.1.0-py3-none-any.whl"]


def env(home, **extra):
    "Offline, no Kaggle/HF credentials unless given, HOME without ~/.kaggle."
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("KAGGLE_") and k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MPLBACKEND")}
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", HOME=str(home))
    e.update(extra)
    return e


def kaggle_cli(*args, home, cwd=ROOT, **extra):
    return subprocess.run([str(BIN/"astlab-kaggle"), *map(str, args)], cwd=cwd, env=env(home, **extra),
                          capture_output=True, text=True, timeout=120)


def all_text(folder):
    return "".join(p.read_text(errors="replace") for p in Path(folder).rglob("*") if p.is_file())


# ------------------------------------------------------------------ what `kaggle kernels push` checks offline

def kaggle_slugify(s):
    "python-slugify, which the client uses (its rules for ASCII text when the package is not installed)."
    try:
        from slugify import slugify
        return slugify(s)
    except ImportError:
        s = re.sub(r"'+", "-", s).lower()
        s = re.sub(r"(?<=\d),(?=\d)", "", s)
        return re.sub(r"-{2,}", "-", re.sub(r"[^-a-z0-9]+", "-", s)).strip("-")


def client_checks(folder):
    "kaggle-api's KaggleApi.kernels_push, up to the network call; returns the problems (the title one is only a warning there)."
    meta = json.loads((Path(folder)/"kernel-metadata.json").read_text())
    problems = []
    title = meta.get("title")
    if title and len(title) < 5: problems.append("Title must be at least five characters")
    code = meta.get("code_file", "")
    if not code or not (Path(folder)/code).is_file(): problems.append("Source file not found")
    slug = meta.get("id")
    if not slug: problems.append("ID or slug must be specified")
    else:
        owner, _, ks = slug.partition("/")
        if not owner or not ks: problems.append("Kernel must be specified in the form of {username}/{kernel-slug}")
        if len(ks) < 5: problems.append("Kernel slug must be at least five characters")
        if title and ks.lower() != kaggle_slugify(title): problems.append("title does not resolve to the specified id")
    if meta.get("language") not in ("python", "r", "rmarkdown"): problems.append("language")
    if meta.get("kernel_type") not in ("script", "notebook"): problems.append("kernel_type")
    for d in meta.get("dataset_sources", []):
        o, _, s = d.partition("/")
        if not o or not s: problems.append(f"dataset {d}")
    for k in ("is_private", "enable_gpu", "enable_tpu", "enable_internet"):
        if not isinstance(meta.get(k), bool): problems.append(f"{k} not explicit")
    if meta.get("kernel_type") == "notebook":
        body = json.loads((Path(folder)/code).read_text())  # the client json.loads the notebook and joins sources
        if "cells" not in body: problems.append("not a notebook")
    return problems


# ------------------------------------------------------------------ tests

def test_starter_kernels_match_their_commands(tmp_path):
    for name, args in STARTERS.items():
        r = kaggle_cli(*args, *WHEEL, "--out", tmp_path/name, home=tmp_path)
        assert r.returncode == 0, r.stderr
        for f in ("kernel-metadata.json", "run.ipynb"):
            committed = (ROOT/"kaggle"/name/f).read_text()
            assert (tmp_path/name/f).read_text() == committed, (
                f"kaggle/{name}/{f} is stale: regenerate it with the commands in kaggle/README.md "
                f"(astlab-kaggle {' '.join(args + WHEEL)} --out kaggle/{name} --overwrite)")
        assert client_checks(ROOT/"kaggle"/name) == []
    meta = json.loads((ROOT/"kaggle/imagenette-resnet18-ast/kernel-metadata.json").read_text())
    assert meta["enable_gpu"] is True and meta["enable_internet"] is True and meta["code_file"] == "run.ipynb"
    assert "push" in (ROOT/"kaggle/README.md").read_text() and "kaggle kernels status" in (ROOT/"kaggle/README.md").read_text()
    assert "kaggle kernels output" in (ROOT/"kaggle/README.md").read_text()


REAL_CLIENT = """
import contextlib, io, sys
from unittest import mock
from kaggle.api.kaggle_api_extended import KaggleApi  # `import kaggle` tries to authenticate; without credentials it goes on
api = KaggleApi.__new__(KaggleApi); api.config_values = {'username': 'nobody'}
for folder in sys.argv[1:]:
    out = io.StringIO()
    with mock.patch.object(KaggleApi, 'build_kaggle_client') as client, contextlib.redirect_stdout(out):
        api.kernels_push(folder)  # every check it makes, then the (mocked) network call
    assert client.called, folder
    assert 'does not resolve' not in out.getvalue(), (folder, out.getvalue())
print('ok')
"""


def real_client_python():
    "A Python that has the kaggle package (the `kaggle` extra): this one, or ASTLAB_KAGGLE_PYTHON."
    for py in (os.environ.get("ASTLAB_KAGGLE_PYTHON"), sys.executable):
        if py and subprocess.run([py, "-c", "import importlib.util as u, sys; s = u.find_spec('kaggle'); "
                                  "sys.exit(0 if s and s.origin else 1)"], cwd="/", capture_output=True).returncode == 0:
            return py
    pytest.skip("the kaggle client is not installed (pip install -e '.[kaggle]', or set ASTLAB_KAGGLE_PYTHON)")


def test_real_client_offline_checks_pass(tmp_path):
    "With the kaggle package installed, its own `kernels_push` checks the starter folders up to the network call."
    r = subprocess.run([real_client_python(), "-c", REAL_CLIENT, *(str(ROOT/"kaggle"/n) for n in STARTERS)],
                       cwd=tmp_path, env=env(tmp_path), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_generated_notebook_runs_locally_with_papermill(tmp_path):
    k = tmp_path/"kernel"
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", k, "--slug", "tester/astlab-digits-smoke", "--no-gpu",
                   "--install", "astlab==0.1.0", *TINY, home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tester/astlab-digits-smoke" in r.stdout and "gpu=false" in r.stdout
    meta = json.loads((k/"kernel-metadata.json").read_text())
    assert meta["title"] == "Astlab digits smoke" and meta["enable_gpu"] is False and client_checks(k) == []
    nb = json.loads((k/"run.ipynb").read_text())
    params = nb["metadata"]["papermill"]["parameters"]
    assert params["install"] == "astlab==0.1.0" and "target_activation: 0.25" in params["config_text"]
    # run it as Kaggle would, minus the install; a stand-in kaggle_secrets provides HF_TOKEN
    stub = tmp_path/"stub"; stub.mkdir()
    (stub/"kaggle_secrets.py").write_text(
        "class UserSecretsClient:\n"
        f"    def get_secret(self, name): return {HF_SECRET!r} if name == 'HF_TOKEN' else None\n")
    import yaml
    (tmp_path/"p.yaml").write_text(yaml.safe_dump({**params, "install": "", "output_dir": str(tmp_path/"results")}))
    r = subprocess.run([str(BIN/"papermill"), str(k/"run.ipynb"), str(tmp_path/"out.ipynb"), "-f", str(tmp_path/"p.yaml"),
                        "--no-progress-bar"], cwd=tmp_path, env=env(tmp_path, PYTHONPATH=str(stub)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (res,) = (tmp_path/"results").glob("final_results_*.json")
    assert json.loads(res.read_text())["epochs_completed"] == 1
    out = (tmp_path/"out.ipynb").read_text()
    assert "HF_TOKEN: set from Kaggle secrets" in out and '"image/png"' in out
    assert HF_SECRET not in out and HF_SECRET not in res.read_text() and HF_SECRET not in r.stdout + r.stderr


def fake_client(tmp_path, reply="Kernel version 1 successfully pushed.  Please check progress at https://www.kaggle.com/code/x"):
    "A `kaggle` command on PATH that records its arguments and prints `reply`."
    d = tmp_path/"fakebin"; d.mkdir(exist_ok=True)
    (d/"kaggle").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/kaggle-args\necho '{reply}'\n")
    (d/"kaggle").chmod(0o755)
    return f"{d}{os.pathsep}{os.environ.get('PATH', '')}"


def test_push_runs_the_client_and_never_leaks_secrets(tmp_path):
    k = tmp_path/"k"
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", k, "--slug", "tester/astlab-digits-push",
                   "--install", "astlab==0.1.0", "--set", f"logging.run_name=run-{HF_SECRET}", "--push", home=tmp_path,
                   PATH=fake_client(tmp_path), KAGGLE_USERNAME="tester", KAGGLE_KEY=KAGGLE_KEY, HF_TOKEN=HF_SECRET)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/"kaggle-args").read_text().split() == ["kernels", "push", "-p", str(k)]
    assert "successfully pushed" in r.stdout and "credentials: KAGGLE_USERNAME/KAGGLE_KEY from the environment" in r.stdout
    for secret in (KAGGLE_KEY, HF_SECRET):
        assert secret not in r.stdout + r.stderr and secret not in all_text(k)
    assert "run-***" in (k/"run.ipynb").read_text()


def test_push_reports_a_refused_push(tmp_path):
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", "--slug", "tester/astlab-digits-push",
                   "--install", "astlab==0.1.0", "--push", home=tmp_path, PATH=fake_client(tmp_path, "Kernel push error: Notebook not found"),
                   KAGGLE_USERNAME="tester", KAGGLE_KEY=KAGGLE_KEY)
    assert r.returncode == 1 and "Kernel push error" in r.stdout


def test_push_without_credentials_exits_2(tmp_path):
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", "--slug", "tester/astlab-digits-push",
                   "--install", "astlab==0.1.0", "--push", home=tmp_path, PATH=fake_client(tmp_path))
    assert r.returncode == 2 and "Kaggle credentials are missing" in r.stderr and "KAGGLE_USERNAME" in r.stderr
    assert not (tmp_path/"kaggle-args").exists(), "the client must not be called"
    assert (tmp_path/"k"/"kernel-metadata.json").is_file(), "the folder is still written, ready for a later push"


def test_push_without_client_exits_2(tmp_path):
    if shutil.which("kaggle") or (BIN/"kaggle").exists(): pytest.skip("the kaggle client is installed here")
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", "--slug", "tester/astlab-digits-push",
                   "--install", "astlab==0.1.0", "--push", home=tmp_path, PATH="/usr/bin:/bin",
                   KAGGLE_USERNAME="tester", KAGGLE_KEY=KAGGLE_KEY)
    assert r.returncode == 2 and "kaggle client is not installed" in r.stderr and "astlab[kaggle]" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--title", "AST on digits"], "slugifies to 'ast-on-digits'"),
    (["--slug", "tester/ast"], "at least 5 characters"),
    (["--slug", "astlab-digits-ast"], "must be OWNER/SLUG"),
    (["--install", "git+https://github.com/u/astlab"], "pin the git URL"),
    (["--install", "astlab==0.1.0", "--no-internet"], "needs the internet"),
    (["--install", "dist/astlab-0.1.0-py3-none-any.whl"], "under /kaggle/input/"),
    (["--dataset-sources", "wheel"], "dataset_sources entry 'wheel'"),
    (["--set", "training.lr=fast"], "training.lr"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, message):
    base = {"--slug": "tester/astlab-digits-ast", "--install": "astlab==0.1.0"}
    given = dict(zip(args[::2], args[1::2]))
    rest = [a for k, v in base.items() if k not in given for a in (k, v)]
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", *rest, *args, home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_missing_config_and_default_slug(tmp_path):
    r = kaggle_cli("--config", "configs/nope.yaml", "--out", tmp_path/"k", "--slug", "tester/astlab-nope", "--install", "x", home=tmp_path)
    assert r.returncode == 2 and "configs/nope.yaml" in r.stderr
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", "--install", "astlab==0.1.0", home=tmp_path)
    assert r.returncode == 2 and "--slug USER/NAME is needed" in r.stderr
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", "--install", "astlab==0.1.0", home=tmp_path,
                   KAGGLE_USERNAME="tester")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"k"/"kernel-metadata.json").read_text())["id"] == "tester/astlab-digits-ast"


# ------------------------------------------------------------------ issue 11: committed kernels, unusable origins

def git(*args, cwd):
    r = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_committed_kernel_folder_is_not_overwritten(tmp_path):
    "The README's example once overwrote the committed starter kernels: a folder git tracks is refused without --overwrite."
    repo = tmp_path/"repo"; shutil.copytree(ROOT/"kaggle"/"digits-ast", repo/"kaggle"/"digits-ast")
    git("init", "-q", cwd=repo); git("add", "-A", cwd=repo); git("commit", "-qm", "starters", cwd=repo)
    k = repo/"kaggle"/"digits-ast"
    before = {p.name: p.read_text() for p in k.iterdir()}
    args = ["--config", ROOT/"configs/digits_ast.yaml", "--out", k, "--slug", "tester/astlab-digits-mine", "--install", "astlab==0.1.0"]
    r = kaggle_cli(*args, home=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "committed in git" in r.stderr and "--overwrite" in r.stderr and "runs/kaggle/" in r.stderr
    assert {p.name: p.read_text() for p in k.iterdir()} == before, "nothing was touched"
    r = kaggle_cli(*args, "--overwrite", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((k/"kernel-metadata.json").read_text())["id"] == "tester/astlab-digits-mine"
    # an untracked folder (a scratch kernel written earlier) is simply rewritten
    r = kaggle_cli(*args[:3], repo/"scratch", *args[4:], home=tmp_path)
    assert r.returncode == 0 and kaggle_cli(*args[:3], repo/"scratch", *args[4:], home=tmp_path).returncode == 0


def test_readme_kaggle_example_writes_to_a_scratch_folder():
    "Every astlab-kaggle line in README.md writes to a git-ignored folder, never over the committed kaggle/ starters."
    lines = [l for l in (ROOT/"README.md").read_text().splitlines() if l.startswith("astlab-kaggle ")]
    assert lines
    for l in lines:
        out = l.split("--out ", 1)[1].split()[0]
        assert not out.startswith("kaggle/"), l
        r = subprocess.run(["git", "check-ignore", "-q", "--no-index", out + "/run.ipynb"], cwd=ROOT)
        assert r.returncode == 0, f"{out} is not git-ignored: {l}"


def test_local_path_origin_exits_2_with_the_alternatives(tmp_path):
    "A clone of a local folder has origin '/path': `git+/path@sha` is no pip spec, so say what to use instead."
    from astlab.integrations.kaggle import default_install, KaggleError
    up = tmp_path/"upstream"; up.mkdir(); (up/"f").write_text("x")
    git("init", "-q", cwd=up); git("add", "-A", cwd=up); git("commit", "-qm", "c", cwd=up)
    git("clone", "-q", str(up), str(tmp_path/"clone"), cwd=tmp_path)
    with pytest.raises(KaggleError) as e: default_install(tmp_path/"clone")
    msg = str(e.value)
    assert str(up) in msg and "/kaggle/input/astlab-wheel" in msg and "astlab==" in msg and "git+https://" in msg
    git("remote", "set-url", "origin", "git@github.com:someone/astlab.git", cwd=tmp_path/"clone")
    assert default_install(tmp_path/"clone").startswith("git+https://github.com/someone/astlab.git@")
    # the same spec given by hand: exit 2, one message, no traceback
    r = kaggle_cli("--config", "configs/digits_ast.yaml", "--out", tmp_path/"k", "--slug", "tester/astlab-digits-ast",
                   "--install", f"git+{up}@{git('rev-parse', 'HEAD', cwd=up)}", home=tmp_path)
    assert r.returncode == 2 and "cannot install from a local path" in r.stderr and "Traceback" not in r.stderr
    assert "--dataset-sources" in r.stderr and not (tmp_path/"k").exists()
