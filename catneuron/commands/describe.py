"""``catneuron describe --config NAME|PATH``: shapes, parameters and FLOPs of every sublayer.

Counts come from the config's geometry alone: nothing is allocated, so the paper config (about
a billion weights) is described instantly. FLOPs are per example, forward pass, a multiply-add
counting 2; the elementwise work of pooling and LCN is counted approximately (noted per row).
A training step costs about 3x the forward FLOPs of the locally connected products (forward,
input gradient, weight gradient).
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "describe",
        help="print every sublayer's shapes, parameter count and FLOPs (allocates nothing)",
        description="Per stage: local filtering (W1), the decoder (W2) of the eq. 1 objective, "
        "L2 pooling and LCN, with input/output shapes per example, learned parameters and "
        "forward FLOPs per example; then totals. --config takes a name in configs/ or a path.",
    )
    p.add_argument("--config", default="paper", help="config name (configs/NAME.toml) or path "
                   "to a .toml file (default: paper)")
    p.set_defaults(func=run)


def sublayer_rows(cfg) -> list[dict]:
    """One row per sublayer (and decoder) of every stage: name, input, output, params, flops."""
    from refimpl.config import stage_geometry

    rows = []
    for s, (st, geo) in enumerate(zip(cfg.stages, stage_geometry(cfg))):
        C, H, _ = geo["input"]
        K, OH, _ = geo["filter"]
        _, PH, _ = geo["pool"]
        lc_weights = OH * OH * K * C * st.field**2
        lc_flops = 2 * lc_weights  # one multiply-add per weight
        P, L = st.pool_window, st.lcn_window
        rows.append({"name": f"stage{s}.filter", "what": "local filtering W1",
                     "input": geo["input"], "output": geo["filter"],
                     "params": lc_weights, "flops": lc_flops})
        decoder_params = 0 if cfg.tied else lc_weights
        rows.append({"name": f"stage{s}.decoder", "what": "decoder W2 (eq. 1)" + (" = W1" if cfg.tied else ""),
                     "input": geo["filter"], "output": geo["input"],
                     "params": decoder_params, "flops": lc_flops + 3 * C * H * H})
        rows.append({"name": f"stage{s}.pool", "what": f"L2 pooling {P}x{P}/{st.pool_stride}",
                     "input": geo["filter"], "output": geo["pool"], "params": 0,
                     "flops": K * OH * OH + K * PH * PH * (2 * P * P + 1)})
        if cfg.lcn:
            rows.append({"name": f"stage{s}.lcn", "what": f"LCN {L}x{L}",
                         "input": geo["pool"], "output": geo["pool"], "params": 0,
                         "flops": 2 * (K + 2 * L * L) * PH * PH + 6 * K * PH * PH})
    return rows


def _shape(t) -> str:
    return "x".join(str(n) for n in t)


def run(args) -> int:
    from refimpl.config import load_config

    cfg = load_config(args.config)
    rows = sublayer_rows(cfg)
    print(f"config {cfg.name}: {cfg.image_size}x{cfg.image_size}x{cfg.channels} input, "
          f"{cfg.n_stages} stages, gradient={cfg.gradient}, tied={cfg.tied}, lcn={cfg.lcn}, "
          f"preprocess={cfg.preprocess}, dtype={cfg.dtype}")
    header = f"{'sublayer':<16} {'what':<24} {'input (C,H,W)':>14} {'output':>14} {'params':>15} {'FLOPs/example':>15}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<16} {r['what']:<24} {_shape(r['input']):>14} {_shape(r['output']):>14} "
              f"{r['params']:>15,} {r['flops']:>15,}")
    print("-" * len(header))
    params = sum(r["params"] for r in rows)
    encoder = sum(r["params"] for r in rows if r["name"].endswith(".filter"))
    flops = sum(r["flops"] for r in rows)
    lc = sum(2 * r["params"] for r in rows if r["name"].endswith(".filter"))
    itemsize = 4 if cfg.dtype == "float32" else 8
    print(f"{'total':<16} {'':<24} {'':>14} {'':>14} {params:>15,} {flops:>15,}")
    print(f"\nlearned parameters: {params:,} ({params / 1e9:.3g} billion); encoder W1 connections: "
          f"{encoder:,} ({encoder / 1e9:.3g} billion)")
    print(f"forward FLOPs per example: {flops / 1e9:.3g} GFLOP; a training step is about "
          f"{(flops + 4 * lc) / 1e9:.3g} GFLOP per example "
          f"(each locally connected product, W1 and W2, costs 3x its forward)")
    print(f"memory for weights in {cfg.dtype}: {params * itemsize / 2**30:.3g} GiB "
          f"(x3 with gradients and Adagrad sums)")
    return 0
