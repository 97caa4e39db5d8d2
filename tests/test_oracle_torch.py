"""Each sublayer against an independent PyTorch implementation (micrograd-style oracle).

The torch versions below are written from the paper's equations with torch's own primitives
(unfold/fold, avg_pool2d, conv2d) and differentiated by autograd; they share no code with refimpl.
Forward values and every gradient must agree to 1e-10 in float64.
"""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl import SUBLAYERS

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t_local_filter(x, W1, stride):
    B, C, H, W = x.shape
    OH, OW, K, _, R, _ = W1.shape
    cols = F.unfold(x, R, stride=stride)  # (B, C*R*R, OH*OW), (c, u, v) order
    f = torch.einsum("lkj,bjl->bkl", W1.reshape(OH * OW, K, C * R * R), cols)
    return f.reshape(B, K, OH, OW)


def t_local_decoder(f, W2, stride, out_size):
    B, K, OH, OW = f.shape
    _, _, _, C, R, _ = W2.shape
    cols = torch.einsum("lkj,bkl->bjl", W2.reshape(OH * OW, K, C * R * R), f.reshape(B, K, OH * OW))
    return F.fold(cols, out_size, R, stride=stride)


def t_l2pool(f, window, stride, eps):
    return torch.sqrt(eps + F.avg_pool2d(f * f, window, stride) * window * window)


def t_lcn(h, window, width, c, border):
    B, K, H, W = h.shape
    r = torch.arange(window, dtype=h.dtype) - window // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * width**2))
    g = (g / g.sum())[None, None]  # (1, 1, P, P)
    conv = lambda a: F.conv2d(a[:, None], g, padding=window // 2)[:, 0]  # noqa: E731
    ones = torch.ones(1, H, W, dtype=h.dtype)
    mass = K * (conv(ones) if border == "renorm" else torch.ones_like(ones))
    v = h - (conv(h.sum(1)) / mass)[:, None]
    var = conv((v * v).sum(1)) / mass
    return v / torch.sqrt(torch.clamp(var, min=c * c))[:, None]  # max(c, sigma), no sqrt'(0)


def t_objective(x, W1, W2, stride, pool_window, pool_stride, lam, eps):
    f = t_local_filter(x, W1, stride)
    xhat = t_local_decoder(f, W2, stride, x.shape[2:])
    return ((xhat - x) ** 2).sum() + lam * t_l2pool(f, pool_window, pool_stride, eps).sum()


def oracle(name, x, params, hyper):
    if name == "local_filter":
        return t_local_filter(x, params["W1"], hyper["stride"])
    if name == "local_decoder":
        return t_local_decoder(x, params["W2"], hyper["stride"], hyper["out_size"])
    if name == "l2pool":
        return t_l2pool(x, **hyper)
    if name == "lcn":
        return t_lcn(x, **hyper)
    if name == "objective":
        return t_objective(x, params["W1"], params["W2"], **hyper)
    raise KeyError(name)


def assert_close(ours, theirs, what):
    theirs = theirs.detach().numpy()
    scale = max(1.0, float(np.abs(theirs).max(initial=0.0)))
    err = float(np.abs(np.asarray(ours) - theirs).max(initial=0.0)) / scale
    assert err < 1e-10, f"{what}: max |refimpl - torch| / scale = {err:.2e}"


@pytest.mark.parametrize("name", list(SUBLAYERS))
@given(seed=st.integers(0, 2**32 - 1))
def test_matches_torch_autograd(name, seed):
    entry = SUBLAYERS[name]
    case = entry.case(np.random.default_rng(seed), np.float64)
    tx = torch.tensor(case.x, requires_grad=True)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in case.params.items()}
    ty = oracle(name, tx, tparams, case.hyper)
    tdy = torch.tensor(case.dy, dtype=torch.float64)
    (ty * tdy).sum().backward()

    y, cache = entry.forward(case.x, case.params, **case.hyper)
    dx, grads = entry.backward(case.dy, cache)
    assert_close(y, ty, f"{name} forward")
    assert_close(dx, tx.grad, f"{name} d/dx")
    for k in case.params:
        assert_close(grads[k], tparams[k].grad, f"{name} d/d{k}")


def test_oracle_lcn_is_not_trivially_equal():
    """The oracle must see a difference when refimpl's math differs (here: another border mode)."""
    rng = np.random.default_rng(0)
    h = rng.standard_normal((1, 2, 6, 6))
    y, _ = SUBLAYERS["lcn"].forward(h, {}, window=5, width=1.0, c=0.01, border="zero")
    ty = t_lcn(torch.tensor(h), 5, 1.0, 0.01, "renorm")
    assert not np.allclose(y, ty.numpy(), atol=1e-3)
    assert math.isfinite(float(ty.sum()))
