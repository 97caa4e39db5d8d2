"""The fused L2-pooling and LCN kernels of gpu.kernels against refimpl, their oracle.

Two backends run the same tests:

- ``[cuda]``: real CuPy on a GPU (marked ``gpu``; skipped with "no CUDA device" elsewhere);
- ``[emulated]``: on the CPU. The CUDA source of gpu.kernels is compiled by the C++ compiler
  with a small prelude that defines ``__global__`` and the thread indices, and each launch runs
  every (block, thread) in turn. The arrays are the strict stand-in's, so the Python side of
  gpu.kernels (argument order, int64/T scalar types checked against the kernel's declared
  parameters, contiguity, shapes) runs exactly as it would on CuPy. What it cannot see:
  NVRTC-specific compile errors, races between threads (the kernels are gathers that write only
  their own output element), and GPU rounding (FMA contraction): that is what ``[cuda]`` is for.
"""

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import gpu.kernels as K
import gpu.strict
from gpu.testing import NO_CUDA, Backend, assert_close, backend, cuda_available
from refimpl import SUBLAYERS, l2pool_backward, l2pool_forward, lcn_backward, lcn_forward
from refimpl.backend import to_numpy

CXX = shutil.which("g++") or shutil.which("c++")

PRELUDE = r"""
#include <cmath>
using std::sqrt;
struct emu_dim3 { unsigned x; };
static emu_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
"""
_CTYPE_OF = {"long long": ctypes.c_longlong, "float": ctypes.c_float, "double": ctypes.c_double}
_SCALAR_OF = {"long long": np.int64, "float": np.float32, "double": np.float64}
_LIBS: dict[str, ctypes.CDLL] = {}


def _signatures(code: str) -> dict[str, list[tuple[str, str]]]:
    """{kernel: [(type, name), ...]} from the ``extern "C" __global__ void`` declarations."""
    out = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\s*\(([^)]*)\)', code):
        out[name] = [tuple(p.strip().rsplit(None, 1)) for p in params.split(",")]
    return out


def _compile(code: str) -> ctypes.CDLL:
    key = hashlib.sha256(code.encode()).hexdigest()[:16]
    if key not in _LIBS:
        drivers = []
        for name, params in _signatures(code).items():
            decl = ", ".join(f"{t} {n}" for t, n in params)
            names = ", ".join(n for _, n in params)
            drivers.append(
                f'extern "C" void emu_{name}(unsigned grid, unsigned block, {decl}) {{\n'
                f"  gridDim.x = grid; blockDim.x = block;\n"
                f"  for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {{\n"
                f"    blockIdx.x = b; threadIdx.x = t; {name}({names}); }}\n}}\n")
        tmp = Path(tempfile.mkdtemp(prefix="catneuron-emu-"))
        src, lib = tmp / "kernels.cpp", tmp / "kernels.so"
        src.write_text(PRELUDE + code + "\n" + "\n".join(drivers))
        subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True,
                       capture_output=True, text=True)
        _LIBS[key] = ctypes.CDLL(str(lib))
    return _LIBS[key]


class EmulatedRawKernel:
    """``cupy.RawKernel(code, name)`` on the CPU; ``kernel(grid, block, args)`` runs every thread."""

    def __init__(self, code: str, name: str):
        self.code, self.name = code, name
        self.T = re.match(r"typedef (float|double) T;", code).group(1)
        self.params = _signatures(code)[name]

    def __call__(self, grid, block, args):
        assert isinstance(grid, tuple) and isinstance(block, tuple) and isinstance(args, tuple)
        assert len(args) == len(self.params), f"{self.name}: {len(args)} args for {len(self.params)} parameters"
        ctypes_args = []
        for (decl, pname), a in zip(self.params, args):
            ctype = decl.replace("const ", "").replace("T", self.T)
            if ctype.endswith("*"):
                assert isinstance(a, gpu.strict.ndarray), f"{self.name}({pname}): not a device array"
                host = a._a  # the emulator reads the stand-in's buffer, as the GPU reads CuPy's
                assert host.flags.c_contiguous, f"{self.name}({pname}): not C-contiguous"
                assert host.dtype == _SCALAR_OF[ctype[:-1].strip()], f"{self.name}({pname}): {host.dtype} for {decl}"
                ctypes_args.append(ctypes.c_void_p(host.ctypes.data))
            else:
                assert type(a) is _SCALAR_OF[ctype], f"{self.name}({pname}): {type(a).__name__} for {decl}"
                ctypes_args.append(_CTYPE_OF[ctype](a))
        getattr(_compile(self.code), f"emu_{self.name}")(
            ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), *ctypes_args)


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def kernel_backend(request, monkeypatch) -> Backend:
    K._kernel.cache_clear()
    if request.param == "cuda":
        if not cuda_available():
            pytest.skip(NO_CUDA)
        return backend("cuda")
    if CXX is None:
        pytest.skip("no C++ compiler to emulate the CUDA kernels")
    monkeypatch.setattr(gpu.strict, "RawKernel", EmulatedRawKernel, raising=False)
    yield Backend("strict", gpu.strict)
    K._kernel.cache_clear()


def _cases(name, dtype, n=6):
    entry = SUBLAYERS[name]
    return [entry.case(np.random.default_rng(seed), dtype) for seed in range(n)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_l2pool_matches_refimpl(kernel_backend, dtype):
    dev = kernel_backend
    for case in _cases("l2pool", dtype):
        p0, cache0 = l2pool_forward(case.x, **case.hyper)
        df0, _ = l2pool_backward(case.dy, cache0)
        p, cache = K.l2pool_forward(dev.to_device(case.x), **case.hyper)
        df, grads = K.l2pool_backward(dev.to_device(case.dy), cache)
        assert isinstance(p, dev.xp.ndarray) and isinstance(df, dev.xp.ndarray) and grads == {}
        assert_close(to_numpy(p), p0, exact=False, what=f"p {case.hyper}")
        assert_close(to_numpy(df), df0, exact=False, grad=True, what=f"df {case.hyper}")
        # the caches are refimpl's: the fused forward pairs with refimpl's backward too
        df_mixed, _ = l2pool_backward(dev.to_device(case.dy), cache)
        assert_close(to_numpy(df_mixed), df0, exact=False, grad=True, what="refimpl backward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_lcn_matches_refimpl(kernel_backend, dtype):
    dev = kernel_backend
    for case in _cases("lcn", dtype):
        y0, cache0 = lcn_forward(case.x, **case.hyper)
        dh0, _ = lcn_backward(case.dy, cache0)
        y, cache = K.lcn_forward(dev.to_device(case.x), **case.hyper)
        dh, grads = K.lcn_backward(dev.to_device(case.dy), cache)
        assert isinstance(y, dev.xp.ndarray) and isinstance(dh, dev.xp.ndarray) and grads == {}
        assert_close(to_numpy(y), y0, exact=False, what=f"y {case.hyper}")
        assert_close(to_numpy(cache.sigma), cache0.sigma, exact=False, what="sigma")
        assert_close(to_numpy(dh), dh0, exact=False, grad=True, what=f"dh {case.hyper}")


def test_a_wrong_kernel_is_caught(kernel_backend, monkeypatch):
    """The comparison can fail: a window off by one row must not match refimpl."""
    monkeypatch.setattr(K, "SOURCE", K.SOURCE.replace("(oy * S + u) * W", "(oy * S + u + 1) * W"))
    K._kernel.cache_clear()
    f = np.random.default_rng(0).standard_normal((2, 3, 9, 9))
    p0, _ = l2pool_forward(f, window=3, stride=2, eps=0.1)
    p, _ = K.l2pool_forward(kernel_backend.to_device(f), window=3, stride=2, eps=0.1)
    assert not np.allclose(to_numpy(p), p0)
    K._kernel.cache_clear()


def test_fused_kernels_refuse_host_arrays():
    with pytest.raises(TypeError, match="needs CuPy arrays"):
        K.l2pool_forward(np.ones((1, 1, 4, 4)), window=2, stride=1, eps=0.1)
    with pytest.raises(TypeError, match="needs CuPy arrays"):
        K.lcn_forward(np.ones((1, 1, 4, 4)), window=3)


def test_fused_kernels_validate_like_refimpl(kernel_backend):
    x = kernel_backend.to_device(np.ones((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="eps"):
        K.l2pool_forward(x, window=2, stride=1, eps=0.0)
    with pytest.raises(ValueError, match="pooling window size 6 does not fit"):
        K.l2pool_forward(x, window=6, stride=1, eps=0.1)
    with pytest.raises(ValueError, match="odd"):
        K.lcn_forward(x, window=4)
    with pytest.raises(ValueError, match="must be 4-D"):
        K.lcn_forward(kernel_backend.to_device(np.ones((2, 5, 5))), window=3)
