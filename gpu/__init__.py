"""gpu: the CuPy backend, multi-GPU placement, and the checks that catch GPU bugs on a CPU.

- :mod:`gpu.device`    ``--device cpu|cuda`` / ``CATNEURON_DEVICE`` -> the namespace ``xp``
                       (:func:`select_backend`), CUDA discovery, ``to_device`` / ``to_host``
- :mod:`gpu.placement` ``--gpus 0,1,...`` -> one device per process, and the pinned child env
- :mod:`gpu.kernels`   fused CuPy kernels for L2 pooling and LCN (refimpl's signatures)
- :mod:`gpu.strict`    the strict CuPy stand-in: a NumPy-backed array that refuses NumPy
- :mod:`gpu.namespace` every ``xp.<name>`` a package uses (by ``ast``), checked against CuPy
- :mod:`gpu.testing`   pytest fixtures to run a test on the stand-in and on CuPy

refimpl needs none of this to run on a GPU: it takes ``xp = get_xp(x)`` from its inputs.
``import gpu`` works without CuPy and without a GPU: CuPy is imported only when ``cuda`` is
selected or probed, and ``cupyx.scipy`` never.
"""

from .device import (
    DEVICES,
    ENV_VAR,
    CudaStatus,
    DeviceInfo,
    DeviceUnavailable,
    cuda_status,
    device_info,
    resolve_device,
    select_backend,
    to_device,
    to_host,
)
from .placement import Assignment, child_env, parse_gpus, pin_env, plan, run_pinned

__all__ = [
    "DEVICES", "ENV_VAR", "CudaStatus", "DeviceInfo", "DeviceUnavailable", "cuda_status",
    "device_info", "resolve_device", "select_backend", "to_device", "to_host",
    "Assignment", "child_env", "parse_gpus", "pin_env", "plan", "run_pinned",
]
