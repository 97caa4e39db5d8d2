"""Local filtering: the encoder ``W1^T x`` of eq. 1 (a locally connected layer, no sharing).

Each output location ``(oy, ox)`` of a stage has ``K`` filters of its own, each connected to an
``R x R`` receptive field of every input channel (paper: R = 18, K = 8). The layer is linear;
the nonlinearity of a stage comes from L2 pooling and LCN.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

from .checks import check_array, check_finite_through, check_params, check_same_dtype, check_shape
from .geometry import make_grid
from .locally_connected import kernel_layout, lc_apply, lc_transpose, lc_weight_grad, run_pair

W_LAYOUT = "(OH, OW, K, C, R, R)"


class LocalFilterCache(NamedTuple):
    x: Any  # (B, C, H, W) the input
    W1: Any  # (OH, OW, K, C, R, R)
    stride: int
    xt: Any = None  # x in the kernels' layout, (C, H, W, B), kept for dW1 (None: made again)


def check_lc_weights(name: str, W, in_shape: tuple, stride: int):
    """Validate locally connected weights against the input they act on; return the grid.
    Their values are checked afterwards, on the layer's output (:func:`check_finite_through`)."""
    check_array(name, W, ndim=6, layout=W_LAYOUT, finite=False)
    _, C, H, Wd = in_shape
    OH, OW, K, Cw, R, R2 = W.shape
    if R != R2:
        raise ValueError(f"{name} fields must be square, got R x R = {R} x {R2}")
    if Cw != C:
        raise ValueError(f"{name} has {Cw} input channels (axis 3) but the input has C = {C}")
    grid = make_grid(H, Wd, R, stride, what="receptive field")
    check_shape(name, W, (grid.out_h, grid.out_w, K, C, R, R), W_LAYOUT)
    return grid


def local_filter_forward(x, params, *, stride: int):
    """Forward of local filtering.

    x: (B, C, H, W); params["W1"]: (OH, OW, K, C, R, R) with OH = (H - R) // stride + 1.
    Returns f: (B, K, OH, OW),
    ``f[b, k, oy, ox] = sum_{c,u,v} W1[oy, ox, k, c, u, v] * x[b, c, oy*S + u, ox*S + v]``.
    """
    check_params(params, ("W1",))
    check_array("x", x, ndim=4, layout="(B, C, H, W)")
    W1 = params["W1"]
    check_lc_weights("W1", W1, x.shape, stride)
    check_same_dtype(x=x, W1=W1)
    xt = kernel_layout(x)  # (C, H, W, B): the forward and dW1 both read it
    f = lc_apply(x, W1, stride, xt=xt)
    check_finite_through("W1", W1, f)  # every W1 entry is a factor of some f entry
    return f, LocalFilterCache(x, W1, stride, xt)


def local_filter_backward(df, cache: LocalFilterCache, *, input_grad: bool = True):
    """Backward of local filtering: df (B, K, OH, OW) -> dx (B, C, H, W), {"W1": dW1}.

    ``input_grad=False``: dx is None and not computed, for a caller that stops here (the first
    stage, or every stage with local gradients): it is one of the layer's two products.
    """
    x, W1, S, xt = cache
    OH, OW, K, C, R, _ = W1.shape
    check_array("df", df, ndim=4, layout="(B, K, OH, OW)")
    check_shape("df", df, (x.shape[0], K, OH, OW), "(B, K, OH, OW)")
    dft = kernel_layout(df)  # (K, OH, OW, B), for both products
    if not input_grad:
        return None, {"W1": lc_weight_grad(x, df, S, R, xt=xt, dft=dft)}
    dx, dW1 = run_pair(  # independent: on two threads at once when worth it
        partial(lc_transpose, df, W1, S, x.shape[2:], ft=dft),  # W1 df, overlap-added onto the plane
        partial(lc_weight_grad, x, df, S, R, xt=xt, dft=dft),
        flops=4 * df.size * C * R * R)
    return dx, {"W1": dW1}
