"""The namespace check: every ``xp.<name>`` that refimpl uses (found by parsing its source with
``ast``) exists in the installed CuPy, and so does every array method the strict stand-in allows.

``import cupy`` works without a GPU (array creation does not), so this runs on any CI machine
where CuPy is installed (``make test`` installs cupy-cuda12x); without CuPy it is skipped.
"""

from pathlib import Path

import pytest

import gpu.strict
from gpu.namespace import missing, uses_in_package, uses_in_source

REFIMPL = Path(__file__).resolve().parent.parent / "refimpl"
NO_CUPY = "CuPy is not installed (pip install cupy-cuda12x; `make test` installs it)"


def test_the_finder_sees_every_form_of_namespace_use():
    src = (
        "def f(a, xp):\n"
        "    b = xp.linalg.norm(a)\n"
        "    c = get_xp(a).full_like(a, 1)\n"
        "    d = getattr(xp, 'where')(a > 0, a, 0)\n"
        "    e = backend.get_xp(a).pad(a, 1)\n"
        "    g = np.zeros(3).sum()  # numpy: not a namespace use\n"
        "    h = xp.zeros(3).sum()  # .sum is a method of the result, not xp.sum\n"
        "    return xp.lib.stride_tricks.as_strided\n"
    )
    uses = uses_in_source(src, "m.py")
    assert set(uses) == {"linalg", "linalg.norm", "full_like", "where", "pad", "zeros",
                         "lib", "lib.stride_tricks", "lib.stride_tricks.as_strided"}
    assert uses["where"] == ["m.py:4"]


def test_refimpl_uses_are_found():
    uses = uses_in_package(REFIMPL)
    # names we know refimpl uses (windows.py, objective.py, lcn.py): the finder is not blind
    assert {"zeros", "full_like", "pad", "maximum", "where"} <= set(uses)
    assert all(where and where[0].startswith("refimpl/") for where in uses.values())


def test_missing_reports_absent_names():
    import numpy as np

    assert missing(np, ["zeros", "linalg.norm", "no_such", "linalg.no_such"]) == ["linalg.no_such", "no_such"]


def test_every_xp_name_in_refimpl_exists_in_cupy():
    cupy = pytest.importorskip("cupy", reason=NO_CUPY, exc_type=ImportError)
    uses = uses_in_package(REFIMPL)
    absent = missing(cupy, uses)
    assert not absent, "not in CuPy: " + "; ".join(f"xp.{n} at {', '.join(uses[n])}" for n in absent)


def test_the_stand_ins_array_attributes_exist_on_cupy_ndarray():
    cupy = pytest.importorskip("cupy", reason=NO_CUPY, exc_type=ImportError)
    names = (gpu.strict.METHODS | gpu.strict.HOST_METHODS | set(gpu.strict.PROPERTIES)
             | set(gpu.strict.ARRAY_PROPERTIES) | {"get"})
    assert sorted(n for n in names if not hasattr(cupy.ndarray, n)) == []
