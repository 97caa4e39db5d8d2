"""The partition plan: which partition owns which neurons, and which inputs it must borrow (halos).

DistBelief splits one model replica over machines by cutting the image plane into an R x C grid of
regions (13 x 13 = 169 in our default). In **every** stage a partition owns the units whose
receptive fields are *centred* in its region, with their weights W1 and W2; a deep, small stage
may leave a partition with no units at all.

::

    image (H, W, C) -- stage 1 ------------------------------------------------ stage 2 ...
      input x  --local filter (R, S)-->  f (K maps)  --L2 pool (P, Sp)-->  p  --LCN (L)-->  y = x'
      |owned: pixels       |owned: units centred          |owned: units centred      |owned: same
      | in the region      | in the region (W1, W2)       | in the region            | as p

**Centres.** Every plane of units is a regular grid; unit ``i`` of a plane sits at image
coordinate ``D(i) / 2`` with ``D(i) = A * i + B`` in *half pixels* (integers, so no rounding):
an image pixel ``i`` has ``D = 2 i + 1``; a filter unit reading inputs ``i S .. i S + R - 1`` of a
plane ``(A, B)`` has ``D = A S i + A (R - 1) / 2 + B``; pooling does the same with (P, Sp); LCN
keeps positions. Region ``r`` of ``n`` along an axis spans image pixels
``[floor(r H / n), floor((r + 1) H / n))``, so ownership is a half-open interval per axis, and
every unit has exactly one owner.

**Halos** (per axis, then a rectangle). Forward, a tile's owned units read:

- local filtering: units ``[a, b)`` read inputs ``[a S, (b - 1) S + R)``;
- L2 pooling: units ``[a, b)`` read filter responses ``[a Sp, (b - 1) Sp + P)``;
- LCN: outputs ``[a, b)`` read pooled values ``[a - 2r, b + 2r)`` (clipped), r = L // 2: the
  divisive step's window (r) is applied to the subtractive step's output, itself a window (r).

The **halo** is what a tile reads but does not own, fetched from the owners. **Backward** each
exchange runs in reverse over the same cells: a tile computes partial input gradients over its
whole read region and sends the parts it does not own to their owners, who add them up (the
adjoint of a gather is a scatter-add). The objective (eq. 1) adds two exchanges over the
filter's halo: decoder partial sums W2 f go to the owners of the reconstructed pixels, and the
residuals x_hat - x come back to the units that read them.

Numbers per example (:func:`summary`): parameters per partition, halo cells, bytes exchanged
(all exchanges above, forward and backward), multiply-add flops, and their ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from refimpl.geometry import check_int


@dataclass(frozen=True)
class StageGeometry:
    """One stage's geometry (NOTES.md, Architecture). Defaults: the paper's stage."""

    field: int = 18  # R: local filtering receptive field, in stage-input pixels
    stride: int = 1  # S: local filtering stride (open in the paper)
    maps: int = 8  # K: filters (maps) at each location
    pool: int = 5  # P: L2 pooling window, in filter units
    pool_stride: int = 1  # Sp: pooling stride (open in the paper)
    lcn: int = 5  # L: LCN window (odd, centred)

    def __post_init__(self):
        for name in ("field", "stride", "maps", "pool", "pool_stride", "lcn"):
            check_int(f"StageGeometry.{name}", getattr(self, name), 1)
        if self.lcn % 2 == 0:
            raise ValueError(f"StageGeometry.lcn must be odd (a centred window), got {self.lcn}")


@dataclass(frozen=True)
class InputGeometry:
    """The image: ``height x width`` pixels with ``channels`` channels."""

    height: int = 200
    width: int = 200
    channels: int = 3

    def __post_init__(self):
        for name in ("height", "width", "channels"):
            check_int(f"InputGeometry.{name}", getattr(self, name), 1)


# ---------------------------------------------------------------------------------------------
# Intervals (half-open, per axis) and rectangles
# ---------------------------------------------------------------------------------------------

Interval = tuple  # (lo, hi), lo <= hi; empty when lo == hi


def _ilen(iv: Interval) -> int:
    return max(0, iv[1] - iv[0])


def _meet(a: Interval, b: Interval) -> Interval:
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, max(lo, hi))


@dataclass(frozen=True)
class Rect:
    """Rows ``[r0, r1)`` x columns ``[c0, c1)`` of one plane of units."""

    rows: Interval
    cols: Interval

    @property
    def area(self) -> int:
        return _ilen(self.rows) * _ilen(self.cols)

    @property
    def empty(self) -> bool:
        return self.area == 0

    def meet(self, other: "Rect") -> "Rect":
        return Rect(_meet(self.rows, other.rows), _meet(self.cols, other.cols))

    def contains(self, i: int, j: int) -> bool:
        return self.rows[0] <= i < self.rows[1] and self.cols[0] <= j < self.cols[1]


# ---------------------------------------------------------------------------------------------
# Per axis: sizes, centres, ownership, what a range of units reads
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plane:
    """One plane of units along both axes: its size and the centre map D(i) = A i + B (half pixels)."""

    name: str  # "input", "filter", "pool"
    size: tuple  # (rows, cols)
    channels: int
    A: int
    B: int

    def centre2(self, i: int) -> int:
        """Twice the image coordinate of unit i's centre."""
        return self.A * i + self.B


def _owned(plane: Plane, axis: int, lo_px: int, hi_px: int) -> Interval:
    """Units of ``plane`` along ``axis`` whose centres lie in image pixels [lo_px, hi_px)."""
    n = plane.size[axis]

    def first_at_or_after(d2: int) -> int:  # smallest i with A i + B >= d2
        return min(n, max(0, -((plane.B - d2) // plane.A)))

    return (first_at_or_after(2 * lo_px), first_at_or_after(2 * hi_px))


def reads_filter(iv: Interval, st: StageGeometry) -> Interval:
    """Stage-input indices read by filter units ``iv`` (forward)."""
    return (iv[0] * st.stride, (iv[1] - 1) * st.stride + st.field) if _ilen(iv) else (0, 0)


def reads_pool(iv: Interval, st: StageGeometry) -> Interval:
    """Filter-unit indices read by pooling units ``iv``."""
    return (iv[0] * st.pool_stride, (iv[1] - 1) * st.pool_stride + st.pool) if _ilen(iv) else (0, 0)


def reads_lcn(iv: Interval, st: StageGeometry, n: int) -> Interval:
    """Pooled indices that LCN outputs ``iv`` depend on (plane of ``n``), radius 2 * (L // 2)."""
    r2 = 2 * (st.lcn // 2)
    return (max(0, iv[0] - r2), min(n, iv[1] + r2)) if _ilen(iv) else (0, 0)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StagePlanes:
    input: Plane
    filter: Plane
    pool: Plane  # also the LCN output, and the next stage's input


@dataclass(frozen=True)
class StageTile:
    """What one partition owns and reads in one stage (rectangles of unit indices)."""

    input: Rect  # owned stage-input cells (image pixels in stage 1, LCN outputs after)
    filter: Rect  # owned filter units: their W1 and W2 live here
    pool: Rect  # owned pooling units = owned LCN outputs = owned next-stage input
    filter_reads: Rect  # stage-input cells the owned filter units read
    pool_reads: Rect  # filter units the owned pooling units read
    lcn_reads: Rect  # pooled cells the owned LCN outputs depend on


@dataclass(frozen=True)
class PartitionPlan:
    image: InputGeometry
    stages: tuple  # of StageGeometry
    grid: tuple  # (rows, cols) of regions
    planes: tuple  # of StagePlanes, one per stage
    tiles: tuple  # tiles[t][s]: StageTile of partition t = row * cols + col in stage s
    regions: tuple  # regions[t]: Rect of image pixels

    @property
    def n_partitions(self) -> int:
        return self.grid[0] * self.grid[1]


def stage_planes(image: InputGeometry, stages) -> tuple:
    """The planes of every stage, with their sizes and centre maps; errors name the bad stage."""
    out = []
    size, channels, A, B = (image.height, image.width), image.channels, 2, 1
    for s, st in enumerate(stages):
        if not isinstance(st, StageGeometry):
            raise TypeError(f"stages[{s}] must be a StageGeometry, got {st!r}")
        if st.field > min(size):
            raise ValueError(f"stage {s + 1}: field {st.field} does not fit its input {size[0]}x{size[1]}")
        inp = Plane("input", size, channels, A, B)
        fsize = tuple((n - st.field) // st.stride + 1 for n in size)
        if st.pool > min(fsize):
            raise ValueError(f"stage {s + 1}: pool window {st.pool} does not fit the filter output "
                             f"{fsize[0]}x{fsize[1]}")
        filt = Plane("filter", fsize, st.maps, A * st.stride, A * (st.field - 1) // 2 + B)
        psize = tuple((n - st.pool) // st.pool_stride + 1 for n in fsize)
        pool = Plane("pool", psize, st.maps, filt.A * st.pool_stride, filt.A * (st.pool - 1) // 2 + filt.B)
        out.append(StagePlanes(inp, filt, pool))
        size, channels, A, B = psize, st.maps, pool.A, pool.B
    return tuple(out)


def _parse_grid(grid) -> tuple[int, int]:
    if isinstance(grid, str):
        parts = grid.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"grid must look like '13x13', got {grid!r}")
        grid = tuple(int(p) for p in parts)
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2):
        raise ValueError(f"grid must be (rows, cols) or 'RxC', got {grid!r}")
    return check_int("grid rows", grid[0], 1), check_int("grid cols", grid[1], 1)


def make_plan(image: InputGeometry, stages, grid=(13, 13)) -> PartitionPlan:
    """Partition ``image`` processed by ``stages`` over a ``grid`` of regions (see module docstring)."""
    if not isinstance(image, InputGeometry):
        raise TypeError(f"image must be an InputGeometry, got {image!r}")
    stages = tuple(stages)
    if not stages:
        raise ValueError("stages must hold at least one StageGeometry")
    R, C = _parse_grid(grid)
    if R > image.height or C > image.width:
        raise ValueError(f"grid {R}x{C} has more regions than the image has pixels "
                         f"({image.height}x{image.width}): some regions would be empty")
    planes = stage_planes(image, stages)
    row_px = [(r * image.height // R, (r + 1) * image.height // R) for r in range(R)]
    col_px = [(c * image.width // C, (c + 1) * image.width // C) for c in range(C)]
    tiles, regions = [], []
    for r in range(R):
        for c in range(C):
            regions.append(Rect(row_px[r], col_px[c]))
            per_stage = []
            for st, pl in zip(stages, planes):
                own = [
                    Rect(_owned(p, 0, *row_px[r]), _owned(p, 1, *col_px[c]))
                    for p in (pl.input, pl.filter, pl.pool)
                ]
                f, p = own[1], own[2]
                per_stage.append(StageTile(
                    input=own[0], filter=f, pool=p,
                    filter_reads=Rect(reads_filter(f.rows, st), reads_filter(f.cols, st)),
                    pool_reads=Rect(reads_pool(p.rows, st), reads_pool(p.cols, st)),
                    lcn_reads=Rect(reads_lcn(p.rows, st, pl.pool.size[0]), reads_lcn(p.cols, st, pl.pool.size[1])),
                ))
            tiles.append(tuple(per_stage))
    return PartitionPlan(image, stages, (R, C), planes, tuple(tiles), tuple(regions))


def geometry_from_config(cfg) -> tuple[InputGeometry, tuple]:
    """The plan's view of a :class:`refimpl.config.ModelConfig`: the image and every stage.

    A model without LCN (``cfg.lcn = False``) has no LCN halo: its window counts as 1.
    """
    image = InputGeometry(cfg.image_size, cfg.image_size, cfg.channels)
    stages = tuple(StageGeometry(st.field, st.stride, st.maps, st.pool_window, st.pool_stride,
                                 st.lcn_window if cfg.lcn else 1) for st in cfg.stages)
    return image, stages
