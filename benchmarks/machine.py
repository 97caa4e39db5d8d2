"""The machine a benchmark ran on, saved with its figures (``machine_info()``).

Sessions of this project land on different 2-core VMs, and the CPU and the BLAS kernels it picks
change what "the GEMM peak" is: the sublayer goal is a fraction of that peak, measured in the
same run, so a figure means little without them. Each benchmark script imports this module by
name (a script's own directory is first on ``sys.path``).
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's guess elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    """NumPy's BLAS as threadpoolctl sees it: library, version, the kernels' architecture."""
    import numpy  # noqa: F401  (loads the BLAS library, so that threadpoolctl finds it)
    from threadpoolctl import threadpool_info

    keep = ("internal_api", "version", "architecture", "num_threads")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info() if lib.get("user_api") == "blas"]


def machine_info(**extra) -> dict:
    """CPU model, core count, Python, NumPy and BLAS, plus ``extra`` fields."""
    import numpy as np

    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas_info(), **extra}
