"""`astlab-imagenette` exports a parquet-backed Hugging Face dataset to an ImageFolder tree, and astlab trains on the tree.

No network: the source is a local stand-in laid out like the hub repo (`data/<split>-00000-of-00001.parquet`, an `image`
column and a `ClassLabel` `label`), with RGB JPEGs, a grayscale PNG and a landscape/portrait mix; HF_HUB_OFFLINE=1 and a
private HF_HOME, so nothing is downloaded or cached outside the test folder.
"""
import io
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

BIN = Path(sys.executable).parent
CLASSES = ["tench", "English springer", "cassette player"]
DIRS = ["English_springer", "cassette_player", "tench"]


def env(home):
    e = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    e.update(HF_HUB_OFFLINE="1", HF_HOME=str(home/"hf"), OMP_NUM_THREADS="1")
    return e


def cli(tmp, *args, script="astlab-imagenette"):
    return subprocess.run([str(BIN/script), *map(str, args)], cwd=tmp, env=env(tmp), capture_output=True, text=True,
                          timeout=180)


def encoded(i):
    "Image i as encoded bytes: mostly RGB JPEGs 320 px on the shorter side, every 5th a grayscale PNG, some portrait."
    rng = np.random.default_rng(i)
    w, h = (400 + 8*i, 320) if i % 3 else (320, 360)
    b = io.BytesIO()
    if i % 5 == 4: Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), 'L').save(b, format='PNG')
    else: Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(b, format='JPEG', quality=90)
    return b.getvalue()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub-shaped parquet dataset: 12 train and 6 validation images over 3 classes; returns (root, {split: [bytes]})."
    import datasets
    root = tmp_path_factory.mktemp("hub")
    feats = datasets.Features(image=datasets.Image(), label=datasets.ClassLabel(names=CLASSES))
    raw = {}
    for split, n, off in (("train", 12, 0), ("validation", 6, 100)):
        raw[split] = [encoded(off + i) for i in range(n)]
        ds = datasets.Dataset.from_dict(dict(image=[{"bytes": b, "path": None} for b in raw[split]],
                                             label=[i % 3 for i in range(n)]), features=feats)
        (root/"data").mkdir(exist_ok=True)
        ds.to_parquet(str(root/"data"/f"{split}-00000-of-00001.parquet"))
    return root, raw


def files(d):
    return sorted(p for p in Path(d).rglob("*") if p.is_file())


def test_export_160_resizes_shorter_side_and_trains(hub, tmp_path):
    root, raw = hub
    r = cli(tmp_path, "--out", tmp_path/"imagenette", "--size", "160", "--name", root)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["splits"] == {"train": dict(split="train", images=12, classes=3), "val": dict(split="validation", images=6, classes=3)}
    assert s["source"]["name"] == str(root) and s["source"]["revision"] is None and s["shorter_side"] == 160
    for split, n in (("train", 12), ("val", 6)):
        assert sorted(p.name for p in (tmp_path/"imagenette"/split).iterdir()) == DIRS
        fs = files(tmp_path/"imagenette"/split)
        assert len(fs) == n and all(f.suffix == ".jpg" for f in fs)
        for f in fs:
            with Image.open(f) as im: assert min(im.size) == 160 and im.mode == "RGB" and im.format == "JPEG"
    assert "train_dir" in r.stderr and "dataset: {type: folder" in r.stderr
    # running it again keeps what is there: same files, nothing duplicated
    before = {f: f.stat().st_mtime_ns for f in files(tmp_path/"imagenette")}
    r = cli(tmp_path, "--out", tmp_path/"imagenette", "--size", "160", "--name", root)
    assert r.returncode == 0 and {f: f.stat().st_mtime_ns for f in files(tmp_path/"imagenette")} == before
    # the tree trains with dataset.type: folder
    cfg = tmp_path/"cfg.yaml"
    cfg.write_text(f"model: {{name: resnet_tiny}}\ndataset: {{type: folder, train_dir: {s['dataset_config']['train_dir']}, "
                   f"val_dir: {s['dataset_config']['val_dir']}, image_size: 32}}\n"
                   "ast: {min_active: 2}\ntraining: {epochs: 1, batch_size: 4, device: cpu, progress: false}\n")
    r = cli(tmp_path, "--config", cfg, "--output-dir", tmp_path/"results", script="astlab-run")
    assert r.returncode == 0, r.stderr
    assert "12 train / 6 val, 3 classes" in r.stdout + r.stderr


def test_export_320_and_full_copy_the_original_bytes(hub, tmp_path):
    root, raw = hub
    for size in ("320", "full"):
        out = tmp_path/size
        r = cli(tmp_path, "--out", out, "--size", size, "--name", root, "--limit", "5")
        assert r.returncode == 0, r.stderr
        fs = files(out/"train")
        assert len(fs) == 5 and len(files(out/"val")) == 5
        assert sorted(f.read_bytes() for f in fs) == sorted(raw["train"][:5]), "images are written as published"
        assert {f.suffix for f in fs} == {".jpg", ".png"}


def test_save_to_disk_and_single_split_sources(hub, tmp_path):
    import datasets
    root, _ = hub
    dd = datasets.load_dataset(str(root), cache_dir=str(tmp_path/"cache"))
    dd.save_to_disk(str(tmp_path/"saved"))
    r = cli(tmp_path, "--out", tmp_path/"a", "--size", "320", "--name", tmp_path/"saved")
    assert r.returncode == 0, r.stderr
    assert len(files(tmp_path/"a"/"train")) == 12 and len(files(tmp_path/"a"/"val")) == 6
    dd["train"].rename_column("label", "y").save_to_disk(str(tmp_path/"one"))
    r = cli(tmp_path, "--out", tmp_path/"b", "--name", tmp_path/"one", "--label-column", "y")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert list(s["splits"]) == ["train"] and s["dataset_config"]["val_dir"] is None
    assert sorted(p.name for p in (tmp_path/"b"/"train").iterdir()) == DIRS


@pytest.mark.parametrize("args, message", [
    (["--label-column", "cls"], "column 'cls' is not in the dataset"),
    (["--name", "no/such/dir/here"], "could not load it"),
    (["--size", "640"], "invalid choice: '640'"),
])
def test_errors_exit_2_with_a_message(hub, tmp_path, args, message):
    root, _ = hub
    base = ["--out", tmp_path/"x", "--name", root]
    r = cli(tmp_path, *base, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_default_source_is_the_hub_and_fails_clearly_offline(tmp_path):
    r = cli(tmp_path, "--out", tmp_path/"x")
    assert r.returncode == 2
    assert "johnowhitaker/imagenette2-320" in r.stderr and "HF_HUB_OFFLINE" in r.stderr
    assert not (tmp_path/"x").exists()
