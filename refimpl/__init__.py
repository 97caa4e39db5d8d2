"""refimpl: the readable NumPy reference of Le et al. 2012's locally connected sparse autoencoder.

One file per concept. The sublayers, each a ``*_forward`` / ``*_backward`` pair:

- :mod:`refimpl.local_filter`  local filtering, the encoder W1 (locally connected, unshared)
- :mod:`refimpl.local_decoder` the decoder W2 (transpose connectivity, untied)
- :mod:`refimpl.l2pool`        L2 pooling with fixed uniform H
- :mod:`refimpl.lcn`           local contrast normalisation
- :mod:`refimpl.objective`     the stage objective of eq. 1

:data:`SUBLAYERS` registers them all for the gradient checks (:mod:`refimpl.gradcheck`).
Arrays are ``(B, C, H, W)``, float32 or float64, NumPy or CuPy (see :mod:`refimpl.backend`).
"""

from .backend import get_xp, to_numpy
from .l2pool import l2pool_backward, l2pool_forward
from .lcn import lcn_backward, lcn_forward
from .local_decoder import local_decoder_backward, local_decoder_forward
from .local_filter import local_filter_backward, local_filter_forward
from .objective import objective_backward, objective_forward
from .registry import SUBLAYERS, Case, Sublayer

__all__ = [
    "SUBLAYERS", "Case", "Sublayer", "get_xp", "to_numpy",
    "local_filter_forward", "local_filter_backward",
    "local_decoder_forward", "local_decoder_backward",
    "l2pool_forward", "l2pool_backward",
    "lcn_forward", "lcn_backward",
    "objective_forward", "objective_backward",
]
