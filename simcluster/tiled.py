"""Model parallelism in one process: every partition's tile program, run in lockstep.

::

    params, x --split--> partition 0: tile_step ... yield Exchange ... return TileResult
                         partition 1: tile_step ... yield Exchange ... return TileResult
                         ...                  |  ^
                                              v  |  one loop round per exchange: collect
                                      hand the pieces over    every partition's sends,
                                                              resume each with its pieces
    J, grads <--assemble-- TileResults

This is the oracle for the process version (:mod:`simcluster.coordinator`): the very same tile
programs and the very same pieces, only handed over by a loop instead of the transport. The
helpers that split the parameters and the input by owner and put the results back together
(:func:`split_params`, :func:`split_input`, :func:`assemble`) are shared by both.

Nothing here asks which device it is on (``xp = get_xp(...)``): with params and x on a GPU (or
the strict CuPy stand-in, :mod:`gpu.strict`) every tile, halo piece and gradient stays there.
"""

from __future__ import annotations

from dataclasses import dataclass

from refimpl.backend import get_xp
from refimpl.config import ModelConfig
from refimpl.model import check_params, param_shapes

from .plan import PartitionPlan, geometry_from_config, make_plan
from .tile_program import TileResult, plan_routes, tile_step


def plan_for(cfg: ModelConfig, grid) -> PartitionPlan:
    """The partition plan of a model config over ``grid`` ("RxC" or (rows, cols))."""
    image, stages = geometry_from_config(cfg)
    return make_plan(image, stages, grid)


def split_params(plan: PartitionPlan, cfg: ModelConfig, params: dict) -> list[dict]:
    """Per partition, the slices of every weight array on its owned filter units (copies, on
    the params' device)."""
    check_params(params, cfg)
    xp = get_xp(*params.values())
    out = []
    for t in range(plan.n_partitions):
        mine = {}
        for key in param_shapes(cfg):
            F = plan.tiles[t][int(key[len("stage"):key.index(".")])].filter
            mine[key] = xp.ascontiguousarray(params[key][F.rows[0]:F.rows[1], F.cols[0]:F.cols[1]])
        out.append(mine)
    return out


def split_input(plan: PartitionPlan, x) -> list:
    """Per partition, its owned pixels of the minibatch x (B, C, H, W): (B, C, h, w) copies, on
    x's device."""
    xp = get_xp(x)
    out = []
    for t in range(plan.n_partitions):
        own = plan.tiles[t][0].input
        out.append(xp.ascontiguousarray(x[..., own.rows[0]:own.rows[1], own.cols[0]:own.cols[1]]))
    return out


@dataclass(frozen=True)
class StepOutput:
    """The objective and gradients of one minibatch, assembled from every partition."""

    J: float  # sum over stages of reconstruction + lambda * sparsity
    grads: dict  # refimpl's canonical params dict of gradients
    terms: list  # per stage {"J", "reconstruction", "sparsity"}, as refimpl.model.stage_terms
    traffic: dict = None  # per step: "messages" and "bytes" between partitions, "exchanges" (names)


def assemble(plan: PartitionPlan, cfg: ModelConfig, results: list[TileResult], dtype) -> StepOutput:
    """Put every partition's :class:`TileResult` back together (partition order, so a sum does
    not depend on which partition answered first). The gradients are allocated on the device
    the partitions' gradients are on."""
    xp = get_xp(*(g for res in results for g in res.grads.values()))
    grads = {key: xp.zeros(shape, dtype=dtype) for key, shape in param_shapes(cfg).items()}
    for t, res in enumerate(results):
        for key, g in res.grads.items():
            F = plan.tiles[t][int(key[len("stage"):key.index(".")])].filter
            grads[key][F.rows[0]:F.rows[1], F.cols[0]:F.cols[1]] = g
    terms = []
    for s in range(len(cfg.stages)):
        rec = sum(res.reconstruction[s] for res in results)
        spa = sum(res.sparsity[s] for res in results)
        terms.append({"J": rec + cfg.lam * spa, "reconstruction": rec, "sparsity": spa})
    return StepOutput(sum(term["J"] for term in terms), grads, terms)


def tiled_step(plan: PartitionPlan, cfg: ModelConfig, params: dict, x) -> StepOutput:
    """Objective and gradients of minibatch x (B, C, H, W), computed tile by tile in one process.

    ``traffic`` counts the messages that would travel between different partitions and their
    bytes, and names the exchanges in order (``stage{s}.{name}``).
    """
    parts, xs = split_params(plan, cfg, params), split_input(plan, x)
    partners = plan_routes(plan)
    programs = [tile_step(plan, t, cfg, parts[t], xs[t], partners[t]) for t in range(plan.n_partitions)]
    requests = [next(p) for p in programs]
    results: list = [None] * len(programs)
    messages = nbytes = 0
    names = []
    while True:
        labels = {(q.stage, q.name) for q in requests}
        if len(labels) != 1:
            raise RuntimeError(f"tile programs out of step: {sorted(labels)}")
        names.append("stage{}.{}".format(*labels.pop()))
        inbox = [{} for _ in programs]
        for t, q in enumerate(requests):
            for v, pieces in q.sends.items():  # one message: {part: array}
                inbox[v][t] = {name: a.copy() for name, a in pieces.items()}  # (views)
                messages += 1
                nbytes += sum(a.nbytes for a in pieces.values())
        done = 0
        for t, p in enumerate(programs):
            try:
                requests[t] = p.send(inbox[t])
            except StopIteration as stop:
                results[t] = stop.value
                done += 1
        if done == len(programs):
            break
        if done:
            raise RuntimeError("tile programs out of step: some finished before the others")
    out = assemble(plan, cfg, results, x.dtype)
    return StepOutput(out.J, out.grads, out.terms,
                      {"messages": messages, "bytes": nbytes, "exchanges": names})
