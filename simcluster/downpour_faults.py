"""Fault plans for Downpour runs, written in TOML (``catneuron cluster train --faults plan.toml``).

::

    seed = 3                      # seeds every link's draws
    [link]                        # every link (a LinkModel; all keys optional)
    drop = 0.05                   # probability a message is lost
    duplicate = 0.05              # ... arrives twice
    reorder = 0.1                 # ... is held back by reorder_delay s (later ones overtake)
    latency = 0.001               # seconds, or {kind = "uniform", a = 0.001, b = 0.003}

    [[links]]                     # one link, or all links from/to a node ("*" = any node)
    src = "replica 2"
    dst = "*"
    nan = 1.0                     # its float arrays arrive as NaN (a bad gradient)

    [[kill]]                      # SIGKILL a process at the start of its step k
    node = "replica 1"            # (for a shard: when its version reaches k)
    at_step = 3

    [[straggler]]                 # a process that sleeps `delay` s every step
    node = "replica 0"
    delay = 0.05

Nodes are named ``"replica R"``, ``"shard S"`` or ``"coordinator"``. Restarting a killed process
is recovery, not a fault: it is set on the command line (``--restarts N --restart-delay T``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .faults import Crash, Dist, FaultPlan, LinkModel, Straggler

_LINK_KEYS = ("latency", "bandwidth", "drop", "duplicate", "reorder", "reorder_delay", "nan")


def node_name(text) -> int | tuple:
    """"replica 1" -> ("replica", 1); "coordinator" -> 0; "*" stays "*"."""
    if text == "*":
        return "*"
    if text in ("coordinator", "driver"):
        return 0
    parts = str(text).split()
    if len(parts) == 2 and parts[0] in ("replica", "shard") and parts[1].isdigit():
        return (parts[0], int(parts[1]))
    raise ValueError(f"fault plan: node must be 'replica R', 'shard S', 'coordinator' or '*', "
                     f"got {text!r}")


def _link(where: str, table: dict) -> LinkModel:
    unknown = set(table) - set(_LINK_KEYS)
    if unknown:
        raise ValueError(f"fault plan: {where} has unknown keys {sorted(unknown)}; "
                         f"known: {list(_LINK_KEYS)}")
    kw = dict(table)
    if isinstance(kw.get("latency"), dict):
        kw["latency"] = Dist(**kw["latency"])
    return LinkModel(**kw)


def _needs(where: str, table: dict, keys: tuple, optional: tuple = ()) -> None:
    missing = [k for k in keys if k not in table]
    unknown = set(table) - set(keys) - set(optional)
    if missing or unknown:
        raise ValueError(f"fault plan: {where} needs keys {list(keys)}"
                         + (f" (missing {missing})" if missing else "")
                         + (f" (unknown {sorted(unknown)})" if unknown else ""))


def fault_plan_from_dict(d: dict) -> FaultPlan:
    """A :class:`FaultPlan` from the TOML layout of the module docstring (nodes by name)."""
    unknown = set(d) - {"seed", "link", "links", "kill", "straggler"}
    if unknown:
        raise ValueError(f"fault plan: unknown tables/keys {sorted(unknown)}; "
                         f"known: seed, link, links, kill, straggler")
    links = {}
    for i, t in enumerate(d.get("links", [])):
        t = dict(t)
        src, dst = node_name(t.pop("src", "*")), node_name(t.pop("dst", "*"))
        links[(src, dst)] = _link(f"links[{i}]", t)
    crashes = []
    for i, t in enumerate(d.get("kill", [])):
        _needs(f"kill[{i}]", t, ("node", "at_step"), ("restart_after",))
        if "restart_after" in t:
            raise ValueError(f"fault plan: kill[{i}].restart_after: restarting is recovery, not "
                             f"a fault: use --restarts N --restart-delay T")
        crashes.append(Crash(node_name(t["node"]), at_step=t["at_step"]))
    stragglers = []
    for i, t in enumerate(d.get("straggler", [])):
        _needs(f"straggler[{i}]", t, ("node", "delay"))
        stragglers.append(Straggler(node_name(t["node"]), t["delay"]))
    return FaultPlan(seed=d.get("seed", 0), default=_link("link", d.get("link", {})), links=links,
                     crashes=tuple(crashes), stragglers=tuple(stragglers))


def load_fault_plan(path) -> FaultPlan:
    """Read a TOML fault plan (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fault plan {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"fault plan {path} is not valid TOML: {err}") from None
    return fault_plan_from_dict(data)
