"""`logging.tensorboard: true`: astlab-run's scalars read back with TensorBoard's own reader agree with the results file."""
import builtins, json
from pathlib import Path

import pytest, torch

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from astlab.config import load_config
from astlab.lab.train import train

ARGS = ["dataset.num_samples=128", "dataset.image_size=16", "training.epochs=2", "training.batch_size=32",
        "model.name=resnet_tiny", "training.device=cpu", "training.progress=false", "metrics.base_flop_per_sample=1e6"]


def _rows(h):   # either history layout (list of rows, or the seed's dict of lists)
    return h if isinstance(h, list) else [dict(zip(h, v)) for v in zip(*h.values())]


def test_event_files_hold_epoch_step_and_controller_scalars(tmp_path):
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        res = train(load_config(overrides=ARGS + ["logging.tensorboard=true", "logging.tensorboard_every=3",
                                                  f"logging.output_dir={tmp_path}"], env_file=None), log=lambda *a: None)
    finally: torch.set_num_threads(threads)
    ea = EventAccumulator(str(tmp_path/"tensorboard"/res["run_name"])).Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"epoch/val_acc", "epoch/train_acc", "epoch/activation_rate", "epoch/threshold", "epoch/est_flops_g",
            "epoch/energy_savings", "step/loss", "step/rate", "step/threshold", "step/flops_g", "step/lr",
            "controller/threshold", "controller/rate"} <= tags
    rows = _rows(res["training_history"])
    for key in ("val_acc", "activation_rate", "threshold", "est_flops_g"):
        ev = ea.Scalars(f"epoch/{key}")
        assert [e.step for e in ev] == [1, 2]
        assert [e.value for e in ev] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert len(ea.Scalars("controller/threshold")) == len(ea.Scalars("controller/rate")) == 8    # every batch
    assert [e.step for e in ea.Scalars("step/loss")] == [0, 3, 6]                                  # every 3rd batch
    fl = [e.value for e in ea.Scalars("step/flops_g")]
    assert fl == sorted(fl) and fl[-1] <= res["totals"]["flops"] / 1e9 + 1e-9     # counted FLOPs grow to the total


def test_off_by_default_and_a_clear_error_without_the_extra(tmp_path, monkeypatch):
    res = train(load_config(overrides=ARGS + ["training.epochs=1", f"logging.output_dir={tmp_path}"], env_file=None),
                log=lambda *a: None)
    assert not (tmp_path/"tensorboard").exists()
    real = builtins.__import__
    def no_tb(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"): raise ImportError("No module named 'tensorboard'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tb)
    from astlab.lab.tensorboard import summary_writer
    with pytest.raises(ImportError, match=r"pip install 'astlab\[tensorboard\]'"): summary_writer(tmp_path)


def _read_wandb(path):
    "History rows of an offline W&B run file: LevelDB log records (after a 7-byte ':W&B' header) of protobuf Records."
    import struct
    from wandb.proto import wandb_internal_pb2 as pb
    b = Path(path).read_bytes(); assert b[:4] == b":W&B"
    pos, block, recs, buf = 7, 32768, [], b""
    while pos + 7 <= len(b):
        left = block - pos % block
        if left < 7: pos += left; continue
        _, n, typ = struct.unpack("<IHB", b[pos:pos + 7]); pos += 7
        if typ == 0 and n == 0: break
        buf += b[pos:pos + n]; pos += n
        if typ in (1, 4): recs.append(buf); buf = b""           # a FULL record, or the LAST piece of one
    rows = []
    for d in recs:
        r = pb.Record(); r.ParseFromString(d)
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def test_wandb_offline_gets_the_same_scalars(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true"); monkeypatch.delenv("WANDB_MODE", raising=False)
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        res = train(load_config(overrides=ARGS + ["logging.wandb=true", "logging.tensorboard_every=3",
                                                  f"logging.output_dir={tmp_path}"], env_file=None), log=lambda *a: None)
    finally: torch.set_num_threads(threads)
    (run,) = (tmp_path/"wandb").glob("wandb/offline-run-*/run-*.wandb")      # offline by default: nothing uploaded
    rows = _read_wandb(run)
    val = [(r["epoch"], r["epoch/val_acc"]) for r in rows if "epoch/val_acc" in r]
    assert val == [(i + 1, pytest.approx(r["val_acc"], rel=1e-6)) for i, r in enumerate(_rows(res["training_history"]))]
    assert len([r for r in rows if "controller/threshold" in r]) == 8 and any("step/flops_g" in r for r in rows)
