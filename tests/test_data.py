"""Data: digits / synthetic / folder / hf sources, (x, y, idx) items, loaders, unreadable images, error messages."""
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports datasets: never touch the network

import numpy as np
import pytest
import torch
from PIL import Image

from astlab.config import config_from_dict
from astlab.engine.data import (BadImageWarning, DataBundle, DataError, IndexedDataset, collate_indexed, describe,
                         get_dataloaders, get_datasets, stratified_pick)


def cfg_of(training=None, **dataset):
    return config_from_dict({"dataset": dataset, "training": training or {}})


def write_folder(root, classes=("cat", "dog", "fox"), n=6, size=40, seed=0):
    "An ImageFolder of `n` random-colour PNGs per class; returns `root`."
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{c}{j}.png")
    return root


def epoch(dl):
    "All (x, y, idx) batches of one pass, concatenated."
    xs, ys, ids = zip(*list(dl))
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)


def check_item(item, size, num_classes, n):
    x, y, i = item
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (3, size, size)
    assert isinstance(y, int) and 0 <= y < num_classes
    assert isinstance(i, int) and 0 <= i < n


# ---------------------------------------------------------------- digits / synthetic

def test_digits_shapes_labels_and_fixed_split():
    b = get_datasets(cfg_of(type="digits", image_size=24))
    assert isinstance(b, DataBundle)
    assert (len(b.train_ds), len(b.val_ds), b.num_classes, b.image_size, b.name) == (1438, 359, 10, 24, "digits")
    assert b.classes == [str(i) for i in range(10)]
    assert b.bad_images == 0 and b.bad_files == []
    for j in (0, 17, 1437):
        check_item(b.train_ds[j], 24, 10, len(b.train_ds))
        assert b.train_ds[j][2] == j
    x = torch.stack([b.val_ds[j][0] for j in range(len(b.val_ds))])
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1  # 0..16 -> 0..1 -> normalised with mean=std=0.5
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey repeated to 3 channels
    yv = np.array([b.val_ds[j][1] for j in range(len(b.val_ds))])
    assert set(np.bincount(yv, minlength=10)) <= {35, 36, 37}  # stratified: ~20 % of each class
    # the split does not depend on the training seed: every method and seed sees the same validation set
    b2 = get_datasets(cfg_of(type="digits", image_size=24, training={"seed": 123}))
    assert all(torch.equal(b.val_ds[j][0], b2.val_ds[j][0]) for j in range(0, 359, 7))


def test_digits_num_samples_and_val_fraction():
    b = get_datasets(cfg_of(type="digits", num_samples=150, val_fraction=0.1, image_size=8))
    assert (len(b.train_ds), len(b.val_ds)) == (150, 15)
    labels = [b.train_ds[j][1] for j in range(150)]
    assert set(labels) == set(range(10))  # stratified subsample keeps every class
    check_item(b.train_ds[149], 8, 10, 150)


def test_digits_num_classes_mismatch():
    with pytest.raises(DataError, match=r"dataset.num_classes=3 but the data has 10 classes"):
        get_datasets(cfg_of(type="digits", num_classes=3))


def test_synthetic():
    b = get_datasets(cfg_of(type="synthetic", image_size=16))
    assert (len(b.train_ds), len(b.val_ds), b.num_classes, b.name) == (1024, 205, 10, "synthetic")
    check_item(b.train_ds[1023], 16, 10, 1024)
    b = get_datasets(cfg_of(type="synthetic", num_samples=50, num_classes=3, image_size=8))
    assert (len(b.train_ds), len(b.val_ds), b.num_classes, b.classes) == (50, 10, 3, ["0", "1", "2"])
    again = get_datasets(cfg_of(type="synthetic", num_samples=50, num_classes=3, image_size=8))
    assert torch.equal(b.train_ds[7][0], again.train_ds[7][0]) and b.train_ds[7][1] == again.train_ds[7][1]


def test_stratified_pick_is_deterministic_and_proportional():
    labels = np.repeat([0, 1, 2, 3], [40, 30, 20, 10])
    a = stratified_pick(labels, 10)
    assert np.array_equal(a, stratified_pick(labels, 10)) and np.all(np.diff(a) > 0)
    assert np.bincount(labels[a]).tolist() == [4, 3, 2, 1]
    assert len(stratified_pick(labels, 0)) == 0 and len(stratified_pick(labels, 100)) == 100


# ---------------------------------------------------------------- items, collation, loaders

def test_indexed_dataset_and_collate():
    ds = IndexedDataset([(torch.zeros(3, 2, 2), torch.tensor(4)), None, (torch.ones(3, 2, 2), 1)])
    assert ds[0][1:] == (4, 0) and ds[1] is None and ds[2][2] == 2
    x, y, idx = collate_indexed([ds[0], ds[1], ds[2]])
    assert x.shape == (2, 3, 2, 2) and y.tolist() == [4, 1] and idx.tolist() == [0, 2]
    assert y.dtype == idx.dtype == torch.long
    assert collate_indexed([None]) is None


def test_dataloaders_contract():
    cfg = cfg_of(type="digits", num_samples=300, image_size=16, training={"batch_size": 64, "seed": 5})
    train_dl, val_dl, b = get_dataloaders(cfg)
    assert train_dl.drop_last and not val_dl.drop_last
    assert train_dl.batch_size == val_dl.batch_size == 64
    assert train_dl.num_workers == 0 and not train_dl.pin_memory and not train_dl.persistent_workers
    x, y, idx = epoch(train_dl)
    assert x.shape == (256, 3, 16, 16) and y.dtype == idx.dtype == torch.long
    assert len(set(idx.tolist())) == 256 and idx.max() < 300  # shuffled, each sample at most once
    assert not torch.equal(idx, torch.arange(256))
    assert torch.equal(epoch(val_dl)[2], torch.arange(60))  # validation in order, complete
    # same seed => same batches; another seed => other batches; the bundle can be reused
    assert torch.equal(epoch(get_dataloaders(cfg, b)[0])[2], idx)
    other = cfg_of(type="digits", num_samples=300, image_size=16, training={"batch_size": 64, "seed": 6})
    assert not torch.equal(epoch(get_dataloaders(other, b)[0])[2], idx)


def test_dataloaders_small_train_set_and_device_flags():
    cfg = cfg_of(type="synthetic", num_samples=20, image_size=8, training={"batch_size": 64, "num_workers": 2})
    train_dl, val_dl, _ = get_dataloaders(cfg, device="cuda")
    assert not train_dl.drop_last  # one partial batch is all there is
    assert train_dl.pin_memory and train_dl.persistent_workers and train_dl.num_workers == 2
    assert get_dataloaders(cfg, device=torch.device("cpu"))[0].pin_memory is False


def test_unknown_type():
    cfg = cfg_of()
    cfg.dataset.type = "mnist"
    with pytest.raises(DataError, match=r"dataset.type: unknown type 'mnist' — choose one of: digits, synthetic, folder, hf"):
        get_datasets(cfg)


# ---------------------------------------------------------------- folder

def test_folder_loads_with_idx_and_classes(tmp_path):
    root = write_folder(tmp_path / "pets" / "train")
    b = get_datasets(cfg_of(type="folder", train_dir=str(root), image_size=32))
    assert b.classes == ["cat", "dog", "fox"] and b.num_classes == 3 and b.name == "pets"
    assert (len(b.train_ds), len(b.val_ds)) == (14, 4)  # round(18 * 0.2) held out, fixed seed
    for ds in (b.train_ds, b.val_ds):
        for j in range(len(ds)):
            check_item(ds[j], 32, 3, len(ds))
            assert ds[j][2] == j
    train_dl, val_dl, _ = get_dataloaders(cfg_of(type="folder", train_dir=str(root), image_size=32,
                                                training={"batch_size": 4}), b)
    x, y, idx = epoch(train_dl)
    assert x.shape == (12, 3, 32, 32)  # 14 samples, batches of 4, last partial one dropped
    assert len(set(idx.tolist())) == 12 and idx.max() < 14
    assert set(epoch(val_dl)[1].tolist()) <= {0, 1, 2}
    assert "pets: 14 train / 4 val, 3 classes (cat, dog, fox), 32x32 px" == describe(b)


def test_folder_with_val_dir_large_images_and_subsample(tmp_path):
    train = write_folder(tmp_path / "train", n=5, size=70)
    val = write_folder(tmp_path / "val", classes=("dog", "fox"), n=2, size=70, seed=1)  # no 'cat': labels by name
    b = get_datasets(cfg_of(type="folder", train_dir=str(train), val_dir=str(val), image_size=64))
    assert (len(b.train_ds), len(b.val_ds), b.classes) == (15, 4, ["cat", "dog", "fox"])
    assert sorted(b.val_ds[j][1] for j in range(4)) == [1, 1, 2, 2]
    check_item(b.train_ds[0], 64, 3, 15)
    check_item(b.val_ds[3], 64, 3, 4)
    b = get_datasets(cfg_of(type="folder", train_dir=str(train), val_dir=str(val), image_size=16, num_samples=6))
    assert (len(b.train_ds), len(b.val_ds)) == (6, 1)


def test_folder_errors_name_key_and_path(tmp_path):
    def err(**kw):
        with pytest.raises(DataError) as e:
            get_datasets(cfg_of(type="folder", **kw))
        return str(e.value)

    missing = tmp_path / "nope" / "train"
    assert f"dataset.train_dir: {missing} does not exist" in err(train_dir=str(missing))
    (tmp_path / "empty").mkdir()
    m = err(train_dir=str(tmp_path / "empty"))
    assert "dataset.train_dir" in m and str(tmp_path / "empty") in m and "empty" in m
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "a" / "readme.txt").write_text("hi")
    assert "no image files" in err(train_dir=str(tmp_path / "noimg"))
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (4, 4)).save(loose / "x.png")
    assert "no class sub-folders" in err(train_dir=str(loose))
    root = write_folder(tmp_path / "train", n=2, size=8)
    assert (f"dataset.num_classes=10 but the data has 3 classes in {root} — fix dataset.num_classes or leave it "
            "null to infer") in err(train_dir=str(root), num_classes=10)
    (root / "emu").mkdir()
    assert "'emu'" in err(train_dir=str(root))
    (root / "emu").rmdir()
    val = write_folder(tmp_path / "val", classes=("cat", "owl"), n=1, size=8)
    m = err(train_dir=str(root), val_dir=str(val))
    assert "dataset.val_dir" in m and "'owl'" in m
    assert f"dataset.val_dir: {tmp_path / 'v2'} does not exist" in err(train_dir=str(root), val_dir=str(tmp_path / "v2"))


# ---------------------------------------------------------------- unreadable images

@pytest.fixture
def corrupt_folder(tmp_path):
    root = write_folder(tmp_path / "train", n=6, size=40)
    good = (root / "dog" / "dog0.png").read_bytes()
    (root / "dog" / "dog_truncated.png").write_bytes(good[: len(good) // 2])
    (root / "fox" / "fox_garbage.png").write_bytes(os.urandom(300))
    return root


def _bad_cfg(root, on_bad_image, workers=0):
    return cfg_of(type="folder", train_dir=str(root), val_fraction=0.25, image_size=16, on_bad_image=on_bad_image,
                  training={"batch_size": 4, "num_workers": workers})


def test_corrupt_images_skipped_and_counted(corrupt_folder):
    train_dl, val_dl, b = get_dataloaders(_bad_cfg(corrupt_folder, "skip"))
    with pytest.warns(BadImageWarning) as rec:
        ids = [epoch(dl)[2] for dl in (train_dl, val_dl)]
    assert b.bad_images == 2
    assert sorted(os.path.basename(f) for f in b.bad_files) == ["dog_truncated.png", "fox_garbage.png"]
    named = " ".join(str(w.message) for w in rec)
    assert "dog_truncated.png" in named and "fox_garbage.png" in named
    # the good samples keep their indices: which items were bad is known, the rest all arrive
    n_train, n_val = len(b.train_ds), len(b.val_ds)
    bad_val = [j for j in range(n_val) if b.val_ds[j] is None]
    assert sorted(ids[1].tolist()) == [j for j in range(n_val) if j not in bad_val]
    assert len(set(ids[0].tolist())) == len(ids[0]) and ids[0].max() < n_train
    # another epoch: same files, still counted once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        epoch(train_dl)
    assert b.bad_images == 2 and "2 unreadable image(s) skipped" in describe(b)


def test_corrupt_images_counted_across_worker_processes(corrupt_folder):
    train_dl, val_dl, b = get_dataloaders(_bad_cfg(corrupt_folder, "skip", workers=2))
    epoch(train_dl), epoch(val_dl), epoch(train_dl)  # persistent workers, two epochs
    assert b.bad_images == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_error_names_file(corrupt_folder, workers):
    train_dl, val_dl, b = get_dataloaders(_bad_cfg(corrupt_folder, "error", workers))
    for _ in range(2):  # workers are stopped on the error; the loaders still work afterwards
        with pytest.raises(DataError, match=r"(dog_truncated|fox_garbage)\.png"):
            for dl in (train_dl, val_dl):
                epoch(dl)


# ---------------------------------------------------------------- Hugging Face

@pytest.fixture
def hf(monkeypatch, tmp_path):
    "The `datasets` module, offline, caching under tmp_path."
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    datasets.disable_progress_bars()
    return datasets


def _hf_ds(datasets, n, names=("ant", "bee", "cat"), seed=0, size=24):
    rng = np.random.default_rng(seed)
    imgs = [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(names))})
    return datasets.Dataset.from_dict({"image": imgs, "label": [j % len(names) for j in range(n)]}, features=feats)


def test_hf_dataset_saved_to_disk_is_split(hf, tmp_path):
    _hf_ds(hf, 20).save_to_disk(str(tmp_path / "bugs"))
    b = get_datasets(cfg_of(type="hf", name=str(tmp_path / "bugs"), image_size=16))
    assert (len(b.train_ds), len(b.val_ds), b.classes, b.num_classes, b.name) == (16, 4, ["ant", "bee", "cat"], 3, "bugs")
    for ds in (b.train_ds, b.val_ds):
        for j in range(len(ds)):
            check_item(ds[j], 16, 3, len(ds))
    train_dl, val_dl, _ = get_dataloaders(cfg_of(type="hf", name=str(tmp_path / "bugs"), image_size=16,
                                                training={"batch_size": 8}), b)
    x, y, idx = epoch(train_dl)
    assert x.shape == (16, 3, 16, 16) and sorted(idx.tolist()) == list(range(16))


def test_hf_dataset_dict_splits(hf, tmp_path):
    hf.DatasetDict(train=_hf_ds(hf, 9), validation=_hf_ds(hf, 3, seed=1)).save_to_disk(str(tmp_path / "dd"))
    b = get_datasets(cfg_of(type="hf", name=str(tmp_path / "dd"), image_size=8))
    assert (len(b.train_ds), len(b.val_ds)) == (9, 3)
    assert [b.val_ds[j][1:] for j in range(3)] == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(DataError, match=r"dataset.split_train: split 'training' is not in .*splits: train, validation"):
        get_datasets(cfg_of(type="hf", name=str(tmp_path / "dd"), split_train="training"))
    with pytest.raises(DataError, match=r"dataset.num_classes=5 but the data has 3 classes"):
        get_datasets(cfg_of(type="hf", name=str(tmp_path / "dd"), num_classes=5))


def test_hf_wrong_column_lists_columns(hf, tmp_path):
    _hf_ds(hf, 6).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"dataset.image_column: column 'img' .* columns present: image, label"):
        get_datasets(cfg_of(type="hf", name=str(tmp_path / "d"), image_column="img"))
    with pytest.raises(DataError, match=r"dataset.label_column: column 'labels' .* columns present: image, label"):
        get_datasets(cfg_of(type="hf", name=str(tmp_path / "d"), label_column="labels"))


def test_hf_string_labels_and_bad_image(hf, tmp_path):
    rng = np.random.default_rng(0)
    good = [Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)) for _ in range(7)]
    ds = hf.Dataset.from_dict({"pic": good, "kind": ["b", "a"] * 3 + ["a"]})
    rows = ds.cast_column("pic", hf.Image(decode=False)).to_dict()
    rows["pic"][3] = {"bytes": b"definitely not an image", "path": None}
    hf.Dataset.from_dict(rows).cast_column("pic", hf.Image()).save_to_disk(str(tmp_path / "s"))
    cfg = cfg_of(type="hf", name=str(tmp_path / "s"), image_column="pic", label_column="kind", image_size=8,
                 val_fraction=0.3, training={"batch_size": 2})
    train_dl, val_dl, b = get_dataloaders(cfg)
    assert b.classes == ["a", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        for dl in (train_dl, val_dl):
            list(dl)
    assert b.bad_images == 1 and "row" in b.bad_files[0]


def test_hf_local_imagefolder(hf, tmp_path):
    root = write_folder(tmp_path / "imgs", classes=("x", "y"), n=5, size=12)
    b = get_datasets(cfg_of(type="hf", name=str(root), image_size=8))
    assert b.classes == ["x", "y"] and (len(b.train_ds), len(b.val_ds)) == (8, 2)
    check_item(b.train_ds[7], 8, 2, 8)


def test_hf_missing_path_and_offline_hub(hf, tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"dataset.name: .*nothing-here does not exist"):
        get_datasets(cfg_of(type="hf", name=str(tmp_path / "nothing-here")))
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETsecretSECRET")
    with pytest.raises(DataError) as e:
        get_datasets(cfg_of(type="hf", name="someone/not-a-dataset", config="160px"))
    msg = str(e.value)
    assert "dataset.name" in msg and "someone/not-a-dataset" in msg and "hf_SECRETsecretSECRET" not in msg


# ---------------------------------------------------------------- dataset.redundancy and dataset.folds

def test_redundancy_copies_are_shifted_share_labels_and_inherit_noise():
    from astlab.engine.data import copy_shifts, shift_image
    K = 3
    src = get_datasets(cfg_of(type="digits", image_size=8, num_samples=200, label_noise=0.2))
    b = get_datasets(cfg_of(type="digits", image_size=8, num_samples=200, label_noise=0.2, redundancy=K))
    N = len(src.train_ds)
    assert (len(b.train_ds), len(b.val_ds)) == (K * N, len(src.val_ds))              # validation unchanged
    items = [b.train_ds[j] for j in range(K * N)]
    assert [i for _, _, i in items] == list(range(K * N))                            # unique, dense: c*N + i
    for c in range(K):
        for i in (0, 7, N - 1):
            x, y, _ = items[c * N + i]
            x0, y0, _ = src.train_ds[i]
            assert y == y0                                                           # the (noisy) label of its image
            assert torch.equal(x, shift_image(x0, *copy_shifts(K)[c]))               # the image, moved by its shift
            assert c == 0 or not torch.equal(x, x0)
    assert b.train_ds.flipped.sum() == K * src.train_ds.flipped.sum()                 # flips drawn on the N images
    assert np.array_equal(b.train_ds.flipped, np.tile(src.train_ds.flipped, K))
    x, y, idx = epoch(get_dataloaders(cfg_of(type="digits", image_size=8, num_samples=200, redundancy=K,
                                             training={"batch_size": 1000}))[0])     # through the sampler's keys
    assert sorted(idx.tolist()) == list(range(K * N))


def test_redundancy_on_photos_shifts_after_the_transform(tmp_path):
    root = write_folder(tmp_path / "pets", n=5)
    b = get_datasets(cfg_of(type="folder", train_dir=str(root), image_size=16, val_fraction=0.2, redundancy=2))
    N = len(b.train_ds) // 2
    assert N == 12 and len(b.val_ds) == 3
    assert b.train_ds[N + 4][1:] == (b.train_ds[4][1], N + 4)
    x0, x1 = b.train_ds[(4, 11)][0], b.train_ds[(N + 4, 11)][0]                    # same augmentation seed: same crop
    assert torch.equal(x1[:, :-1], x0[:, 1:]) and torch.equal(x1[:, -1], x0[:, -1])  # copy 1: up 1 px, last row repeated
    assert not torch.equal(x1, x0)


def folds_cfg(**kw):
    return cfg_of(type="digits", image_size=8, **kw)


def test_folds_partition_the_training_set_stratified_and_seed_independent():
    pool = get_datasets(folds_cfg()).train_ds
    y = np.array([int(v) for v in pool.ds.y])
    K, seen = 5, []
    for i in range(K):
        b = get_datasets(folds_cfg(folds=K, fold=i))
        tr, va = b.train_ds.indices, b.val_ds.indices
        assert np.intersect1d(tr, va).size == 0 and len(tr) + len(va) == len(pool)   # disjoint, union = the pool
        assert len(b.train_ds) == len(tr) and len(b.val_ds) == len(va)
        assert abs(len(va) - len(pool) / K) < 1                                        # equal sizes, and each
        assert (abs(np.bincount(y[va], minlength=10) - np.bincount(y, minlength=10) / K) < 1).all()   # class's share
        assert [b.val_ds[j][2] for j in range(3)] == [0, 1, 2] and b.train_ds[5][2] == 5   # dense indices
        assert b.val_ds[3][1] == y[va[3]] and torch.equal(b.val_ds[3][0], pool[int(va[3])][0])
        seen += va.tolist()
        other = get_datasets(folds_cfg(folds=K, fold=i, training={"seed": 7}))         # another run seed, same fold
        assert np.array_equal(other.val_ds.indices, va)
    assert sorted(seen) == list(range(len(pool)))                                     # every image validated once


def test_folds_with_noise_and_copies_never_train_a_validation_image():
    b = get_datasets(folds_cfg(folds=4, fold=3, label_noise=0.3, redundancy=3))
    sub = b.train_ds.ds.ds                                                            # copies -> noise -> training folds
    va = b.val_ds.indices
    trained_images = sub.indices[[b.train_ds.source(j) for j in range(len(b.train_ds))]]
    assert np.intersect1d(trained_images, va).size == 0
    assert len(b.train_ds) == 3 * len(sub)
    pool = get_datasets(folds_cfg()).train_ds
    assert [b.val_ds[j][1] for j in range(len(b.val_ds))] == [pool[int(i)][1] for i in va]   # clean validation labels
    assert b.train_ds.flipped.sum() == 3 * round(0.3 * len(sub))


def test_folds_validate_with_the_validation_transform(tmp_path):
    from astlab.engine.data import _rgb, val_transform
    root = write_folder(tmp_path / "pets", n=6)
    b = get_datasets(cfg_of(type="folder", train_dir=str(root), image_size=16, val_fraction=0.17, folds=3, fold=2,
                            redundancy=2))
    files = b.train_eval_ds.ds.paths
    assert len(b.val_ds) == 5 and len(b.train_ds) == 2 * 10                         # 15 images of 18 (3 held out)
    for j in range(len(b.val_ds)):
        x, y, i = b.val_ds[(j, 123)]                                                 # an augmentation seed changes nothing
        assert i == j and torch.equal(x, val_transform(16)(_rgb(files[b.val_ds.indices[j]])))
    assert b.val_ds.ds is b.train_eval_ds                                            # not the augmenting training set
    val_files = {files[i] for i in b.val_ds.indices}
    pool_files = b.train_ds.ds.ds.ds.paths                                           # copies -> folds -> pool -> files
    assert b.train_ds.ds.ds.ds.transform is not b.train_eval_ds.ds.transform
    trained_files = {pool_files[b.train_ds.ds.indices[b.train_ds.source(j)]] for j in range(len(b.train_ds))}
    assert not val_files & trained_files and len(val_files | trained_files) == 15
    assert "validation is fold 2 of 3 of the training set" in describe(b) and "10 training images x 2" in describe(b)


@pytest.mark.parametrize("kind", ["synthetic", "hf"])
def test_folds_and_redundancy_on_other_sources(kind, request, tmp_path):
    if kind == "hf":
        hf = request.getfixturevalue("hf")
        _hf_ds(hf, 30).save_to_disk(str(tmp_path / "bugs"))
        src = dict(type="hf", name=str(tmp_path / "bugs"), image_size=8)
    else: src = dict(type="synthetic", num_samples=30, num_classes=3, image_size=8)
    b = get_datasets(cfg_of(**src, folds=3, fold=1, redundancy=2))
    assert (len(b.train_ds), len(b.val_ds)) == ((2 * 16, 8) if kind == "hf" else (2 * 20, 10))
    for ds in (b.train_ds, b.val_ds):
        assert [ds[j][2] for j in range(len(ds))] == list(range(len(ds)))
    if kind == "hf": assert torch.equal(b.val_ds[0][0], b.val_ds[0][0])              # validation transform: no randomness


def test_fold_errors_name_the_key():
    with pytest.raises(DataError, match=r"dataset.folds=5 needs at least 5 training images"):
        get_datasets(folds_cfg(num_samples=4, folds=5))
    from astlab.config import ConfigError
    with pytest.raises(ConfigError, match=r"dataset.fold=1 .*dataset.folds=None"):
        folds_cfg(fold=1)
    with pytest.raises(ConfigError, match=r"dataset.fold=5 .*0..dataset.folds-1"):
        folds_cfg(folds=5, fold=5)


@pytest.mark.parametrize("extra", [["dataset.redundancy=2", "dataset.label_noise=0.2"], ["dataset.folds=5", "dataset.fold=1"]])
def test_one_epoch_train_with_folds_or_redundancy(tmp_path, extra):
    from astlab.config import load_config
    from astlab.lab.train import train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = load_config(None, ["model.name=resnet_tiny", "dataset.image_size=8", "dataset.num_samples=300",
                                 "training.epochs=1", "training.batch_size=64", "training.device=cpu",
                                 "training.progress=false", "ast.method=random", "ast.target_activation=0.5",
                                 f"logging.output_dir={tmp_path}", *extra], env_file=None)
        res = train(cfg, progress=False, log=lambda *a: None)
    finally: torch.set_num_threads(threads)
    assert res["complete"]
    d = res["config"]["dataset"]
    if d["redundancy"] == 2:
        assert res["totals"]["samples_seen"] == 9 * 64                                # 600 items: 9 full batches
        assert "300 training images x 2" in res["data"]
        assert res["label_noise"]["flipped"] == 2 * 60                                 # 60 images flipped, twice
    else:
        assert (d["folds"], d["fold"]) == (5, 1)
        assert "240 train / 60 val" in res["data"] and "fold 1 of 5" in res["data"]
        assert res["totals"]["samples_seen"] == 3 * 64
