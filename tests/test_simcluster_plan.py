"""The partition plan: ownership by receptive-field centre, halos, and the report.

Hand-checked cases first, then properties: every unit is owned exactly once (against an
independent centre computation from pixel sets), and a tile's read region is exactly the set of
inputs that change its owned outputs in refimpl's own sublayers (found by perturbation).
"""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refimpl import l2pool_forward, lcn_forward, local_filter_forward
from simcluster.plan import InputGeometry, Rect, StageGeometry, make_plan, reads_lcn
from simcluster.plan_report import draw_tiling, format_table, halo, partition_stats, summary


# --------------------------------------------------------------------------------------------
# Hand-checked
# --------------------------------------------------------------------------------------------


def test_hand_checked_8x8_field4_stride2_on_2x2():
    # filter unit i reads pixels [2i, 2i+4): centres at 2, 4, 6 (pixel-edge coordinates);
    # regions [0, 4) and [4, 8): unit 0 -> region 0, units 1, 2 -> region 1 (4 is in [4, 8)).
    plan = make_plan(InputGeometry(8, 8, 1), [StageGeometry(4, 2, 1, 1, 1, 1)], (2, 2))
    t00, t01, t10, t11 = (plan.tiles[t][0] for t in range(4))
    assert t00.filter == Rect((0, 1), (0, 1))
    assert t11.filter == Rect((1, 3), (1, 3))
    assert t01.filter == Rect((0, 1), (1, 3))
    assert t11.filter_reads == Rect((2, 8), (2, 8))
    assert t11.input == Rect((4, 8), (4, 8))
    assert halo(plan, 0, 0, "filter").cells == 0  # reads [0,4)^2, owns it
    assert halo(plan, 1, 0, "filter").cells == 4 * 6 - 4 * 4  # reads rows [0,4) x cols [2,8)
    h = halo(plan, 3, 0, "filter")
    assert h.cells == 6 * 6 - 4 * 4
    assert h.sources == {0: 4, 1: 8, 2: 8}  # [2,4)^2 from t00, [2,4)x[4,8) from t01, ...


def test_hand_checked_bytes_and_flops_per_example():
    # the 8x8 case above: filter halos of 0 + 8 + 8 + 20 = 36 cells, 1 channel, float64; one
    # stage, so it is both the first (no filter grad) and the last (no LCN grad); pooling and
    # LCN windows of 1 read nothing outside. Exchanges: filter input, decoder partials, residual.
    plan = make_plan(InputGeometry(8, 8, 1), [StageGeometry(4, 2, 1, 1, 1, 1)], (2, 2))
    summ = summary(plan)
    assert summ["bytes_per_example"] == 3 * 36 * 8
    # 9 filter units x (encoder + decoder) x (forward + 2 x backward) x 2 K C R^2, plus 9 pool/LCN
    # units x 3 x (2 P^2 + 6 L^2)
    assert summ["flops_per_example"] == 9 * 2 * 3 * 2 * 16 + 9 * 3 * (2 + 6)
    assert summ["max_neighbours"] == 3


def test_lcn_reads_twice_the_radius_clipped():
    s = StageGeometry(lcn=5)
    assert reads_lcn((10, 12), s, 30) == (6, 16)
    assert reads_lcn((0, 3), s, 30) == (0, 7)
    assert reads_lcn((28, 30), s, 30) == (24, 30)
    assert reads_lcn((5, 5), s, 30) == (0, 0)  # no units, reads nothing


def test_partition_with_no_units_in_a_deep_small_stage():
    # 16 px, field 8, stride 1: 9 filter units centred at 4, 5, ..., 12; the 4-px region [0, 4)
    # owns none of them along either axis ([12, 16) owns the one centred at 12).
    plan = make_plan(InputGeometry(16, 16, 1), [StageGeometry(8, 1, 2, 2, 1, 3)], (4, 4))
    t0 = plan.tiles[0][0]
    assert t0.filter.empty and t0.pool.empty and t0.filter_reads.empty
    assert halo(plan, 0, 0, "filter").cells == 0
    assert partition_stats(plan, 0)["params"] == 0
    assert plan.tiles[15][0].filter == Rect((8, 9), (8, 9))
    assert summary(plan)["empty_partitions_per_stage"] == [16 - 9]  # row 0 and column 0


def test_paper_geometry_parameter_count_matches_the_whole_model():
    image, stages = InputGeometry(200, 200, 3), [StageGeometry()] * 3
    summ = summary(make_plan(image, stages, (13, 13)))
    # whole model: per stage OH*OW*K*C*R*R for W1 and again for W2
    expected, (h, c) = 0, (200, 3)
    for st in stages:
        oh = (h - st.field) // st.stride + 1
        expected += 2 * oh * oh * st.maps * c * st.field**2
        h, c = (oh - st.pool) // st.pool_stride + 1, st.maps
    assert summ["params_total"] == expected
    assert summ["partitions"] == 169
    assert 0 < summ["comm_comp_ratio"] < 1


def test_single_partition_exchanges_nothing():
    summ = summary(make_plan(InputGeometry(40, 40, 2), [StageGeometry(6, 2, 3, 2, 1, 3)] * 2, (1, 1)))
    assert summ["bytes_per_example"] == 0 and summ["max_neighbours"] == 0


def test_report_and_drawing(tmp_path):
    plan = make_plan(InputGeometry(48, 48, 3), [StageGeometry(8, 2, 4, 3, 1, 3)] * 2, "3x3")
    text = format_table(plan)
    assert len(text.splitlines()) == 1 + 9 + 1 and "bytes/flop" in text
    path = tmp_path / "tiling.png"
    draw_tiling(plan, path, image=np.random.default_rng(0).random((48, 48)))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="tile must be"):
        draw_tiling(plan, path, tile=9)


@pytest.mark.parametrize("kwargs, match", [
    ({"field": 0}, "StageGeometry.field must be >= 1"),
    ({"lcn": 4}, "lcn must be odd"),
    ({"stride": 1.5}, "StageGeometry.stride must be an int"),
])
def test_bad_stage_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StageGeometry(**kwargs)


def test_bad_plans():
    img = InputGeometry(20, 20, 1)
    with pytest.raises(ValueError, match="field 30 does not fit"):
        make_plan(img, [StageGeometry(field=30)], (2, 2))
    with pytest.raises(ValueError, match="stage 2: pool window 5 does not fit"):
        make_plan(img, [StageGeometry(8, 1, 2, 3, 1, 3), StageGeometry(8, 1, 2, 5, 1, 3)], (2, 2))
    with pytest.raises(ValueError, match="more regions than the image has pixels"):
        make_plan(img, [StageGeometry(4, 1, 1, 1, 1, 1)], (21, 1))
    with pytest.raises(ValueError, match="grid must look like"):
        make_plan(img, [StageGeometry(4, 1, 1, 1, 1, 1)], "3by3")
    with pytest.raises(TypeError, match=r"stages\[0\] must be a StageGeometry"):
        make_plan(img, [{"field": 4}], (2, 2))
    with pytest.raises(ValueError, match="InputGeometry.channels must be >= 1"):
        InputGeometry(20, 20, 0)


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------


@st.composite
def geometries(draw, max_stages=3):
    """An image, 1-3 stages that fit it, and a grid."""
    h = draw(st.integers(6, 40))
    w = draw(st.integers(6, 40))
    size, stages = (h, w), []
    for _ in range(draw(st.integers(1, max_stages))):
        field = draw(st.integers(1, min(size)))
        stride = draw(st.integers(1, 3))
        fsize = tuple((n - field) // stride + 1 for n in size)
        pool = draw(st.integers(1, min(fsize)))
        pstride = draw(st.integers(1, 2))
        psize = tuple((n - pool) // pstride + 1 for n in fsize)
        stages.append(StageGeometry(field, stride, 2, pool, pstride, draw(st.sampled_from([1, 3, 5]))))
        size = psize
        if min(size) < 2:
            break
    grid = (draw(st.integers(1, min(h, 6))), draw(st.integers(1, min(w, 6))))
    return InputGeometry(h, w, 1), stages, grid


def _centres_by_pixel_sets(image, stages):
    """Independently of plan.py: each unit's centre as the mean image coordinate of the multiset
    of pixels in its receptive field (filtering and pooling only; LCN keeps positions), per axis,
    kept as (sum of pixel centres, number of pixels). Returns [stage][axis][plane] -> centres."""
    per_stage = []
    planes = ([(Fraction(2 * i + 1, 2), 1) for i in range(image.height)],
              [(Fraction(2 * j + 1, 2), 1) for j in range(image.width)])

    def gather(units, field, stride):
        return [(sum(units[i * stride + u][0] for u in range(field)),
                 sum(units[i * stride + u][1] for u in range(field)))
                for i in range((len(units) - field) // stride + 1)]

    for s in stages:
        out = []
        for axis in (0, 1):
            inp = planes[axis]
            filt = gather(inp, s.field, s.stride)
            pool = gather(filt, s.pool, s.pool_stride)
            out.append([[a / n for a, n in plane] for plane in (inp, filt, pool)])
        per_stage.append(out)
        planes = (gather(gather(planes[0], s.field, s.stride), s.pool, s.pool_stride),
                  gather(gather(planes[1], s.field, s.stride), s.pool, s.pool_stride))
    return per_stage


@given(geometries())
def test_every_unit_owned_exactly_once_by_the_region_of_its_centre(case):
    image, stages, grid = case
    plan = make_plan(image, stages, grid)
    brute = _centres_by_pixel_sets(image, stages)
    R, C = grid
    edges = ([r * image.height // R for r in range(R + 1)], [c * image.width // C for c in range(C + 1)])
    for s in range(len(stages)):
        for k, name in enumerate(("input", "filter", "pool")):
            owner_rows = [next(r for r in range(R) if edges[0][r] <= x < edges[0][r + 1])
                          for x in brute[s][0][k]]
            owner_cols = [next(c for c in range(C) if edges[1][c] <= x < edges[1][c + 1])
                          for x in brute[s][1][k]]
            count = np.zeros((len(owner_rows), len(owner_cols)), dtype=int)
            for t in range(R * C):
                rect = getattr(plan.tiles[t][s], name)
                count[rect.rows[0]:rect.rows[1], rect.cols[0]:rect.cols[1]] += 1
                for i in range(*rect.rows):
                    assert owner_rows[i] == t // C, (s, name, i)
                for j in range(*rect.cols):
                    assert owner_cols[j] == t % C, (s, name, j)
            assert (count == 1).all(), (s, name)


@given(geometries(max_stages=2))
def test_halo_sources_partition_the_halo(case):
    plan = make_plan(*case)
    for t in range(plan.n_partitions):
        for s in range(len(plan.stages)):
            for which in ("filter", "pool", "lcn"):
                h = halo(plan, t, s, which)
                assert sum(h.sources.values()) == h.cells


def _dependencies(forward, in_shape, rng):
    """dep[o] = set of input cells that change output cell o (perturbation, float64)."""
    x = rng.standard_normal((1, 1, *in_shape)) + 3.0
    y0 = forward(x)
    deps = {}
    for i in range(in_shape[0]):
        for j in range(in_shape[1]):
            xp = x.copy()
            xp[0, 0, i, j] += 0.5
            changed = np.argwhere(np.abs(forward(xp) - y0)[0].max(axis=0) > 1e-12)
            for oi, oj in changed:
                deps.setdefault((oi, oj), set()).add((i, j))
    return deps


@pytest.mark.parametrize("sublayer", ["filter", "pool", "lcn"])
def test_read_region_is_exactly_what_refimpl_reads(sublayer):
    # one stage, 3x3 grid; the bounding box of the inputs that change a tile's owned outputs
    # (found by perturbing refimpl's own sublayers) must equal the tile's read rectangle
    rng = np.random.default_rng(1)
    stage = StageGeometry(field=4, stride=2, maps=2, pool=3, pool_stride=1, lcn=3)
    plan = make_plan(InputGeometry(23, 21, 1), [stage], (3, 3))
    pl = plan.planes[0]
    if sublayer == "filter":
        W1 = rng.standard_normal((*pl.filter.size, 1, 1, stage.field, stage.field))
        forward = lambda x: local_filter_forward(x, {"W1": W1}, stride=stage.stride)[0]  # noqa: E731
        in_shape, own, reads = pl.input.size, "filter", "filter_reads"
    elif sublayer == "pool":
        forward = lambda x: l2pool_forward(x, window=stage.pool, stride=stage.pool_stride, eps=1e-2)[0]  # noqa: E731
        in_shape, own, reads = pl.filter.size, "pool", "pool_reads"
    else:
        forward = lambda x: lcn_forward(x, window=stage.lcn, width=1.0)[0]  # noqa: E731
        in_shape, own, reads = pl.pool.size, "pool", "lcn_reads"
    deps = _dependencies(forward, in_shape, rng)
    for t in range(plan.n_partitions):
        tile = plan.tiles[t][0]
        rect = getattr(tile, own)
        cells = set().union(*(deps[(i, j)] for i in range(*rect.rows) for j in range(*rect.cols))) \
            if not rect.empty else set()
        want = getattr(tile, reads)
        if not cells:
            assert want.empty
            continue
        rows = [c[0] for c in cells]
        cols = [c[1] for c in cells]
        assert (min(rows), max(rows) + 1) == want.rows and (min(cols), max(cols) + 1) == want.cols, t


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_plan_of_a_model_config_counts_the_models_parameters(name):
    from refimpl.config import load_config
    from refimpl.model import param_count
    from simcluster.plan import geometry_from_config

    cfg = load_config(name)
    image, stages = geometry_from_config(cfg)
    grid = (13, 13) if name == "paper" else (3, 2)
    assert summary(make_plan(image, stages, grid))["params_total"] == param_count(cfg)
