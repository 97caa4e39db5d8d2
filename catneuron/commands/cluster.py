"""``catneuron cluster step|check``: one model replica split over a grid of partition processes.

    catneuron cluster step  --grid 13x13 --config mini        # 169 processes, one minibatch
    catneuron cluster check --grid 3x2 --config tiny --dtype float64
    catneuron cluster check --grid 2x2 --device strict     # partitions on the CuPy stand-in
    catneuron cluster step --grid 2x2 --device cuda --gpus 0,1   # partition t on GPU t % 2

``step`` runs one minibatch through :class:`simcluster.Coordinator` and prints the start-up
time, the step time (compute and wait per partition), the bytes moved and the peak memory.
``check`` runs the same minibatch through the partitions and through single-process refimpl,
prints the largest absolute and relative difference of the objective and of every gradient, and
exits 1 above the tolerance. The minibatch is seeded Gaussian noise of the input's shape: both
commands compare or time computations, they do not learn. ``--device cuda`` (or
``CATNEURON_DEVICE=cuda``) runs every partition on a GPU, one each round robin over the visible
devices (``--gpus 0,1,...``: over those); without one it stops with a one-line error before
starting any process. ``cluster train`` (Downpour SGD) is added by
:mod:`catneuron.commands.cluster_train` when present.
"""

from __future__ import annotations

import importlib
import importlib.util

DEFAULT_TOL = {"float64": 1e-10, "float32": 1e-4}


def register(sub) -> None:
    p = sub.add_parser(
        "cluster",
        help="run the model split over a grid of partition processes (step, check, train)",
        description="The simulated DistBelief cluster: 'step' times one minibatch on RxC "
        "partition processes, 'check' compares their objective and gradients with refimpl's.",
    )
    csub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    s = csub.add_parser("step", help="one minibatch on RxC partition processes: times, bytes, memory",
                        description="Start RxC partition processes, run one minibatch forward "
                        "and backward, print start-up time, step time, bytes moved, peak memory.")
    _common(s, default_config="mini", default_grid="13x13")
    s.add_argument("--steps", type=int, default=1, help="minibatches to run (default: 1)")
    s.add_argument("--trace", default=None, metavar="PATH.json",
                   help="write a Chrome trace of the run (open in ui.perfetto.dev)")
    s.set_defaults(func=run_step)
    c = csub.add_parser("check", help="compare the partitions' objective and gradients with refimpl",
                        description="Run one minibatch through RxC partition processes and "
                        "through single-process refimpl; print the largest absolute and relative "
                        "difference of the objective and of every gradient; exit 1 above --tol.")
    _common(c, default_config="tiny", default_grid="3x2")
    c.add_argument("--tol", type=float, default=None,
                   help="relative tolerance (default: 1e-10 in float64, 1e-4 in float32)")
    c.set_defaults(func=run_check)
    if importlib.util.find_spec("catneuron.commands.cluster_train") is not None:
        importlib.import_module("catneuron.commands.cluster_train").register_cluster(csub)


def _common(p, default_config: str, default_grid: str) -> None:
    p.add_argument("--config", default=default_config,
                   help=f"config name or path (default: {default_config})")
    p.add_argument("--grid", default=default_grid, metavar="RxC",
                   help=f"partition grid (default: {default_grid})")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="override the config's dtype")
    p.add_argument("--batch", type=int, default=None,
                   help="minibatch size (default: the config's train.batch_size)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the minibatch")
    p.add_argument("--start-method", choices=["forkserver", "spawn"], default="forkserver")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds one step may take before it fails (default: 300)")
    add_device_flags(p, "partitions")
    add_backend_flags(p, "partitions")


def add_device_flags(p, what: str, gpus_note: str = "") -> None:
    """--device and --gpus (shared with 'cluster train')."""
    p.add_argument("--device", default=None, metavar="{cpu,cuda,strict}",
                   help=f"what the {what} compute on (default: CATNEURON_DEVICE, else cpu; "
                   "strict is the CuPy stand-in for tests)")
    p.add_argument("--gpus", default=None, metavar="0,1,...",
                   help=f"with --device cuda: the GPUs to deal the {what} over, round robin "
                   f"(default: every visible one){gpus_note}")


def add_backend_flags(p, what: str) -> None:
    """--backend and --address (shared with 'cluster train')."""
    p.add_argument("--backend", choices=["process", "ray"], default="process",
                   help=f"run the {what} as OS processes on this machine (default) or as Ray "
                   "actors (needs the 'ray' extra)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                   help="with --backend ray: the Ray cluster to join (auto: the one `ray start` "
                   "made); default: start a local Ray")


def _setup(args):
    import numpy as np

    from refimpl.config import load_config
    from refimpl.model import init_params

    cfg = load_config(args.config, **({"dtype": args.dtype} if args.dtype else {}))
    batch = cfg.train.batch_size if args.batch is None else args.batch
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    rng = np.random.default_rng(args.seed)
    params = init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.channels, cfg.image_size, cfg.image_size)).astype(cfg.dtype)
    return cfg, params, x


def _coordinator(args, cfg, trace: bool):
    from gpu.device import resolve_device
    from simcluster.coordinator import Coordinator

    return Coordinator(cfg, args.grid, start_method=args.start_method, trace=trace,
                       timeout=args.timeout, device=resolve_device(args.device), gpus=args.gpus,
                       backend=args.backend, address=args.address)


def _mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def run_step(args) -> int:
    import resource

    from simcluster.coordinator import StepFailed

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    cfg, params, x = _setup(args)
    c = _coordinator(args, cfg, trace=bool(args.trace))
    kind = f"processes ({args.start_method}" if args.backend == "process" else "actors (Ray"
    print(f"config {cfg.name} ({cfg.dtype}), minibatch {x.shape[0]}, grid {c.plan.grid[0]}x"
          f"{c.plan.grid[1]} = {c.plan.n_partitions} partition {kind}, "
          f"device {c.device})")
    try:
        with c:
            print(f"start-up: {c.startup_s:.2f} s until every partition was ready")
            c.set_params(params)
            for _ in range(args.steps):
                st = c.step(x)
                comp = [p["compute_s"] for p in st.partitions]
                wait = [p["wait_s"] for p in st.partitions]
                print(f"step {c.k}: {st.seconds:.3f} s  J = {st.output.J:.6g}; per partition "
                      f"compute {min(comp):.3f}..{max(comp):.3f} s, wait {min(wait):.3f}.."
                      f"{max(wait):.3f} s")
                msgs = sum(p["messages"] for p in st.partitions)
                print(f"  bytes moved: {st.halo_bytes:,} in {msgs:,} halo messages between partitions, "
                      f"{st.coordinator_bytes:,} between the coordinator and the partitions")
            mem = c.memory()
        peak = [p["peak_rss_kib"] for p in mem]
        pss = sum(p["pss_kib"] for p in mem)
        me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"peak memory: partitions {_mib(sum(peak) / len(peak))} mean, {_mib(max(peak))} max "
              f"peak RSS each; {_mib(pss)} proportional (PSS) in total; coordinator {_mib(me)} "
              f"peak RSS")
    except StepFailed as err:
        print(f"catneuron cluster step: error: {err}")
        return 1
    if args.trace:
        c.write_trace(args.trace)
        print(f"wrote {args.trace}")
    return 0


def run_check(args) -> int:
    import numpy as np

    from refimpl.model import model_backward, model_forward
    from simcluster.coordinator import StepFailed

    cfg, params, x = _setup(args)
    tol = DEFAULT_TOL[cfg.dtype] if args.tol is None else args.tol
    if not tol > 0:
        raise ValueError(f"--tol must be > 0, got {tol}")
    try:
        with _coordinator(args, cfg, trace=False) as c:
            c.set_params(params)
            out = c.step(x).output
    except StepFailed as err:
        print(f"catneuron cluster check: error: {err}")
        return 1
    J, cache = model_forward(x, params, cfg)
    _, grads = model_backward(cache, cfg, input_grad=False)
    rows = [("objective J", np.float64(out.J), np.float64(J))]
    rows += [(f"grad {k}", out.grads[k], g) for k, g in grads.items()]
    print(f"config {cfg.name} ({cfg.dtype}, gradient {cfg.gradient}, tied {cfg.tied}, lcn {cfg.lcn}), "
          f"minibatch {x.shape[0]}, grid {c.plan.grid[0]}x{c.plan.grid[1]}, device {c.device}: "
          f"simcluster vs refimpl")
    print(f"{'quantity':<18} {'shape':<24} {'max abs diff':>12} {'max rel diff':>12}  result")
    worst = 0.0
    for name, mine, ref in rows:
        mine, ref = np.asarray(mine, np.float64), np.asarray(ref, np.float64)
        abs_diff = float(np.abs(mine - ref).max())
        rel = abs_diff / max(float(np.abs(ref).max()), np.finfo(np.float64).tiny)
        worst = max(worst, rel)
        print(f"{name:<18} {str(ref.shape):<24} {abs_diff:>12.3e} {rel:>12.3e}  "
              f"{'pass' if rel <= tol else 'FAIL'}")
    ok = worst <= tol
    print(f"cluster check: {'pass' if ok else 'FAIL'} (largest relative difference {worst:.3e}, "
          f"tolerance {tol:g})")
    return 0 if ok else 1
