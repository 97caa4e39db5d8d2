"""refimpl.backend's strided view: NumPy's fast path equals as_strided and stays in bounds."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from refimpl.backend import strided_view


def test_strided_view_equals_as_strided_and_shares_memory():
    a = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)
    s0, _, s2 = a.strides
    shape, strides = (3, 10, 4), (2 * s0, 2 * s2, s2)  # overlapping rows, 2 floats apart
    view = strided_view(a, shape, strides)
    np.testing.assert_array_equal(view, as_strided(a, shape=shape, strides=strides))
    assert np.shares_memory(view, a)


def test_strided_view_refuses_to_reach_past_the_array():
    a = np.zeros((4, 3), dtype=np.float64)
    with pytest.raises((ValueError, TypeError)):
        strided_view(a, (5, 3), a.strides)  # one row too many


def test_strided_view_needs_a_contiguous_array():
    a = np.zeros((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="contiguous"):
        strided_view(a, (2, 3), a.strides)


def test_strided_view_starts_at_its_offset():
    """The offset (bytes) moves the view's start; the view must still end inside the array."""
    a = np.arange(24, dtype=np.float32)
    view = strided_view(a, (3, 4), (8, 4), offset=5 * 4)  # rows start 2 floats apart, from a[5]
    np.testing.assert_array_equal(view, [[5, 6, 7, 8], [7, 8, 9, 10], [9, 10, 11, 12]])
    with pytest.raises((ValueError, TypeError)):
        strided_view(a, (3, 4), (8, 4), offset=20 * 4)  # would end at a[27]


def test_strided_view_on_another_backend_starts_at_its_offset_and_refuses_a_split_item():
    """The stand-in for CuPy takes the other path (a slice, then as_strided)."""
    import gpu.strict as strict

    a = strict.asarray(np.arange(24, dtype=np.float32))
    view = strided_view(a, (3, 4), (8, 4), offset=5 * 4)
    np.testing.assert_array_equal(strict.asnumpy(view), [[5, 6, 7, 8], [7, 8, 9, 10], [9, 10, 11, 12]])
    with pytest.raises(ValueError, match="whole number"):
        strided_view(a, (3, 4), (8, 4), offset=6)
