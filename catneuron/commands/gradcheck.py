"""``catneuron gradcheck``: the gradient check table of every sublayer in refimpl.SUBLAYERS."""

from __future__ import annotations

import numpy as np


def register(sub) -> None:
    p = sub.add_parser(
        "gradcheck",
        help="check every sublayer's backward against central differences (float64)",
        description="Central differences in float64 against the analytic backward of every "
        "sublayer and the eq. 1 objective, over every parameter and the input, on random "
        "geometries. Exits non-zero if any relative error reaches the tolerance.",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random cases (default 0)")
    p.add_argument("--cases", type=int, default=3, help="random cases per sublayer (default 3)")
    p.add_argument("--only", nargs="*", metavar="NAME", help="check only these sublayers")
    p.set_defaults(func=run)


def run(args) -> int:
    from refimpl import SUBLAYERS
    from refimpl.gradcheck import check_gradients

    names = args.only or list(SUBLAYERS)
    unknown = sorted(set(names) - set(SUBLAYERS))
    if unknown:
        raise ValueError(f"unknown sublayer(s) {unknown}; known: {list(SUBLAYERS)}")
    if args.cases < 1:
        raise ValueError(f"--cases must be >= 1, got {args.cases}")
    rng = np.random.default_rng(args.seed)
    header = f"{'sublayer':<14} {'case':>4}  {'argument':<8} {'shape':<24} {'checked':>7}  {'max rel err':>11}  result"
    print(header)
    print("-" * len(header))
    failures = 0
    for name in names:
        entry = SUBLAYERS[name]
        for i in range(args.cases):
            result = check_gradients(entry, entry.case(rng, np.float64), rng=rng)
            for a in result.args:
                ok = a.rel_err < result.tolerance
                print(f"{name:<14} {i:>4}  {a.argument:<8} {str(a.shape):<24} {a.checked:>7}  "
                      f"{a.rel_err:>11.2e}  {'pass' if ok else 'FAIL'}")
            failures += not result.passed
    total = len(names) * args.cases
    print(f"\ngradcheck: {total - failures} of {total} sublayer cases pass "
          f"(relative error < {result.tolerance:g}, central differences in float64)")
    return 1 if failures else 0
