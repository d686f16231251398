"""Numerics and contract of astlab.core.significance: shapes, dtypes, extreme and masked logits, errors."""
import math

import pytest
import torch

from astlab.core.significance import SCORERS, entropy, get_scorer, margin, per_sample_loss, significance

HALF = [torch.float16, torch.bfloat16]


def _data(n=128, c=37, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("name", list(SCORERS))
@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_contract_shape_dtype_range(name, dtype):
    x, y = _data()
    s = get_scorer(name)(x.to(dtype), y)
    assert s.shape == (128,)
    assert s.dtype == torch.float32
    assert torch.isfinite(s).all() and (s >= 0).all()


@pytest.mark.parametrize("name", list(SCORERS))
def test_half_agrees_with_float32(name):
    x, y = _data()
    f = get_scorer(name)
    ref = f(x, y)
    torch.testing.assert_close(f(x.half(), y), ref, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(f(x.bfloat16(), y), ref, atol=1.5e-1, rtol=5e-2)
    # the rounding is all in the logits: the same (rounded) logits give the float32 answer
    torch.testing.assert_close(f(x.half(), y), f(x.half().float(), y))


def test_loss_is_cross_entropy():
    x, y = _data()
    torch.testing.assert_close(per_sample_loss(x, y), torch.nn.functional.cross_entropy(x, y, reduction="none"))
    torch.testing.assert_close(per_sample_loss(x, y), -x.log_softmax(-1).gather(1, y[:, None]).squeeze(1))


@pytest.mark.parametrize("c", [1, 2, 10, 1000])
def test_entropy_uniform_is_log_c(c):
    torch.testing.assert_close(entropy(torch.zeros(3, c)), torch.full((3,), math.log(c)))


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_entropy_one_hot_is_zero(dtype):
    x = torch.full((4, 10), -50.0)
    x[:, 3] = 50.0
    torch.testing.assert_close(entropy(x.to(dtype)), torch.zeros(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_entropy_huge_logits(dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]])
    h = entropy(x.to(dtype))
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, torch.tensor([0.0, math.log(2), math.log(3), math.log(3)]))


@pytest.mark.parametrize("dtype", [torch.float32, *HALF])
def test_entropy_masked_classes(dtype):
    inf = float("inf")
    x = torch.tensor([[0.0, 0.0, -inf, -inf], [3.0, -inf, -inf, -inf], [0.0, 0.0, 0.0, -inf]]).to(dtype)
    torch.testing.assert_close(entropy(x), torch.tensor([math.log(2), 0.0, math.log(3)]))
    y = torch.tensor([0, 0, 1])
    for name in SCORERS:
        assert torch.isfinite(get_scorer(name)(x, y)).all(), name


def test_entropy_in_range_random():
    for seed in range(5):
        x, _ = _data(scale=10.0 ** (seed - 1), seed=seed)
        h = entropy(x)
        assert (h >= 0).all() and (h <= math.log(x.shape[1])).all()


def test_significance_is_loss_plus_weighted_entropy():
    x, y = _data()
    for w in [0.0, 0.3, 1.0, 2.5]:
        torch.testing.assert_close(significance(x, y, w), per_sample_loss(x, y) + w * entropy(x))
        torch.testing.assert_close(get_scorer("significance", entropy_weight=w)(x, y), significance(x, y, w))


def test_margin_values():
    x = torch.tensor([[9.0, -9.0, -9.0], [0.0, 0.0, 0.0], [-9.0, 9.0, -9.0], [0.0, 0.0, -9.0]])
    y = torch.tensor([0, 0, 0, 0])
    torch.testing.assert_close(margin(x, y), torch.tensor([0.0, 1.0, 2.0, 1.0]), atol=1e-3, rtol=0)


def test_higher_is_more_significant():
    # confident right < unsure < confident wrong, for every scorer except entropy (which ignores the label)
    x = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    y = torch.zeros(3, dtype=torch.long)
    for name in ["significance", "loss", "margin"]:
        s = get_scorer(name)(x, y)
        assert s[0] < s[1] < s[2], name


def test_no_grad_and_grad():
    x, y = _data()
    with torch.no_grad():
        for name in SCORERS:
            assert not get_scorer(name)(x, y).requires_grad
    xm = torch.tensor([[1.0, 2.0, -float("inf")], [1e4, -1e4, 0.0]], requires_grad=True)
    significance(xm, torch.tensor([0, 1])).sum().backward()
    assert torch.isfinite(xm.grad[torch.isfinite(xm.detach())]).all()


def test_float64_passes_through():
    x, y = _data()
    assert significance(x.double(), y).dtype == torch.float64


def test_errors():
    x, y = _data()
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        entropy(x[0])
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        significance(x[None], y)
    with pytest.raises(ValueError, match="entropy_weight"):
        significance(x, y, entropy_weight=-1.0)
    with pytest.raises(ValueError, match="entropy_weight"):
        get_scorer("significance", entropy_weight=-1.0)
    with pytest.raises(ValueError) as e:
        get_scorer("nope")
    for name in SCORERS:
        assert name in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = _data()
    for name in SCORERS:
        f = get_scorer(name)
        torch.testing.assert_close(f(x.cuda().half(), y.cuda()).cpu(), f(x.half(), y), atol=1e-4, rtol=1e-4)
