"""``catneuron reproduce``: the paper's experiments in miniature, written up as a report.

    catneuron reproduce --quick --out runs/reproduce                  # minutes on 2 cores
    catneuron reproduce --full --seeds 5 --out runs/reproduce-full    # more cores or a GPU
    catneuron reproduce --quick --config tiny --out /tmp/r            # seconds (the test)

Trains the model in a face world and a positive-control world over several seeds, finds each
network's best neuron on a validation set, scores it and every baseline of the paper's Table 1
on a test set, runs the fine-tuning experiment of Table 2, and writes report.md, results.json
and the figures to --out (see catneuron.reproduce and catneuron.report).
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the paper's experiments in miniature; writes report.md, results.json, figures",
        description="Train in a face world and a positive-control world over several seeds; "
        "score the best neuron against the paper's baselines (chance, random weights, best "
        "linear filter, first stage, no LCN, no faces) with neurons chosen on a validation "
        "split and scored on a test split; fine-tune on the labelled set (Table 2).",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small model, minutes on 2 cores (the default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="larger model, more frames and steps (for more cores or a GPU)")
    p.add_argument("--seeds", type=int, default=None,
                   help="training seeds to repeat over (default 3; at least 1)")
    p.add_argument("--config", default=None,
                   help="model config name or path (default: configs/quick.toml or full.toml)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run, mode="quick")


def run(args) -> int:
    from catneuron.reproduce import reproduce

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    results = reproduce(args.mode, seeds=args.seeds, config=args.config, out=args.out,
                        progress=not args.no_progress)
    for world in ("faces", "control"):
        s = results[world]
        print(f"{world:8s} best neuron {s['best_neuron']:.3f} (at init {s['at_init']:.3f}), "
              f"linear filter {s['best_linear_filter']:.3f}, random weights "
              f"{s['random_weights']:.3f}, chance {s['chance']:.3f}")
    print(f"report: {args.out}/report.md (results.json and figures beside it); "
          f"{results['seconds'] / 60:.1f} min")
    return 0
