"""``catneuron devices``: which backends and CUDA devices this machine offers, and which is chosen."""

from __future__ import annotations

import json
import os


def register(sub) -> None:
    p = sub.add_parser(
        "devices",
        help="list the array backends (cpu, cuda, strict) and the CUDA devices found",
        description="Lists the backends --device can select (cpu: NumPy; cuda: CuPy on a CUDA "
        "device; strict: the CuPy stand-in used by the tests), the CUDA devices CuPy sees "
        "(name, compute capability, memory), and the device chosen by CATNEURON_DEVICE. "
        "Always exits 0: it reports, it does not require.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def run(args) -> int:
    import numpy as np

    from gpu.device import ENV_VAR, cuda_status, device_info, resolve_device

    status = cuda_status()
    gpus = device_info()
    env_value = os.environ.get(ENV_VAR)
    try:
        chosen, env_error = resolve_device(None), None
    except (TypeError, ValueError) as err:
        chosen, env_error = None, str(err)
    backends = {
        "cpu": {"available": True, "detail": f"NumPy {np.__version__}"},
        "cuda": {"available": status.available, "detail": status.reason,
                 "cupy": status.cupy_version},
        "strict": {"available": True, "detail": "the CuPy stand-in for tests (NumPy underneath)"},
    }
    if args.json:
        print(json.dumps({"backends": backends, "cuda_devices": [g._asdict() for g in gpus],
                          ENV_VAR: env_value, "default_device": chosen, "error": env_error}, indent=2))
        return 0
    print(f"{'backend':<8} {'available':<9}  detail")
    for name, b in backends.items():
        print(f"{name:<8} {'yes' if b['available'] else 'no':<9}  {b['detail']}")
    if gpus:
        print(f"\n{'cuda':<5} {'name':<28} {'cc':>4} {'memory':>10} {'free':>10}")
        for g in gpus:
            print(f"{g.index:<5} {g.name:<28} {g.compute_capability:>4} "
                  f"{_gib(g.total_bytes):>10} {_gib(g.free_bytes):>10}")
    shown = "(unset)" if env_value is None else repr(env_value)
    if env_error:
        print(f"\n{ENV_VAR}={shown}: invalid: {env_error}")
    else:
        print(f"\n{ENV_VAR}={shown}: default device {chosen} (--device overrides it)")
    return 0
