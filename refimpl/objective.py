"""The stage objective of eq. 1: reconstruction by the decoder plus sparsity of pooled features.

For one stage with input x (the image, or the previous stage's LCN output), summed over the
examples i of the minibatch:

    J = sum_i ( ||W2 W1^T x_i - x_i||_2^2  +  lambda * sum_j sqrt(eps + H_j (W1^T x_i)^2) )

    f    = W1^T x         local filtering                (refimpl.local_filter)
    xhat = W2 f           locally connected decoder      (refimpl.local_decoder)
    p    = sqrt(eps + H f^2)   L2 pooling, H fixed        (refimpl.l2pool)

The reconstruction is compared with x on the whole input plane; pixels that no receptive field
covers (when (H - R) % S != 0) have xhat = 0 and add a constant to J.
Only W1 and W2 are learned. Gradients are returned for W1, W2 and the input x (needed when the
stages are trained jointly and the gradient flows down into earlier stages).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .backend import get_xp
from .checks import check_params
from .l2pool import L2PoolCache, l2pool_backward, l2pool_forward
from .local_decoder import LocalDecoderCache, local_decoder_backward, local_decoder_forward
from .local_filter import LocalFilterCache, local_filter_backward, local_filter_forward


class ObjectiveCache(NamedTuple):
    enc: LocalFilterCache
    dec: LocalDecoderCache
    pool: L2PoolCache
    residual: Any  # (B, C, H, W) xhat - x
    lam: float
    reconstruction: Any  # 0-d: sum_i ||xhat_i - x_i||^2
    sparsity: Any  # 0-d: sum_i sum_j p_ij (before the factor lambda)

    @property
    def pooled(self):
        """p: (B, K, OH2, OW2), the L2-pooled features (the stage's output before LCN)."""
        return self.pool.p


def objective_forward(
    x, params, *, stride: int, pool_window: int, pool_stride: int, lam: float, eps: float
):
    """Forward of eq. 1 for one stage.

    x: (B, C, H, W); params: {"W1", "W2"}, each (OH, OW, K, C, R, R).
    Returns J (a 0-d array) and the cache; ``cache.pooled`` is the pooled output p.
    """
    check_params(params, ("W1", "W2"))
    if not isinstance(lam, (int, float)) or not lam >= 0:
        raise ValueError(f"lam (the sparsity weight lambda) must be a number >= 0, got {lam!r}")
    f, enc = local_filter_forward(x, {"W1": params["W1"]}, stride=stride)
    xhat, dec = local_decoder_forward(f, {"W2": params["W2"]}, stride=stride, out_size=x.shape[2:])
    p, pool = l2pool_forward(f, window=pool_window, stride=pool_stride, eps=eps)
    residual = xhat - x
    reconstruction = (residual * residual).sum()
    sparsity = p.sum()
    J = reconstruction + lam * sparsity
    return J, ObjectiveCache(enc, dec, pool, residual, float(lam), reconstruction, sparsity)


def objective_backward(dJ, cache: ObjectiveCache, dp_extra=None, *, input_grad: bool = True):
    """Backward of eq. 1.

    dJ: the upstream gradient of J (a scalar, 1.0 for J itself). ``dp_extra``: an optional extra
    upstream gradient on the pooled output p, shape (B, K, OH2, OW2), from LCN and the stages
    above when the stack is trained jointly.
    Returns dx (B, C, H, W) and {"W1": dW1, "W2": dW2}; with ``input_grad=False`` dx is None and
    not computed (nothing below the stage needs it).
    """
    dJ = float(dJ)
    dxhat = 2.0 * dJ * cache.residual
    df, grads_dec = local_decoder_backward(dxhat, cache.dec)
    p = cache.pool.p
    dp = get_xp(p).full_like(p, cache.lam * dJ)  # d(lambda * sum p) / dp
    if dp_extra is not None:
        dp = dp + dp_extra
    df_pool, _ = l2pool_backward(dp, cache.pool)
    dx, grads_enc = local_filter_backward(df + df_pool, cache.enc, input_grad=input_grad)
    if dx is not None:
        dx = dx - dxhat  # x is also the target of the reconstruction
    return dx, {"W1": grads_enc["W1"], "W2": grads_dec["W2"]}
