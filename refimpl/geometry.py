"""Receptive-field grids: where a field of size R with stride S lands on an H x W input.

A grid of fields (local filtering, pooling) over an ``(H, W)`` plane has
``OH = (H - R) // S + 1`` rows and ``OW = (W - R) // S + 1`` columns ("valid" placement, no
padding); field ``(oy, ox)`` covers rows ``oy*S .. oy*S + R - 1`` and columns
``ox*S .. ox*S + R - 1``. Pixels past the last field (when ``(H - R) % S != 0``) are not seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; a ValueError naming ``name`` otherwise (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


@dataclass(frozen=True)
class Grid:
    """A validated grid of ``field x field`` windows with ``stride`` over an ``in_h x in_w`` plane."""

    in_h: int
    in_w: int
    field: int
    stride: int

    @property
    def out_h(self) -> int:
        return (self.in_h - self.field) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.in_w - self.field) // self.stride + 1

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.out_h, self.out_w


def make_grid(in_h, in_w, field, stride, *, what: str = "field") -> Grid:
    """Validate and build a :class:`Grid`; ``what`` names the window in error messages.

    Raises ``ValueError`` naming the bad quantity: a non-int size, ``stride < 1``, ``field < 1``
    or a field larger than the input.
    """
    in_h = check_int("input height H", in_h, 1)
    in_w = check_int("input width W", in_w, 1)
    field = check_int(f"{what} size", field, 1)
    stride = check_int(f"{what} stride", stride, 1)
    if field > in_h or field > in_w:
        raise ValueError(
            f"{what} size {field} does not fit the input (H={in_h}, W={in_w}): "
            f"it must be <= min(H, W)"
        )
    return Grid(in_h, in_w, field, stride)
