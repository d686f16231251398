"""astlab-push: the real huggingface_hub call path (create_repo + upload_folder) up to the HTTP boundary, where a mock
transport answers as the Hub would and records every byte that would leave the machine; no secret in any uploaded file;
a missing token or an unreachable Hub is a clear exit 2."""
import base64, json, os, subprocess, sys
from pathlib import Path

import pytest, torch

hub = pytest.importorskip("huggingface_hub")
import httpx2
from huggingface_hub import constants
from huggingface_hub.utils import _http

from astlab.config import load_config
from astlab.lab.train import train
from astlab.integrations.hub import PushError, push, push_cli, stage_run

SECRET, OTHER = "hf_TESTsecretTOKEN0123456789", "kaggleKEYsecret987654321"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch(); mp.setenv("KAGGLE_KEY", OTHER)
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        # the secret also sits in a config value (a path that embeds it): redaction must catch it everywhere
        train(load_config(overrides=["dataset.num_samples=64", "dataset.image_size=16", "training.epochs=1",
                                     "training.batch_size=32", "model.name=resnet_tiny", "training.device=cpu",
                                     "training.progress=false", f"logging.output_dir={out}",
                                     f"logging.jsonl_path={out}/{OTHER}.jsonl"], env_file=None), log=lambda *a: None)
    finally: torch.set_num_threads(threads); mp.undo()
    return out


class FakeHub:
    "Answers create_repo / preupload / commit as huggingface.co does; records the requests."
    def __init__(self, fail=None): self.requests, self.fail = [], fail
    def __call__(self, request):
        if self.fail: raise self.fail(request)
        body = request.read()
        self.requests.append((request.method, str(request.url), dict(request.headers), body))
        path = request.url.path
        if path == "/api/repos/create": return httpx2.Response(200, json={"url": "https://huggingface.co/me/ast-run"})
        if path == "/api/validate-yaml": return httpx2.Response(200, json={"errors": [], "warnings": []})
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return httpx2.Response(200, json={"files": [dict(path=f["path"], uploadMode="regular", shouldIgnore=False)
                                                        for f in files]})
        if "/commit/" in path:
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/me/ast-run/commit/abc123",
                                              "commitOid": "abc123" * 6 + "abcd", "pullRequestUrl": None})
        return httpx2.Response(404, json={"error": f"unexpected {request.method} {path}"})
    def uploaded(self):
        "Path -> bytes of every file in the commit payload."
        (_, _, _, body), = [r for r in self.requests if "/commit/" in r[1]]
        files = {}
        for line in body.decode().splitlines():
            op = json.loads(line)
            if op["key"] == "file": files[op["value"]["path"]] = base64.b64decode(op["value"]["content"])
        return files


@pytest.fixture
def fake_hub(monkeypatch):
    def install(fake):
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(fake)))
        return fake
    yield install
    _http.set_client_factory(_http.default_client_factory)


def test_push_uploads_the_run_and_no_secret(run_dir, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET); monkeypatch.setenv("KAGGLE_KEY", OTHER)
    fake = fake_hub(FakeHub())
    url = push(run_dir, "me/ast-run", env_file=None)
    assert url.endswith("/commit/abc123")
    methods = [(m, u.split("huggingface.co")[1].split("?")[0]) for m, u, _, _ in fake.requests]
    calls = [("POST", "/api/repos/create"), ("POST", "/api/models/me/ast-run/preupload/main"),
             ("POST", "/api/models/me/ast-run/commit/main")]
    assert [m for m in methods if m in calls] == calls                   # create, then preupload, then one commit
    assert all(h.get("authorization") == f"Bearer {SECRET}" for m, u, h, _ in fake.requests
               if (m, u.split("huggingface.co")[1].split("?")[0]) in calls)   # the token travels in headers only
    files = fake.uploaded()
    names = set(files)
    (res_name,) = [n for n in names if n.startswith("results/")]
    run = Path(res_name).stem
    assert {"README.md", f"results/{run}.json", f"configs/{run}.yaml", f"checkpoints/{run}/model.pt", f"plots/{run}.png"} <= names
    for name, data in files.items():
        assert SECRET.encode() not in data and OTHER.encode() not in data, name
    res = json.loads(files[f"results/{run}.json"])
    assert "results_path" not in res and res["config"]["logging"]["jsonl_path"].endswith("***.jsonl")
    assert f"| {run} | ast | 0.25 |" in files["README.md"].decode()
    import io
    ck = torch.load(io.BytesIO(files[f"checkpoints/{run}/model.pt"]), weights_only=True)
    assert set(ck) == {"model", "meta"} and ck["meta"]["num_classes"] == 10        # weights only: no optimiser, no paths


def test_token_from_dotenv(run_dir, fake_hub, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    (tmp_path/".env").write_text(f"HF_TOKEN={SECRET}\n")
    fake = fake_hub(FakeHub())
    push(run_dir, "me/ast-run", env_file=tmp_path/".env")
    (create,) = [r for r in fake.requests if r[1].endswith("/api/repos/create")]
    assert create[2]["authorization"] == f"Bearer {SECRET}"
    assert "HF_TOKEN" not in os.environ                                  # read, not exported


def test_missing_token_exits_2(run_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    (tmp_path/"astlab-push").write_text("from astlab.integrations.hub import push_cli\npush_cli()\n")   # what the console script runs
    r = subprocess.run([sys.executable, str(tmp_path/"astlab-push"), "--run", str(run_dir),
                        "--repo", "me/ast-run", "--env-file", str(tmp_path/"none.env")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "no Hugging Face token" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, str(tmp_path/"astlab-push"), "--run", str(run_dir)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 2 and "--repo" in r.stderr


def test_unreachable_or_offline_hub_exits_2(run_dir, fake_hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    fake_hub(FakeHub(fail=lambda req: httpx2.ConnectError("Name or service not known", request=req)))
    with pytest.raises(SystemExit) as e: push_cli(run=str(run_dir), repo="me/ast-run", env_file=None)
    assert e.value.code == 2 and "could not reach the Hugging Face Hub" in capsys.readouterr().err
    _http.set_client_factory(_http.default_client_factory)      # the real client, which refuses to go online
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="HF_HUB_OFFLINE"): push(run_dir, "me/ast-run", env_file=None)
    with pytest.raises(PushError, match="USER/NAME"): push(run_dir, "no-slash", env_file=None)


def test_refused_token_exits_2_with_a_hint(run_dir, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    class Refuse(FakeHub):
        def __call__(self, request): return httpx2.Response(401, json={"error": "Invalid credentials"})
    fake_hub(Refuse())
    with pytest.raises(PushError, match="HTTP 401.*write token"): push(run_dir, "me/ast-run", env_file=None)


def test_dry_run_lists_the_staged_files(run_dir, tmp_path, capsys):
    push_cli(run=str(run_dir), repo="me/ast-run", dry_run=str(tmp_path/"stage"))
    out = capsys.readouterr().out.split()
    assert "README.md" in out and (tmp_path/"stage"/"README.md").is_file()
