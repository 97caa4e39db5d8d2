"""Tile math in one process: split the model over a grid of partitions, exchange halos, and get
refimpl's objective and gradients back exactly (float64, 1e-10), in every gradient mode, tied and
untied, with and without LCN, including partitions that own nothing in the deep stages.

The oracle is refimpl.model (model_forward / model_backward): an independent, single-array
implementation. The pieces that travel are also counted and compared with what
simcluster.plan_report predicts from the geometry alone.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from refimpl.config import config_from_dict, load_config
from refimpl.lcn import lcn_forward
from refimpl.model import init_params, model_backward, model_forward, stage_terms
from simcluster.plan import Rect
from simcluster.plan_report import summary
from simcluster.tiled import plan_for, split_params, tiled_step
from simcluster.tiles import (gather_assemble, gather_sends, routes, scatter_sends, scatter_sum,
                              view)

TOL = 1e-10


def reference(cfg, params, x):
    J, cache = model_forward(x, params, cfg)
    _, grads = model_backward(cache, cfg)
    return float(J), grads, stage_terms(cache)


def rel_err(a, b) -> float:
    """Largest |a - b| relative to the size of b (at least 1)."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(1.0, float(np.abs(b).max()))) if b.size else 0.0


def assert_same(out, J, grads, terms):
    assert rel_err(out.J, J) < TOL, (out.J, J)
    assert list(out.grads) == list(grads)  # the canonical keys, in canonical order
    for key in grads:
        assert out.grads[key].shape == grads[key].shape
        assert rel_err(out.grads[key], grads[key]) < TOL, key
    for mine, ref in zip(out.terms, terms):
        for k in ("reconstruction", "sparsity"):
            assert rel_err(mine[k], ref[k]) < TOL, k


def tiny(**overrides):
    return dataclasses.replace(load_config("tiny"), **overrides)


def problem(cfg, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    x = rng.standard_normal((batch, cfg.channels, cfg.image_size, cfg.image_size))
    return params, x


MODES = {
    "joint": {},
    "local": {"gradient": "local"},
    "tied": {"tied": True},
    "no-lcn": {"lcn": False},
    "zero-border": None,  # LCN border "zero" in every stage (built below)
}


def mode_config(mode):
    if mode == "zero-border":
        cfg = tiny()
        return dataclasses.replace(cfg, stages=tuple(dataclasses.replace(s, lcn_border="zero")
                                                     for s in cfg.stages))
    return tiny(**MODES[mode])


@pytest.mark.parametrize("grid", [(1, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("mode", list(MODES))
def test_tiled_step_equals_refimpl(grid, mode):
    cfg = mode_config(mode)
    params, x = problem(cfg)
    out = tiled_step(plan_for(cfg, grid), cfg, params, x)
    assert_same(out, *reference(cfg, params, x))


@pytest.mark.parametrize("mode", ["joint", "local"])
def test_tiles_make_input_gradients_only_where_they_flow_on(monkeypatch, mode):
    """A tile's filter backward makes dx only for the stages whose input gradient goes down to
    the stage below (joint mode, above the first stage): nowhere in local mode."""
    import refimpl.local_filter as lf

    cfg = mode_config(mode)
    params, x = problem(cfg)
    plan = plan_for(cfg, (2, 2))
    calls = []
    real = lf.lc_transpose
    monkeypatch.setattr(lf, "lc_transpose", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tiled_step(plan, cfg, params, x)
    tiles_above_first = sum(not plan.tiles[t][s].filter.empty
                            for t in range(plan.n_partitions) for s in range(1, len(cfg.stages)))
    assert len(calls) == (tiles_above_first if mode == "joint" else 0)
    assert_same(out, *reference(cfg, params, x))  # and the gradients are still right


@pytest.mark.parametrize("overrides", [{}, {"gradient": "local"},
                                       {"gradient": "local", "tied": True, "lcn": False}])
def test_tiled_step_13x13_with_empty_partitions(overrides):
    cfg = tiny(**overrides)
    plan = plan_for(cfg, (13, 13))
    # tiny's last stage has 4x4 filter units and 2x2 pooling units for 169 partitions
    empty = summary(plan)["empty_partitions_per_stage"]
    assert empty[-1] == 169 - 16
    params, x = problem(cfg, batch=2)
    assert_same(tiled_step(plan, cfg, params, x), *reference(cfg, params, x))


@pytest.mark.parametrize("grid", [(2, 2), (3, 2), (13, 13)])
def test_traffic_is_what_the_plan_report_predicts(grid):
    # joint gradient with LCN: exactly the exchanges plan_report counts, cell for cell
    cfg = tiny()
    plan = plan_for(cfg, grid)
    params, x = problem(cfg, batch=2)
    out = tiled_step(plan, cfg, params, x)
    assert out.traffic["bytes"] == 2 * summary(plan, dtype_bytes=8)["bytes_per_example"]
    assert (out.traffic["messages"] == 0) == (plan.n_partitions == 1)


def test_one_partition_sends_nothing():
    cfg = tiny()
    params, x = problem(cfg)
    traffic = tiled_step(plan_for(cfg, (1, 1)), cfg, params, x).traffic
    assert (traffic["messages"], traffic["bytes"]) == (0, 0)


@pytest.mark.parametrize("mode", ["joint", "local"])
def test_an_exchange_sends_one_message_per_neighbour_with_every_part(monkeypatch, mode):
    """Parts that travel together: each neighbour gets one dict per exchange, holding exactly
    the parts the plan gives it; with local gradients a stage's df rides on its last forward
    exchange (3 exchanges a stage), with joint ones the backward follows the forward."""
    import simcluster.tiled as tiled_mod
    from simcluster.tile_program import tile_step

    cfg = mode_config(mode)
    params, x = problem(cfg)
    plan = plan_for(cfg, (2, 2))
    seen = []

    def recording(*args):
        program = tile_step(*args)
        got = None
        while True:
            try:
                ex = program.send(got)
            except StopIteration as stop:
                return stop.value
            seen.append((args[1], ex))
            got = yield ex

    monkeypatch.setattr(tiled_mod, "tile_step", recording)
    out = tiled_step(plan, cfg, params, x)
    assert_same(out, *reference(cfg, params, x))
    names = out.traffic["exchanges"]
    n = len(cfg.stages)
    assert len(names) == (3 * n if mode == "local" else 3 * n + (n - 1) + n + (n - 1))
    if mode == "local":
        assert [nm.split(".")[1] for nm in names[:3]] == ["x", "xhat+f", "resid+p+df"]
    for t, ex in seen:
        parts = ex.name.split("+")
        for v, pieces in ex.sends.items():
            assert v != t and set(pieces) <= set(parts)
        assert len(ex.expect) == len(set(ex.expect))
    assert out.traffic["messages"] == sum(len(ex.sends) for _, ex in seen)


def test_routes_refuse_a_read_region_that_nobody_owns():
    from simcluster.tiles import Routes

    own, reads = Rect((0, 4), (0, 4)), Rect((0, 6), (0, 4))  # rows 4-5 have no owner
    with pytest.raises(ValueError, match="16 of the 24 cells"):
        Routes(own, reads, {}, {})
    Routes(own, reads, {}, {1: Rect((4, 6), (0, 4))})  # with their owner: fine


def test_gather_and_scatter_are_adjoint():
    # <gather(a), b> = <a, scatter(b)> summed over partitions: the backward exchanges are the
    # exact transposes of the forward ones
    cfg = tiny()
    plan = plan_for(cfg, (3, 2))
    rng = np.random.default_rng(1)
    for s in range(len(cfg.stages)):
        for region in ("filter", "pool", "lcn"):
            R = [routes(plan, t, s, region) for t in range(plan.n_partitions)]
            a = [rng.standard_normal((2, 3, *_hw(r.own))) for r in R]
            b = [rng.standard_normal((2, 3, *_hw(r.reads))) for r in R]
            sent = [gather_sends(a[t], R[t]) for t in range(len(R))]
            ga = [gather_assemble(a[t], {u: sent[u][t] for u in R[t].take}, R[t]) for t in range(len(R))]
            back = [scatter_sends(b[t], R[t]) for t in range(len(R))]
            sb = [scatter_sum(b[t].copy(), {v: back[v][t] for v in R[t].give}, R[t])  # (used up)
                  for t in range(len(R))]
            lhs = sum(float((g * bb).sum()) for g, bb in zip(ga, b))
            rhs = sum(float((aa * q).sum()) for aa, q in zip(a, sb))
            assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs)), (s, region)


def test_scatter_sum_adds_in_place_and_leaves_the_sent_cells_alone():
    # a scatter adds the readers' sums into my own cells of `partial` (no copy), and the cells I
    # sent (views of `partial`, perhaps not yet copied by whoever carries them) keep my values
    cfg = tiny()
    plan = plan_for(cfg, (3, 2))
    rng = np.random.default_rng(2)
    R = [routes(plan, t, 0, "filter") for t in range(plan.n_partitions)]
    b = [rng.standard_normal((2, 3, *_hw(r.reads))) for r in R]
    before = [a.copy() for a in b]
    back = [scatter_sends(b[t], R[t]) for t in range(len(R))]
    in_place = 0
    for t in range(len(R)):
        got = {v: back[v][t].copy() for v in R[t].give}
        mine = view(before[t], R[t].reads, R[t].local).copy()
        for v in R[t].give:
            view(mine, R[t].own, R[t].give[v])[...] += got[v]
        out = scatter_sum(b[t], got, R[t])
        assert np.shares_memory(out, b[t]) == (R[t].local == R[t].own and not R[t].own.empty)
        in_place += np.shares_memory(out, b[t])
        np.testing.assert_array_equal(out, mine)
        for u, cells in R[t].take.items():  # what I sent is still my own partial sum
            np.testing.assert_array_equal(view(b[t], R[t].reads, cells),
                                          view(before[t], R[t].reads, cells))
    assert in_place > 0


def _hw(r: Rect):
    return (r.rows[1] - r.rows[0], r.cols[1] - r.cols[0])


def test_split_params_gives_each_filter_unit_to_one_partition():
    cfg = tiny()
    plan = plan_for(cfg, (3, 2))
    params, _ = problem(cfg)
    parts = split_params(plan, cfg, params)
    for key, w in params.items():
        assert sum(p[key].size for p in parts) == w.size
        assert np.isclose(sum(float(p[key].sum()) for p in parts), float(w.sum()), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# LCN on a crop: why the tiles need no change to refimpl's LCN
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("border", ["renorm", "zero"])
def test_lcn_on_a_crop_is_exact_two_radii_from_its_inner_edges(border):
    # A tile runs refimpl's LCN on its read crop as if the crop were the whole plane. Where the
    # crop's edge is the plane's edge that is the same computation; near an inner edge the
    # window mass (renorm) and the values are wrong, but only within 2 r of it (r for the
    # subtractive step's window, r more for the divisive step's): exactly the LCN halo.
    rng = np.random.default_rng(2)
    h = rng.standard_normal((2, 3, 12, 11))
    full, _ = lcn_forward(h, window=3, border=border)
    y0, y1, x0, x1 = 0, 8, 3, 11  # touches the plane's top and right edges
    crop, _ = lcn_forward(h[..., y0:y1, x0:x1], window=3, border=border)
    r2 = 2  # 2 * (window // 2)
    assert rel_err(crop[..., : y1 - y0 - r2, r2:], full[..., y0 : y1 - r2, x0 + r2 : x1]) < 1e-14
    # one radius is not enough: the ring between r and 2 r of the inner edges differs
    ring_crop = crop[..., y1 - y0 - r2 : y1 - y0 - 1, r2:]
    assert rel_err(ring_crop, full[..., y1 - r2 : y1 - 1, x0 + r2 : x1]) > 1e-3


# ---------------------------------------------------------------------------------------------
# Property: random small geometries and grids
# ---------------------------------------------------------------------------------------------


@st.composite
def geometries(draw):
    n_stages = draw(st.integers(1, 2))
    stages = [dict(field=draw(st.integers(1, 4)), stride=draw(st.integers(1, 2)),
                   maps=draw(st.integers(1, 3)), pool_window=draw(st.integers(1, 3)),
                   pool_stride=draw(st.integers(1, 2)), lcn_window=draw(st.sampled_from([1, 3])),
                   lcn_border=draw(st.sampled_from(["renorm", "zero"])))
              for _ in range(n_stages)]
    data = dict(image_size=draw(st.integers(5, 13)), channels=draw(st.integers(1, 2)),
                dtype="float64", gradient=draw(st.sampled_from(["joint", "local"])),
                tied=draw(st.booleans()), lcn=draw(st.booleans()), stages=stages)
    grid = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return data, grid, draw(st.integers(0, 2**16))


@settings(max_examples=25, deadline=None)
@given(geometries())
def test_tiled_step_equals_refimpl_on_random_geometries(case):
    data, grid, seed = case
    try:
        cfg = config_from_dict(data)
    except ValueError:
        assume(False)  # a field or window that does not fit its input
    params, x = problem(cfg, batch=2, seed=seed)
    assert_same(tiled_step(plan_for(cfg, grid), cfg, params, x), *reference(cfg, params, x))


@pytest.mark.parametrize("grid", [(3, 2), (13, 13)])
def test_one_partitions_routes_equal_its_row_of_the_whole_table(grid):
    # a worker computes only its own routes; the one-process executor computes the whole table
    from simcluster.tiles import stage_routes

    plan = plan_for(tiny(), grid)
    for s in range(3):
        for region in ("filter", "pool", "lcn"):
            table = stage_routes(plan, s, region)
            for t in range(plan.n_partitions):
                mine = routes(plan, t, s, region)
                assert mine == table[t]
                assert list(mine.give) == sorted(mine.give) and list(mine.take) == sorted(mine.take)
