"""Fused CUDA kernels for L2 pooling and LCN, behind refimpl's signatures (CuPy arrays only).

refimpl computes a ``P x P`` window sum as P*P strided slice-adds over whole arrays: on a GPU
that is P*P (25 for the paper's windows) kernel launches and as many passes over memory per
window sum. Here each window sum is one ``RawKernel``: one thread per output element loops over
its own window (a gather, so no atomics and the result is deterministic). The rest (channel
sums, divisions, ``max(c, sigma)``) stays plain ``xp`` code, line for line as in refimpl.

    l2pool_forward   p[bk, oy, ox] = sqrt(eps + sum_{u,v} f[bk, oy*S + u, ox*S + v]^2)
    l2pool_backward  df[bk, y, x]  = f[bk, y, x] * sum_{windows (oy, ox) over (y, x)} dp / p
    lcn              the two window sums of the forward (of h and of v^2, summed over maps)
                     and the two adjoint window sums of the backward

Each kernel sums in the same order as refimpl, so results agree to rounding; the refimpl
functions are the oracle (tests/test_gpu_kernels.py, on a GPU; on the CPU the same kernel source
is compiled with a C++ compiler and run thread by thread). The caches are refimpl's, so a fused
forward pairs with either backward. Kernels are compiled by CuPy (NVRTC) on first use.
"""

from __future__ import annotations

import functools

import numpy as np

from refimpl.backend import get_xp
from refimpl.checks import check_array, check_shape
from refimpl.geometry import make_grid
from refimpl.l2pool import L2PoolCache, _check_eps, pooling_weights
from refimpl.lcn import LCNCache, _check_hyper, _window_mass, gaussian_window

SOURCE = r"""
// T is float or double: the launcher puts "typedef float T;" (or double) in front.
// Parameters: the arrays (C-contiguous), then n (outputs, one per thread of a grid-stride loop),
// then sizes (long long) and T scalars.

extern "C" __global__ void l2pool_forward(const T* f, T* p, long long n, long long H, long long W,
                                          long long OH, long long OW, long long P, long long S,
                                          T eps) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long ox = i % OW, oy = (i / OW) % OH, bk = i / (OW * OH);  // p is (BK, OH, OW)
        const T* plane = f + bk * H * W;
        T s = 0;
        for (long long u = 0; u < P; ++u)
            for (long long v = 0; v < P; ++v) {
                T a = plane[(oy * S + u) * W + (ox * S + v)];
                s += a * a;
            }
        p[i] = sqrt(eps + s);
    }
}

extern "C" __global__ void l2pool_backward(const T* f, const T* p, const T* dp, T* df, long long n,
                                           long long H, long long W, long long OH, long long OW,
                                           long long P, long long S) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long x = i % W, y = (i / W) % H, bk = i / (W * H);  // df is (BK, H, W)
        const T* p_plane = p + bk * OH * OW;
        const T* dp_plane = dp + bk * OH * OW;
        T acc = 0;
        for (long long u = 0; u < P; ++u)
            for (long long v = 0; v < P; ++v) {
                // the window whose offset (u, v) is pixel (y, x) starts at (y - u, x - v)
                long long ty = y - u, tx = x - v;
                if (ty < 0 || tx < 0 || ty % S != 0 || tx % S != 0) continue;
                long long oy = ty / S, ox = tx / S;
                if (oy >= OH || ox >= OW) continue;
                acc += dp_plane[oy * OW + ox] / p_plane[oy * OW + ox];
            }
        df[i] = f[i] * acc;
    }
}

// out[b, y, x] = sum_{u,v} g[u, v] * sum_k a[b, k, y + u - r, x + v - r]  (squared if square),
// zeros outside the image, r = P / 2: refimpl.lcn._local_sum of the map sum.
extern "C" __global__ void lcn_window_sum(const T* a, const T* g, T* out, long long n, long long K,
                                          long long H, long long W, long long P, long long square) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long x = i % W, y = (i / W) % H, b = i / (W * H);  // out is (B, H, W)
        long long r = P / 2;
        T acc = 0;
        for (long long u = 0; u < P; ++u)
            for (long long v = 0; v < P; ++v) {
                long long yy = y + u - r, xx = x + v - r;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                T s = 0;
                for (long long k = 0; k < K; ++k) {
                    T e = a[((b * K + k) * H + yy) * W + xx];
                    s += square ? e * e : e;
                }
                acc += g[u * P + v] * s;
            }
        out[i] = acc;
    }
}

// The adjoint of lcn_window_sum's window (one map): out[b, y, x] = sum_{u,v} g[u, v] *
// e[b, y - u + r, x - v + r], zeros outside: refimpl.lcn._local_sum_adjoint.
extern "C" __global__ void lcn_window_adjoint(const T* e, const T* g, T* out, long long n,
                                              long long H, long long W, long long P) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long x = i % W, y = (i / W) % H, b = i / (W * H);  // out is (B, H, W)
        long long r = P / 2;
        T acc = 0;
        for (long long u = 0; u < P; ++u)
            for (long long v = 0; v < P; ++v) {
                long long yy = y - u + r, xx = x - v + r;
                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                acc += g[u * P + v] * e[(b * H + yy) * W + xx];
            }
        out[i] = acc;
    }
}
"""

_BLOCK = 256
_MAX_GRID = 65535
_CTYPES = {"float32": "float", "float64": "double"}


@functools.lru_cache(maxsize=None)
def _kernel(xp, name: str, dtype: str):
    return xp.RawKernel(f"typedef {_CTYPES[dtype]} T;\n" + SOURCE, name)


def _launch(xp, name: str, arrays: tuple, n: int, *sizes) -> None:
    """Run kernel ``name(*arrays, n, *sizes)`` over ``n`` outputs, the convention of every kernel
    above. Arrays must be C-contiguous and of one dtype T; ints go as int64 (long long), floats
    as T."""
    dtype = arrays[0].dtype
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            raise ValueError(f"internal: kernel {name} got a {a.dtype} array "
                             f"(C-contiguous: {a.flags.c_contiguous}), needs C-contiguous {dtype}")
    scalars = [dtype.type(v) if isinstance(v, float) else np.int64(v) for v in (n, *sizes)]
    grid = max(1, min(-(-n // _BLOCK), _MAX_GRID))
    _kernel(xp, name, dtype.name)((grid,), (_BLOCK,), (*arrays, *scalars))


def _cupy_xp(a, what: str):
    xp = get_xp(a)
    if not hasattr(xp, "RawKernel"):
        raise TypeError(f"gpu.kernels.{what} needs CuPy arrays (got {type(a).__module__}."
                        f"{type(a).__name__}); on the host use refimpl.{what}")
    return xp


def l2pool_forward(f, *, window: int, stride: int, eps: float):
    """As :func:`refimpl.l2pool.l2pool_forward`: f (B, K, H, W) -> p (B, K, OH, OW), fused."""
    xp = _cupy_xp(f, "l2pool_forward")
    check_array("f", f, ndim=4, layout="(B, K, H, W)")
    eps = _check_eps(eps)
    grid = make_grid(f.shape[2], f.shape[3], window, stride, what="pooling window")
    B, K, H, W = f.shape
    f = xp.ascontiguousarray(f)
    p = xp.empty((B, K, grid.out_h, grid.out_w), dtype=f.dtype)
    _launch(xp, "l2pool_forward", (f, p), p.size, H, W, grid.out_h, grid.out_w, window, stride, eps)
    return p, L2PoolCache(f, p, pooling_weights(window), stride)


def l2pool_backward(dp, cache: L2PoolCache):
    """As :func:`refimpl.l2pool.l2pool_backward`: dp (B, K, OH, OW) -> df (B, K, H, W), {}."""
    f, p, Hw, S = cache
    xp = _cupy_xp(dp, "l2pool_backward")
    check_array("dp", dp, ndim=4, layout="(B, K, OH, OW)")
    check_shape("dp", dp, p.shape, "(B, K, OH, OW)")
    f, p, dp = (xp.ascontiguousarray(a) for a in (f, p, dp))
    df = xp.empty(f.shape, dtype=f.dtype)
    _launch(xp, "l2pool_backward", (f, p, dp, df), df.size,
            f.shape[2], f.shape[3], p.shape[2], p.shape[3], Hw.shape[0], S)
    return df, {}


def _window_sum(xp, a, g, square: bool):
    """(B, K, H, W) -> (B, H, W): refimpl.lcn._local_sum(a.sum(axis=1)) (of a*a if square).
    ``g``: the host (P, P) window, uploaded in a's dtype."""
    B, K, H, W = a.shape
    out = xp.empty((B, H, W), dtype=a.dtype)
    _launch(xp, "lcn_window_sum", (xp.ascontiguousarray(a), xp.asarray(g, dtype=a.dtype), out),
            out.size, K, H, W, g.shape[0], int(square))
    return out


def _window_adjoint(xp, e, g):
    """(B, H, W) -> (B, H, W): refimpl.lcn._local_sum_adjoint(e, g)."""
    B, H, W = e.shape
    out = xp.empty((B, H, W), dtype=e.dtype)
    _launch(xp, "lcn_window_adjoint", (xp.ascontiguousarray(e), xp.asarray(g, dtype=e.dtype), out),
            out.size, H, W, g.shape[0])
    return out


def lcn_forward(h, *, window: int, width: float = 1.0, c: float = 0.01, border: str = "renorm"):
    """As :func:`refimpl.lcn.lcn_forward`: h (B, K, H, W) -> y (B, K, H, W), window sums fused."""
    xp = _cupy_xp(h, "lcn_forward")
    check_array("h", h, ndim=4, layout="(B, K, H, W)")
    _check_hyper(window, width, c, border)
    K = h.shape[1]
    g = gaussian_window(window, width)  # (P, P), host
    mass = _window_mass(h.shape[2:], K, g, border, xp, h.dtype)  # (H, W)
    mean = _window_sum(xp, h, g, False) / mass  # (B, H, W)
    v = h - mean[:, None]  # (B, K, H, W)
    sigma = (_window_sum(xp, v, g, True) / mass) ** 0.5  # (B, H, W)
    d = xp.maximum(sigma, c)
    y = v / d[:, None]
    return y, LCNCache(v, sigma, d, g, mass, float(c))


def lcn_backward(dy, cache: LCNCache):
    """As :func:`refimpl.lcn.lcn_backward` (the same lines, adjoint window sums fused)."""
    v, sigma, d, g, mass, c = cache
    xp = _cupy_xp(dy, "lcn_backward")
    check_array("dy", dy, ndim=4, layout="(B, K, H, W)")
    check_shape("dy", dy, v.shape, "(B, K, H, W)")
    dv = dy / d[:, None]
    dd = -(dy * v).sum(axis=1) / d**2  # (B, H, W)
    dvar = xp.where(sigma > c, dd / (2 * d), 0)
    dv = dv + 2 * v * _window_adjoint(xp, dvar / mass, g)[:, None]
    dh = dv - _window_adjoint(xp, dv.sum(axis=1) / mass, g)[:, None]
    return dh, {}
