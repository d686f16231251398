"""`astlab.engine.meters`: FLOP counts, the model left untouched, energy (NVML faked, proxy fallback), timing, run book-keeping."""
import json
import sys
import time
import types

import pytest
import torch
from torch import nn

from astlab.engine.meters import EnergyMeter, RunMeter, Timer, count_flops, flops_per_sample
from astlab.engine.models import create_model


# ---- FLOPs ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_flops():
    return count_flops(create_model("resnet_small", 10), 32)


def test_fwd_bwd_is_about_three_forwards(small_flops):
    assert small_flops["fwd"] > 1e6
    assert 2.5 < small_flops["fwd_bwd"] / small_flops["fwd"] < 3.5


def test_flops_are_per_sample():
    m = create_model("resnet_tiny", 10)
    assert count_flops(m, 32, batch_size=2) == count_flops(m, 32, batch_size=4)


def test_linear_flops_exact():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert count_flops(lin, 2) == dict(fwd=120, fwd_bwd=240)  # x needs no grad: backward = weight grad only


@pytest.mark.parametrize("train", [True, False])
def test_count_flops_leaves_model_untouched(train):
    m = create_model("resnet_tiny", 10).train(train)
    m(torch.randn(4, 3, 32, 32)).sum().backward()  # existing grads and BN stats must survive
    state = {k: v.clone() for k, v in m.state_dict().items()}
    grads = [p.grad.clone() for p in m.parameters()]
    count_flops(m, 32)
    assert m.training is train
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, m.parameters()))


def test_flops_per_sample_sources(small_flops):
    m = create_model("resnet_small", 10)
    assert flops_per_sample(m, 32) == dict(small_flops, source="measured")
    assert flops_per_sample(m, 32, base_flop_per_sample=2e9) == dict(fwd=2e9, fwd_bwd=6e9, source="config")


# ---- energy --------------------------------------------------------------------------------------------------------

def test_energy_proxy_on_cpu():
    em = EnergyMeter("cpu", tdp_watts=200.0)
    assert em.source == "proxy_tdp" and em.read() == 0.0
    em.start()
    time.sleep(0.05)
    j = em.read()
    assert em.source == "proxy_tdp"
    assert 200 * 0.05 * 0.9 < j < 200 * 0.5
    assert j == pytest.approx(em.elapsed() * 200, rel=0.2)


def _fake_nvml(counter, fail=None):
    "A stand-in for the `pynvml` module; `counter` yields mJ readings; `fail` names a function that raises."
    def maybe_fail(name):
        if fail == name: raise RuntimeError(f"NVMLError: {name} not supported")
    nv = types.SimpleNamespace(calls=[])

    def init(): maybe_fail("init"); nv.calls.append("init")
    def by_index(i): maybe_fail("index"); nv.calls.append(("index", i)); return f"handle{i}"
    def energy(h):
        maybe_fail("energy")
        assert h.startswith("handle")
        return next(counter)
    nv.nvmlInit, nv.nvmlDeviceGetHandleByIndex, nv.nvmlDeviceGetTotalEnergyConsumption = init, by_index, energy
    return nv


def test_energy_nvml_arithmetic(monkeypatch):
    nv = _fake_nvml(iter([1_000, 50_000, 57_500, 80_000]))  # probe, start, read, read (mJ)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    em = EnergyMeter("cuda:0")
    assert em.source == "nvml" and ("index", 0) in nv.calls
    em.start()
    assert em.read() == pytest.approx(7.5)    # (57_500 - 50_000) mJ
    assert em.read() == pytest.approx(30.0)   # still since start
    assert em.source == "nvml"


@pytest.mark.parametrize("fail", ["init", "index", "energy"])
def test_energy_falls_back_when_nvml_fails(monkeypatch, fail):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(iter(range(0, 10**6, 1000)), fail=fail))
    em = EnergyMeter("cuda:0", tdp_watts=100.0).start()
    assert em.source == "proxy_tdp"
    assert em.read() >= 0.0


def test_energy_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert EnergyMeter("cuda").source == "proxy_tdp"
    assert EnergyMeter("cuda:5", tdp_watts=1.0).start().read() >= 0.0


def test_energy_counter_lost_mid_run(monkeypatch):
    def counter():
        yield 0; yield 10_000
        raise RuntimeError("GPU is lost")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(counter()))
    em = EnergyMeter("cuda:0", tdp_watts=100.0)
    assert em.source == "nvml"
    em.start()
    j = em.read()  # the counter raises: proxy for the whole interval
    assert em.source == "proxy_tdp" and j == pytest.approx(em.elapsed() * 100, abs=1.0)


# ---- timing --------------------------------------------------------------------------------------------------------

def test_timer_laps():
    t = Timer("cpu")
    for _ in range(3):
        t.start(); time.sleep(0.01); dt = t.stop()
        assert 0.009 < dt < 0.2
    with t:
        time.sleep(0.005)
    assert len(t) == 4 and len(t.laps) == 4 and t.total == pytest.approx(sum(t.laps))
    assert len(t.reset()) == 0
    with pytest.raises(RuntimeError, match="without start"):
        t.stop()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_timer_cuda_events():
    t = Timer("cuda")
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(3):
        t.start(); x @ x; assert t.stop() is None
    assert len(t.laps) == 3 and all(s > 0 for s in t.laps)
    s = Timer("cuda", sync=True)
    s.start(); x @ x
    assert s.stop() > 0


# ---- run book-keeping ----------------------------------------------------------------------------------------------

F = dict(fwd=2e6, fwd_bwd=6e6)


def test_run_meter_numbers():
    rm = RunMeter(F)
    rm.start_epoch()
    for _ in range(4):
        rm.add_batch(100, 100, 25, 0.02)
    row = rm.end_epoch(epoch=0, val_acc=0.5)
    spent = 4 * (100 * 2e6 + 25 * 6e6)
    assert row["energy_savings"] == pytest.approx(1 - spent / (400 * 6e6))
    assert row["activation_rate"] == 0.25 and row["step_time_ms"] == pytest.approx(20.0)
    assert row["est_flops_g"] == pytest.approx(spent / 1e9) and row["est_energy_kj"] is None
    assert (row["epoch"], row["val_acc"], row["samples_trained"]) == (0, 0.5, 100)
    rm.start_epoch()
    rm.add(seen=400, scored=0, trained=400)  # full data, no score pass, steps not timed
    row2 = rm.end_epoch()
    assert row2["energy_savings"] == 0.0 and row2["step_time_ms"] is None
    assert row2["est_flops_g"] == pytest.approx((spent + 400 * 6e6) / 1e9)  # cumulative
    tot = rm.totals()
    assert tot["samples_seen"] == 800 and tot["activation_rate"] == pytest.approx(500 / 800)
    assert tot["flops_source"] == "measured" and tot["energy_source"] is None
    assert rm.history == [row, row2]


def test_run_meter_bulk_equals_per_batch():
    a, b = RunMeter(F), RunMeter(F)
    for _ in range(5):
        a.add_batch(64, 64, 16, 0.01)
    b.add(seen=320, scored=320, trained=80, step_times=[0.01] * 5)
    assert a.end_epoch() == pytest.approx(b.end_epoch())


def test_run_meter_empty_epoch():
    row = RunMeter(F).end_epoch()
    assert row["energy_savings"] is None and row["activation_rate"] is None and row["step_time_ms"] is None


def test_run_meter_energy_is_cumulative():
    rm = RunMeter(dict(F, source="config"), EnergyMeter("cpu", tdp_watts=1000.0))
    rows = []
    for _ in range(2):
        rm.start_epoch(); time.sleep(0.02); rm.add_batch(10, 10, 5)
        rows.append(rm.end_epoch())
    assert 0 < rows[0]["est_energy_kj"] < rows[1]["est_energy_kj"]
    assert rows[1]["est_energy_kj"] == pytest.approx(rows[0]["epoch_energy_kj"] + rows[1]["epoch_energy_kj"])
    assert rm.totals()["energy_source"] == "proxy_tdp" and rm.totals()["flops_source"] == "config"


def test_run_meter_resume_mid_epoch():
    def run(meter, batches):
        for t in batches:
            meter.add_batch(32, 32, t, 0.01)

    straight = RunMeter(F, EnergyMeter("cpu"))
    straight.start_epoch(); run(straight, [8, 9]); straight.end_epoch(epoch=0)
    straight.start_epoch(); run(straight, [10, 11, 12]); straight.end_epoch(epoch=1)

    first = RunMeter(F, EnergyMeter("cpu"))
    first.start_epoch(); run(first, [8, 9]); first.end_epoch(epoch=0)
    first.start_epoch(); run(first, [10])
    sd = json.loads(json.dumps(first.state_dict()))  # plain python, survives JSON
    resumed = RunMeter(dict(fwd=1, fwd_bwd=3), EnergyMeter("cpu")).load_state_dict(sd)
    run(resumed, [11, 12]); resumed.end_epoch(epoch=1)

    wall = {"est_energy_kj", "epoch_energy_kj"}
    strip = lambda h: [{k: v for k, v in r.items() if k not in wall} for r in h]
    assert strip(resumed.history) == strip(straight.history)
    assert resumed.history[-1]["est_energy_kj"] >= sd["energy_j"] / 1e3
    assert resumed.totals()["samples_trained"] == straight.totals()["samples_trained"] == 50
