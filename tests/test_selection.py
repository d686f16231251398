"""Selectors: rates vs target, the min_active floor, mask contract, exact resume, errors."""
import io

import pytest
import torch

from astlab.core.selection import (SELECTORS, ASTSelector, FullSelector, RandomSelector, SBSelector, SelectionState,
                              Selector, TopKSelector, enforce_min_active, make_selector)

METHODS = list(SELECTORS)


def _stream(sel, n_batches=400, n=64, seed=0, scale=1.0):
    "Run `sel` on exponential scores; return raw rates, selected counts and masks."
    g = torch.Generator().manual_seed(seed)
    rates, counts, masks = [], [], []
    for i in range(n_batches):
        s = torch.empty(n).exponential_(generator=g) * scale
        m = sel(s, SelectionState(n=n, step=i, generator=g))
        rates.append(sel.last_rate)
        counts.append(int(m.sum()))
        masks.append(m)
    return torch.tensor(rates, dtype=torch.float64), torch.tensor(counts), masks


def test_registry_and_protocol():
    assert METHODS == ["ast", "random", "topk", "sb", "full", "is", "rs2", "infobatch"]   # rs2/infobatch: epoch level
    for m in METHODS:
        sel = make_selector(m)
        assert isinstance(sel, Selector) and sel.name == m
        assert isinstance(sel.needs_scores, bool)
    assert not make_selector("random").needs_scores and not make_selector("full").needs_scores
    assert make_selector("ast").needs_scores and make_selector("topk").needs_scores and make_selector("sb").needs_scores


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 256])
def test_mask_is_bool_of_length_n(method, n):
    sel = make_selector(method)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        s = torch.empty(n).exponential_(generator=g)
        m = sel(s, SelectionState(n=n, generator=g))
        assert m.dtype == torch.bool and m.shape == (n,)
        assert int(m.sum()) >= min(2, n)


@pytest.mark.parametrize("method", ["random", "full"])
def test_scoreless_methods_accept_none(method):
    m = make_selector(method)(None, SelectionState(n=10, generator=torch.Generator().manual_seed(0)))
    assert m.dtype == torch.bool and m.shape == (10,)


def test_random_exact_count_and_uniform():
    sel = RandomSelector(0.25)
    rates, counts, masks = _stream(sel, n_batches=2000)
    assert set(counts.tolist()) == {16} and (rates == 0.25).all()
    freq = torch.stack(masks).double().mean(0)  # every position equally likely
    assert (freq - 0.25).abs().max() < 0.05
    for n, k in [(10, 3), (7, 2), (100, 25), (3, 2), (1, 1)]:  # round half up, floor of 2, capped at n
        assert int(RandomSelector(0.25)(None, SelectionState(n=n)).sum()) == k


def test_random_reproducible_from_generator():
    a = RandomSelector(0.3)(None, SelectionState(n=50, generator=torch.Generator().manual_seed(5)))
    b = RandomSelector(0.3)(None, SelectionState(n=50, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(a, b)


def test_topk_exact_and_highest():
    sel = TopKSelector(0.25)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        s = torch.rand(64, generator=g)
        m = sel(s, SelectionState(n=64))
        assert int(m.sum()) == 16 and sel.last_rate == 0.25
        assert s[m].min() > s[~m].max()


@pytest.mark.parametrize("normalize", ["batch", "none"])
@pytest.mark.parametrize("target", [0.1, 0.25, 0.5])
def test_ast_tracks_target(target, normalize):
    rates, counts, _ = _stream(ASTSelector(target, normalize=normalize), n_batches=600)
    assert abs(rates[200:].mean().item() - target) < 0.03
    assert counts.min() >= 2


@pytest.mark.parametrize("scale", [1e-3, 1e3])
def test_ast_tracks_target_on_any_scale(scale):
    # the controller works on log-threshold: a score scale 1000x off the initial (absolute) threshold is still reached
    rates, _, _ = _stream(ASTSelector(0.25, normalize='none'), n_batches=800, scale=scale)
    assert abs(rates[-300:].mean().item() - 0.25) < 0.03


def test_ast_relative_threshold_is_scale_free():
    s = torch.empty(64).exponential_(generator=torch.Generator().manual_seed(0))
    a, b = ASTSelector(0.25), ASTSelector(0.25)
    for k in range(50):   # a level jump of 1000x between batches changes nothing in relative mode
        assert torch.equal(a(s, SelectionState(n=64)), b(s * (1000.0 if k % 2 else 1.0), SelectionState(n=64)))


def test_ast_uses_threshold_before_update_and_raw_rate():
    sel = ASTSelector(0.25, initial_threshold=1.0, normalize='none')
    s = torch.tensor([0.5, 1.0, 1.5, 2.0, 0.1, 0.2, 0.3, 0.4])
    m = sel(s, SelectionState(n=8))
    assert torch.equal(m, s >= 1.0)
    assert sel.last_rate == 0.375
    assert sel.threshold > 1.0  # too many active => threshold rises
    sel = ASTSelector(0.25, initial_threshold=1.0, normalize='none')
    sel(torch.full((64,), 0.01), SelectionState(n=64))
    assert sel.threshold < 1.0  # too few active (the floor's 2 of 64) => threshold falls


def test_ast_set_epoch_forwards():
    sel = ASTSelector(0.25, kp_warmup_epochs=3)
    sel.set_epoch(2)
    assert sel.controller.epoch == 2


@pytest.mark.parametrize("min_active,n,k", [(0, 64, 2), (1, 64, 2), (2, 64, 2), (5, 64, 5), (2, 1, 1), (10, 4, 4)])
def test_min_active_when_nothing_passes(min_active, n, k):
    s = torch.empty(n).exponential_(generator=torch.Generator().manual_seed(0))
    ast = ASTSelector(0.25, initial_threshold=1e9, min_active=min_active, normalize='none')
    m = ast(s, SelectionState(n=n))
    assert int(m.sum()) == k and ast.raw_rate == 0.0 and ast.last_rate == k / n
    assert torch.equal(m, s >= s.topk(k).values[-1])  # the top-up takes the highest scores
    sb = SBSelector(beta=1e6, min_active=min_active)  # p ~ 0 for all but the very top
    assert int(sb(s, SelectionState(n=n, generator=torch.Generator().manual_seed(0))).sum()) >= k
    for sel in (RandomSelector(0.001, min_active=min_active), TopKSelector(0.001, min_active=min_active)):
        assert int(sel(s, SelectionState(n=n)).sum()) == k


@pytest.mark.parametrize("method", METHODS)
def test_min_active_over_long_stream(method):
    sel = make_selector(method, target=0.02, min_active=3)
    _, counts, _ = _stream(sel, n_batches=200)
    assert counts.min() >= 3


def test_enforce_min_active():
    s = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3])
    none = torch.zeros(5, dtype=torch.bool)
    assert enforce_min_active(none, s).tolist() == [False, True, False, True, False]
    one = torch.tensor([True, False, False, False, False])
    assert enforce_min_active(one, s).tolist() == [True, True, False, False, False]
    enough = s > 0.2
    assert torch.equal(enforce_min_active(enough, s), enough)
    assert enforce_min_active(enough, s) is not enough  # never modifies its input in place
    assert int(enforce_min_active(none, None, 3, torch.Generator().manual_seed(0)).sum()) == 3
    inf, nan = float("inf"), float("nan")
    # an unselected +inf score must not displace already-selected samples when there are enough
    m = torch.tensor([True, True, False, False])
    assert torch.equal(enforce_min_active(m, torch.tensor([1.0, 2.0, inf, nan])), m)
    assert enforce_min_active(torch.zeros(4, dtype=torch.bool), torch.tensor([nan, 1.0, -inf, 0.5])).tolist() == [
        False, True, False, True]
    assert enforce_min_active(torch.zeros(0, dtype=torch.bool), torch.zeros(0)).shape == (0,)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_sb_rate_is_one_over_beta_plus_one(beta):
    sel = SBSelector(beta=beta, history=1024)
    assert sel.expected_rate == pytest.approx(1 / (beta + 1))
    rates, counts, _ = _stream(sel, n_batches=400)
    assert abs(rates[50:].mean().item() - 1 / (beta + 1)) < 0.03
    assert counts.min() >= 2


def test_sb_beta_from_target_and_defaults():
    assert SBSelector().beta == 1.0
    assert SBSelector(target=0.25).beta == 3.0
    assert SBSelector(target=0.25, beta=2.0).beta == 2.0
    assert make_selector("sb", target=0.2).beta == pytest.approx(4.0)
    assert make_selector("sb", sb_beta=1.0, sb_history=32).history == 32


def test_sb_prefers_high_scores():
    sel = SBSelector(beta=1.0)
    g = torch.Generator().manual_seed(0)
    s = torch.linspace(0, 1, 64)
    hits = sum(sel(s, SelectionState(n=64, generator=g)).double() for _ in range(300)) / 300
    assert hits[:16].mean() < 0.2 and hits[-16:].mean() > 0.8


def test_sb_ring_buffer():
    sel = SBSelector(beta=1.0, history=10)
    sel(torch.arange(4.0), SelectionState(n=4))
    assert sel._count == 4 and sel._pos == 4
    sel(torch.arange(8.0), SelectionState(n=8))
    assert sel._count == 10 and sel._pos == 2
    sel(torch.arange(25.0), SelectionState(n=25))  # bigger than the history: keeps the last 10
    assert sel._count == 10 and sorted(sel._buf.tolist()) == list(range(15, 25))


@pytest.mark.parametrize("method", METHODS)
def test_state_dict_round_trip_gives_identical_future_masks(method):
    a = make_selector(method, sb_history=100)
    _stream(a, n_batches=50, seed=1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # the state survives a checkpoint file
    buf.seek(0)
    sd = torch.load(buf, weights_only=False)
    _, ca, ma = _stream(a, n_batches=50, seed=2)
    b = make_selector(method, sb_history=100)
    b.load_state_dict(sd)
    _, cb, mb = _stream(b, n_batches=50, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(ma, mb))
    assert a.threshold == b.threshold


def test_state_dict_is_a_snapshot():
    a = SBSelector(history=16)
    _stream(a, n_batches=3, n=8)
    sd = a.state_dict()
    before = sd["buffer"].clone()
    _stream(a, n_batches=3, n=8, seed=9)
    assert torch.equal(sd["buffer"], before)


def test_load_state_dict_errors():
    with pytest.raises(ValueError, match="'ast'"):
        make_selector("topk").load_state_dict(make_selector("ast").state_dict())
    sd = make_selector("sb", sb_history=8).state_dict()
    _stream(s := SBSelector(history=8), n_batches=1, n=8)
    with pytest.raises(ValueError, match="history"):
        SBSelector(history=16).load_state_dict(s.state_dict())
    SBSelector(history=16).load_state_dict(sd)  # an empty history loads anywhere


def test_unknown_method_and_bad_args():
    with pytest.raises(ValueError) as e:
        make_selector("gradmatch")
    assert "gradmatch" in str(e.value)
    for m in METHODS:
        assert m in str(e.value)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="target"):
            make_selector("topk", target=bad)
    with pytest.raises(ValueError, match="beta"):
        SBSelector(beta=-1.0)
    with pytest.raises(ValueError, match="history"):
        SBSelector(history=0)


def test_input_validation():
    with pytest.raises(ValueError, match="needs scores"):
        make_selector("ast")(None, SelectionState(n=4))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        make_selector("topk")(torch.rand(5), SelectionState(n=4))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_scores(method, dtype):
    sel = make_selector(method)
    s = torch.empty(64).exponential_(generator=torch.Generator().manual_seed(0)).to(dtype)
    m = sel(s, SelectionState(n=64, generator=torch.Generator().manual_seed(0)))
    assert m.dtype == torch.bool and m.shape == (64,) and int(m.sum()) >= 2


def test_threshold_property():
    assert make_selector("ast", initial_threshold=2.0, normalize="none").threshold == pytest.approx(2.0)
    for m in ["random", "topk", "sb", "full"]:
        assert make_selector(m).threshold is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("gen_device", ["cpu", "cuda"])
def test_cuda(method, gen_device):
    sel = make_selector(method)
    g = torch.Generator(device=gen_device).manual_seed(0)
    for _ in range(5):
        s = torch.rand(64, device="cuda")
        m = sel(s, SelectionState(n=64, generator=g))
        assert m.device.type == "cuda" and m.dtype == torch.bool and int(m.sum()) >= 2
    assert enforce_min_active(torch.zeros(8, dtype=torch.bool, device="cuda"), None, 2, g).sum().item() == 2
