"""The locally connected decoder ``W2`` of eq. 1: maps features back onto the stage's input.

``W2`` has the same shape and connectivity as ``W1`` but is a separate, untied parameter: the
feature ``f[b, k, oy, ox]`` paints ``W2[oy, ox, k]`` onto the receptive field it came from, and
overlapping fields add (overlap-add, the transpose connectivity of local filtering).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

from .checks import check_array, check_finite_through, check_params, check_same_dtype, check_shape
from .local_filter import check_lc_weights
from .locally_connected import kernel_layout, lc_apply, lc_transpose, lc_weight_grad, run_pair


class LocalDecoderCache(NamedTuple):
    f: Any  # (B, K, OH, OW) the features
    W2: Any  # (OH, OW, K, C, R, R)
    stride: int
    out_size: tuple  # (H, W)


def local_decoder_forward(f, params, *, stride: int, out_size: tuple[int, int]):
    """Forward of the decoder.

    f: (B, K, OH, OW); params["W2"]: (OH, OW, K, C, R, R); out_size = (H, W) of the
    reconstruction (needed because several H give the same OH when stride > 1).
    Returns xhat: (B, C, H, W),
    ``xhat[b, c, oy*S + u, ox*S + v] += W2[oy, ox, k, c, u, v] * f[b, k, oy, ox]``.
    """
    check_params(params, ("W2",))
    check_array("f", f, ndim=4, layout="(B, K, OH, OW)")
    W2 = params["W2"]
    if not isinstance(out_size, (tuple, list)) or len(out_size) != 2:
        raise ValueError(f"out_size must be a pair (H, W), got {out_size!r}")
    C = W2.shape[3] if getattr(W2, "ndim", 0) == 6 else None
    check_lc_weights("W2", W2, (f.shape[0], C, *out_size), stride)
    check_shape("f", f, (f.shape[0], *W2.shape[2:3], *W2.shape[:2]), "(B, K, OH, OW)")
    check_same_dtype(f=f, W2=W2)
    xhat = lc_transpose(f, W2, stride, tuple(out_size))
    check_finite_through("W2", W2, xhat)  # every W2 entry is a factor of some xhat entry
    return xhat, LocalDecoderCache(f, W2, stride, tuple(out_size))


def local_decoder_backward(dxhat, cache: LocalDecoderCache):
    """Backward of the decoder: dxhat (B, C, H, W) -> df (B, K, OH, OW), {"W2": dW2}."""
    f, W2, S, (H, W) = cache
    OH, OW, K, C, R, _ = W2.shape
    check_array("dxhat", dxhat, ndim=4, layout="(B, C, H, W)")
    check_shape("dxhat", dxhat, (f.shape[0], C, H, W), "(B, C, H, W)")
    dxt = kernel_layout(dxhat)  # (C, H, W, B), for both products
    df, dW2 = run_pair(  # independent: on two threads at once when worth it
        partial(lc_apply, dxhat, W2, S, xt=dxt),  # the adjoint of overlap-add is the local filter
        partial(lc_weight_grad, dxhat, f, S, R, xt=dxt),
        flops=4 * f.size * C * R * R)
    return df, {"W2": dW2}
