"""Downpour SGD (Dean et al. 2012; the paper's training): N replicas, S parameter-server shards.

::

                         +--------------------- driver (node 0) ----------------------+
                         |  starts the group; grants actions (deterministic, sync);   |
                         |  Commit(step) to shards (sync); watches every process;     |
                         |  progress display, metrics.jsonl, trace, fault summary     |
                         +-----^---------------------------------------------^--------+
               Grant/Done,     |                                             | Commit/Committed,
               Progress        |                                             | Snapshot/ShardReport
         +---------------------+-------------+                     +---------+-------------------+
         |                     |             |                     |         |                   |
    +----+------+        +-----+-----+  +----+------+         +----+----+ +--+------+     +------+--+
    | replica 0 |        | replica 1 |  | replica 4 |  Fetch  | shard 0 | | shard 1 | ... | shard   |
    | data[0::] |  ...   | its fifth |  |           |-------->| w[0:a]  | | w[a:b]  |     |  S-1    |
    | cached w  |        |           |  |           |<--------| Adagrad | |         |     |         |
    +-----------+        +-----------+  +-----------+ Params, | version | |         |     |         |
                  every replica talks to every shard  Push,   +---------+ +---------+     +---------+
                                                      Ack

**Shards** (:mod:`simcluster.ps`) own contiguous ranges of the canonical parameter vector
(refimpl.model.flatten order) and apply pushes with refimpl.optim's SGD or Adagrad.
**Replicas** (:mod:`simcluster.replica`) each train on their own part of the frames, fetch
every P steps and push the gradients summed over G steps. **The driver** (:func:`run_downpour`,
this module) is the process group's parent. Modes:

- ``async`` (Downpour): replicas run free, shards apply pushes as they come;
- ``bounded``: the same, but a shard rejects (and counts) a push more than ``max_staleness``
  versions old;
- ``sync``: every step, all live replicas compute from the same parameters; shards buffer the
  pushes and apply their sum (in replica order) when the driver commits the step.

``deterministic=True`` makes async and bounded runs replayable: the driver grants one action at
a time to a replica drawn by a seeded :class:`~simcluster.schedule.Scheduler`, so every message
follows from the seed (faults too: the fault plan's draws are per link and per message). Sync
runs are deterministic anyway.

**Faults** come from a :class:`~simcluster.faults.FaultPlan` and happen only in the transport:
drops, duplicates, reordering and latency on links, NaN payloads, crashes at a step, stragglers.
**Recovery**: every request is retried after a timeout (duplicates are recognised by their
ids: a push's id is the step that completed it, so a restarted replica redoing a pushed step is
a duplicate too); the driver watches every process (an exit is seen at once through its
process sentinel, silence through timeouts) and restarts a dead one up to ``max_restarts``
times (:meth:`~simcluster.group.ProcessGroup.restart`). A restarted replica asks where to start
and fetches fresh parameters; a restarted shard restores its checkpoint and replays its
write-ahead log (:mod:`simcluster.ps_checkpoint`; acknowledgement follows persistence, so no
acknowledged update is lost). Without restarts a dead replica is dropped and the others go
on; a dead shard, or no replica left, stops the run with a :class:`DownpourError` and a final
checkpoint of what the live shards hold. Shards reject non-finite pushes and quarantine a
repeat offender.

**Devices**: ``device="cuda"`` computes every replica's gradient on a GPU, one GPU per replica
dealt round robin over ``gpus`` (default: every visible one; :func:`gpu.placement.plan`); the
shards stay on the host with ``CUDA_VISIBLE_DEVICES=""``. Every process is pinned before it
imports CuPy, and a missing GPU is a one-line :class:`gpu.DeviceUnavailable` before any process
starts. ``"strict"`` runs the replicas on the CuPy stand-in (:mod:`gpu.strict`), for tests. The
transfers are in :mod:`simcluster.replica`; every message carries host arrays.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gpu.device import DEVICES
from gpu.placement import parse_gpus, process_pins, run_pinned
from refimpl.config import ModelConfig
from refimpl.model import flatten, init_params, model_forward, unflatten
from refimpl.train import prepare_frames

from .faults import FaultPlan
from .group import ProcessGroup, RemoteError, Role
from .messages import Error
from .ps import MODES, ShardSpec, shard_main, shard_ranges
from .ps_messages import (Commit, Committed, Done, Grant, Hello, Progress, Resume, ShardReport,
                          Snapshot)
from .replica import ReplicaSpec, replica_main
from .ray_backend import make_group
from .schedule import Scheduler
from .transport import PeerDied, PeerUnreachable, RecvTimeout, sweep


class DownpourError(RuntimeError):
    """The run could not finish (a shard died, every replica died, a process went silent)."""


@dataclass(frozen=True)
class DownpourConfig:
    """How to run Downpour SGD (the model and optimiser come from the ModelConfig)."""

    replicas: int = 5  # N, each on its own 1/N of the frames
    shards: int = 4  # S parameter-server shards
    fetch_every: int = 1  # P: fetch parameters every P steps
    push_every: int = 1  # G: push summed gradients every G steps
    steps: int = 20  # steps per replica
    mode: str = "async"  # async | sync | bounded
    deterministic: bool = False  # seeded scheduler decides every interleaving (async, bounded)
    max_staleness: int = 4  # bounded mode: pushes older than this many versions are rejected
    seed: int = 0  # the scheduler's seed (weights and data come from cfg.train.seed)
    retry_timeout: float = 0.25  # seconds before a request or grant is resent
    max_retries: int = 40  # resends before a process counts as silent
    nan_limit: int = 3  # non-finite pushes before a replica is quarantined
    max_restarts: int = 0  # restarts per process before it is given up (replica) or fatal (shard)
    restart_delay: float = 0.0  # seconds between a death and the restart
    shard_checkpoints: bool = False  # shards log and checkpoint (needed to restart a shard)
    checkpoint_every: int = 20  # logged pushes between shard checkpoints
    start_method: str = "forkserver"
    device: str = "cpu"  # what replicas compute on: cpu | cuda | strict (the CuPy stand-in)
    gpus: str | tuple | None = None  # with device="cuda": GPU ids, "0,1" or a list (default: every visible)

    def __post_init__(self):
        for name in ("replicas", "shards", "fetch_every", "push_every", "steps", "max_retries",
                     "nan_limit", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "steps" else 1):
                raise ValueError(f"DownpourConfig.{name} must be an int >= "
                                 f"{0 if name == 'steps' else 1}, got {v!r}")
        if self.mode not in MODES:
            raise ValueError(f"DownpourConfig.mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.max_staleness, bool) or not isinstance(self.max_staleness, int) \
                or self.max_staleness < 0:
            raise ValueError(f"DownpourConfig.max_staleness must be an int >= 0, got {self.max_staleness!r}")
        if isinstance(self.max_restarts, bool) or not isinstance(self.max_restarts, int) \
                or self.max_restarts < 0:
            raise ValueError(f"DownpourConfig.max_restarts must be an int >= 0, got {self.max_restarts!r}")
        if not 0 <= self.restart_delay < 60:
            raise ValueError(f"DownpourConfig.restart_delay must be in [0, 60) s, got {self.restart_delay!r}")
        if not self.retry_timeout > 0:
            raise ValueError(f"DownpourConfig.retry_timeout must be > 0 s, got {self.retry_timeout!r}")
        if self.restart_delay > 0.5 * self.retry_timeout * self.max_retries:
            raise ValueError(f"DownpourConfig.restart_delay ({self.restart_delay:g} s) must be at most "
                             f"half of retry_timeout x max_retries "
                             f"({self.retry_timeout * self.max_retries:g} s), or replicas give up on "
                             f"a restarting shard first")
        if self.device not in DEVICES:
            raise ValueError(f"DownpourConfig.device must be one of {DEVICES}, got {self.device!r}")
        parse_gpus(self.gpus)  # ValueError naming --gpus
        if self.gpus is not None and self.device != "cuda":
            raise ValueError(f"DownpourConfig.gpus needs device='cuda', got device={self.device!r}")

    @property
    def granted(self) -> bool:
        return self.mode == "sync" or self.deterministic

    def pins(self) -> tuple[list, list]:
        """The environments pinning each replica and each shard (None unless ``cuda``): replicas
        round robin over the GPUs, shards on the host (:func:`gpu.placement.process_pins`).
        Raises DeviceUnavailable when ``cuda`` is asked for and missing."""
        pins = process_pins(self.device, self.gpus, replicas=self.replicas, shards=self.shards)
        return pins[:self.replicas], pins[self.replicas:]


@dataclass
class DownpourResult:
    params: dict  # the final parameters, canonical keys
    vec: np.ndarray  # (n_params,) the same, as the canonical vector
    sha256: str  # of vec as little-endian float bytes
    versions: list  # per shard
    shard_stats: list  # per shard: counts by status, staleness histogram, quarantined
    history: list  # Progress records as dicts (with "t": seconds since start)
    dead: dict  # node description -> how it died
    transport: dict  # summed transport counters (sent, dropped, duplicated, poisoned, ...)
    seconds: float
    opt_state: dict = field(default_factory=dict)  # the shards' optimiser state, canonical keys
    objective: float | None = None  # per example on the evaluation frames, if asked
    trace: dict = field(default_factory=dict)
    events: list = field(default_factory=list)  # every death: when, how, restart and recovery

    def staleness_histogram(self) -> dict:
        total: Counter = Counter()
        for st in self.shard_stats:
            total.update({int(k): v for k, v in st["staleness"].items()})
        return dict(sorted(total.items()))

    def summary(self) -> list[str]:
        """Human-readable lines; the last is ``params sha256: <hex>``."""
        counts: Counter = Counter()
        for st in self.shard_stats:
            counts.update(st["counts"])
        quarantined = sorted({r for st in self.shard_stats for r in st["quarantined"]})
        retries = sum(last["retries"] for last in _last_progress(self.history).values())
        t = self.transport
        lines = [f"{len(self.versions)} shards at versions {self.versions} after {self.seconds:.1f} s",
                 "pushes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                 f"staleness of applied updates: {self.staleness_histogram()}",
                 f"network: {t.get('sent', 0)} messages, {t.get('dropped', 0)} dropped, "
                 f"{t.get('duplicated', 0)} duplicated, {t.get('poisoned', 0)} poisoned; "
                 f"{retries} requests resent by replicas"]
        for e in self.events:
            if "restart_s" not in e:
                lines.append(f"fault: {e['how']}; the run went on without {e['node']}")
                continue
            line = (f"fault: {e['how']}; restarted in {e['restart_s']:.2f} s "
                    f"(down {e['down_s']:.2f} s)")
            if "restored_version" in e:
                line += (f"; restored version {e['restored_version']} = checkpoint's "
                         f"{e['checkpoint_version']} + "
                         f"{e['restored_version'] - e['checkpoint_version']} updates replayed from "
                         f"its log ({e['replayed']} logged messages)"
                         f"{', corrupted checkpoints skipped: ' + str(len(e['corrupted'])) if e['corrupted'] else ''}"
                         f"; updates lost: {e['lost']}")
            lines.append(line)
        if quarantined:
            lines.append(f"fault: replicas {quarantined} quarantined (non-finite gradients)")
        if self.objective is not None:
            lines.append(f"final objective per example: {self.objective:.6g}")
        lines.append(f"params sha256: {self.sha256}")
        return lines


def _with_losses(events: list, reports: dict) -> list:
    """Add to each shard restart what its restore found (from the shard's last restore report)
    and the updates lost: versions replicas had seen acknowledged before the death, minus the
    version restored (a lower bound: replicas report what they saw)."""
    for e in events:
        role, rank = e["node"].split()
        restore = reports.get(int(rank)).stats.get("restore") if role == "shard" and int(rank) in reports else None
        if restore and "restart_s" in e:
            e["restored_version"] = restore["restored_version"]
            e["checkpoint_version"] = restore["version"]
            e["replayed"] = restore["replayed"]
            e["corrupted"] = restore["corrupted"]
            e["lost"] = max(0, e.get("acked_version_before", 0) - restore["restored_version"])
    return events


def _final_checkpoint(cfg: ModelConfig, drv: "_Driver", out: Path | None):
    """After a fatal error: gather what the live shards hold and write checkpoint.npz (None if a
    shard does not answer or there is no output directory)."""
    if out is None:
        return None
    try:
        reports = drv.snapshot(max_tries=8)
    except Exception:  # noqa: BLE001 - best effort on the way out
        return None
    if len(reports) != drv.d.shards:
        return None
    from refimpl.checkpoint import save_checkpoint

    vec = np.concatenate([reports[s].values for s in range(drv.d.shards)])
    opt = ({} if reports[0].opt is None else
           unflatten(np.concatenate([reports[s].opt for s in range(drv.d.shards)]), cfg))
    return save_checkpoint(out / "checkpoint.npz", config=cfg, step=max(drv.steps_seen.values(), default=0),
                           params=unflatten(vec, cfg), opt_state=opt,
                           rng=np.random.default_rng(cfg.train.seed))


def _last_progress(history: list) -> dict:
    last = {}
    for h in history:
        last[h["replica"]] = h
    return last


def params_sha256(vec: np.ndarray) -> str:
    """SHA-256 of a parameter vector as little-endian float bytes (canonical layout)."""
    a = np.ascontiguousarray(vec, dtype=vec.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def evaluate(cfg: ModelConfig, vec: np.ndarray, data: np.ndarray) -> float:
    """The model's objective J per example on ``data`` (N, C, H, W)."""
    J, _ = model_forward(data, unflatten(vec, cfg), cfg)
    return float(J) / data.shape[0]


def initial_state(cfg: ModelConfig, n_replicas: int):
    """The starting vector and each replica's minibatch Generator state.

    Exactly as refimpl.train: one Generator seeded by ``cfg.train.seed`` draws the weights; its
    continuation draws replica 0's minibatches (so 1 replica is sequential training), replica r's
    stream is that one jumped r times (independent streams).
    """
    rng = np.random.default_rng(cfg.train.seed)
    vec = flatten(init_params(cfg, rng), cfg)
    bitgen = rng.bit_generator
    states = [bitgen.state] + [bitgen.jumped(r).state for r in range(1, n_replicas)]
    return vec, states


class _Driver:
    def __init__(self, group: ProcessGroup, dcfg: DownpourConfig, on_progress: Callable):
        self.g, self.d = group, dcfg
        self.on_progress = on_progress
        self.replica_nodes = {r: group.node_of(("replica", r)) for r in range(dcfg.replicas)}
        self.shard_nodes = {s: group.node_of(("shard", s)) for s in range(dcfg.shards)}
        self.live = set(self.replica_nodes)  # replicas still running
        self.finished: set[int] = set()
        self.dead: dict[str, str] = {}
        self.action = 0
        self.req = 0
        self.last_progress = time.monotonic()
        self.steps_seen: dict[int, int] = {}  # replica -> last step reported
        self.seen_versions: dict[int, int] = {}  # shard -> highest version replicas reported
        self.restarts: dict[str, int] = {}  # "replica 1" -> restarts so far
        self.events: list[dict] = []  # every death: when, how, restart time
        self.t0 = time.monotonic()

    def _died(self, node: int, how: str) -> None:
        """A process died: restart it (while its budget lasts) or go on without it (a replica)."""
        t_dead = time.monotonic()
        self.g.swept += sweep(self.g.run_id, reader=node)
        role, rank = self.g.roster[node]
        name = f"{role} {rank}"
        event = {"node": name, "how": how, "t": round(t_dead - self.t0, 6)}
        self.events.append(event)
        if self.restarts.get(name, 0) < self.d.max_restarts and (role == "replica" or self.d.shard_checkpoints):
            self.restarts[name] = self.restarts.get(name, 0) + 1
            time.sleep(self.d.restart_delay)
            event["restart_s"] = round(self.g.restart(node), 6)
            event["down_s"] = round(time.monotonic() - t_dead, 6)
            if role == "shard":
                event["acked_version_before"] = self.seen_versions.get(rank, 0)
            return
        self.dead[name] = how
        if role == "shard":
            why = ("restarts exhausted" if self.d.shard_checkpoints and self.d.max_restarts
                   else "shard restarts need max_restarts > 0 and shard_checkpoints")
            raise DownpourError(f"{how}; a dead shard stops the run ({why})")
        self.live.discard(rank)
        if not self.live:
            raise DownpourError(f"every replica died (last: {how}; restarts: {self.restarts})")

    def recv(self, timeout: float, where) -> object | None:
        """The next message for which ``where`` holds, or None after ``timeout`` s or a death
        (handled here). Progress messages are handed to on_progress on the way."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                env = self.g.transport.recv(max(0.0, deadline - time.monotonic()),
                                            lambda e: isinstance(e.body, (Error, Progress, Hello))
                                            or where(e))
            except PeerDied as err:
                self._died(err.node, str(err))
                return None
            except RecvTimeout:
                return None
            if isinstance(env.body, Error):
                raise RemoteError(env.body, self.g.describe(env.src))
            if isinstance(env.body, Hello):  # a (re)started replica asks where to start
                self.send(env.src, Resume(env.body.replica, self.steps_seen.get(env.body.replica, 0)))
                continue
            if not isinstance(env.body, Progress):
                return env
            self.last_progress = time.monotonic()
            if env.body.step <= self.steps_seen.get(env.body.replica, 0):
                if env.body.finished and env.body.replica not in self.finished:
                    self.finished.add(env.body.replica)  # a repeated last report: its first was lost
                continue  # a duplicate (the network may duplicate any message)
            self.steps_seen[env.body.replica] = env.body.step
            for shard, v in enumerate(env.body.versions):
                self.seen_versions[shard] = max(self.seen_versions.get(shard, 0), v)
            if env.body.finished:
                self.finished.add(env.body.replica)
            self.on_progress(env.body)

    def send(self, node: int, msg) -> bool:
        try:
            self.g.transport.send(node, msg)
            return True
        except PeerUnreachable:
            return False

    def ask(self, nodes: dict, make, match, what: str, max_tries: int | None = None) -> dict:
        """Send ``make(key)`` to each ``nodes[key]``; collect one matching reply per key, resending
        after timeouts; keys whose process dies are dropped."""
        pending = dict(nodes)
        for key, node in pending.items():
            self.send(node, make(key))
        got, tries = {}, 0
        while pending:
            env = self.recv(self.d.retry_timeout, lambda e: match(e) in pending)
            if env is not None and env.src == pending.get(match(env)):
                got[match(env)] = env.body
                pending.pop(match(env))
            for key in [k for k, n in pending.items()  # replicas that died meanwhile
                        if self.g.roster[n][0] == "replica" and k not in self.live]:
                pending.pop(key)
            if env is None and pending:
                tries += 1
                if tries > (self.d.max_retries * 4 if max_tries is None else max_tries):
                    raise DownpourError(f"{what}: no answer from "
                                        f"{[self.g.describe(n) for n in pending.values()]} after "
                                        f"{tries} timeouts of {self.d.retry_timeout:g} s")
                for key, node in pending.items():
                    self.send(node, make(key))
        return got

    def _grant(self, replicas, what: str) -> dict:
        self.action += 1
        action = self.action
        nodes = {r: self.replica_nodes[r] for r in replicas}
        got = self.ask(nodes, lambda r: Grant(action, what),
                       lambda e: e.body.replica if isinstance(e.body, Done)
                       and e.body.action == action else None, f"grant {action}")
        for r, done in got.items():
            self.steps_seen[r] = max(self.steps_seen.get(r, 0), done.step)
            if done.finished:
                self.finished.add(r)
        return got

    # -- the three ways to run -------------------------------------------------------------------

    def run_free(self) -> None:
        limit = max(60.0, self.d.retry_timeout * self.d.max_retries * 4)
        while self.live - self.finished:
            self.recv(1.0, lambda e: False)  # Progress and deaths are handled inside
            if time.monotonic() - self.last_progress > limit:
                raise DownpourError(f"no progress from replicas "
                                    f"{sorted(self.live - self.finished)} for {limit:.0f} s")

    def run_deterministic(self, scheduler: Scheduler) -> None:
        while self.live - self.finished:
            r = scheduler.pick(self.live - self.finished)
            self._grant([r], "next")

    def run_sync(self) -> None:
        for k in range(self.d.steps):
            acting = sorted(self.live - self.finished)
            if not acting:
                break
            done = self._grant(acting, "step")
            if (k + 1) % self.d.push_every == 0 or k + 1 == self.d.steps:
                replicas = tuple(sorted(done))
                self.ask(self.shard_nodes, lambda s: Commit(k, replicas),
                         lambda e: e.body.shard if isinstance(e.body, Committed)
                         and e.body.step == k else None, f"commit of step {k}")

    def snapshot(self, max_tries: int | None = None) -> dict:
        self.req += 1
        req = self.req
        return self.ask(self.shard_nodes, lambda s: Snapshot(req),
                        lambda e: e.body.shard if isinstance(e.body, ShardReport)
                        and e.body.req == req else None, "snapshot", max_tries)


def run_downpour(cfg: ModelConfig, frames: np.ndarray, dcfg: DownpourConfig, *,
                 faults: FaultPlan | None = None, out_dir: str | Path | None = None,
                 on_progress: Callable | None = None, eval_frames: int = 0,
                 trace: bool = False, backend: str = "process",
                 address: str | None = None) -> DownpourResult:
    """Train ``cfg`` on ``frames`` (N, C, H, W) with Downpour SGD (module docstring).

    ``backend="ray"`` runs the same roles as Ray actors (:mod:`simcluster.ray_backend`; Ray
    restarts a dead actor up to ``max_restarts`` times), on the Ray cluster at ``address``.

    With ``out_dir``: metrics.jsonl (one line per replica step) and trace.json (Chrome trace,
    if ``trace``) go there. ``on_progress(progress, t)`` is called for every Progress message.
    ``eval_frames`` > 0: the final objective per example on the first that many frames.
    """
    if not isinstance(dcfg, DownpourConfig):
        raise TypeError(f"dcfg must be a DownpourConfig, got {type(dcfg).__name__}")
    replica_pins, shard_pins = dcfg.pins()  # a missing GPU fails here, before any process
    data, _ = prepare_frames(cfg, frames)
    if data.shape[0] < dcfg.replicas:
        raise ValueError(f"frames: {data.shape[0]} frames cannot be split among "
                         f"{dcfg.replicas} replicas")
    vec0, rng_states = initial_state(cfg, dcfg.replicas)
    ranges = shard_ranges(vec0.shape[0], dcfg.shards)
    parts = np.array_split(data, dcfg.replicas)  # replica r trains on its own part
    t = cfg.train
    out = Path(out_dir) if out_dir is not None else None
    store, store_tmp = None, None
    if dcfg.shard_checkpoints:  # each shard logs and checkpoints itself here (a fresh run: empty)
        store = str((out / "shards").resolve()) if out is not None else (store_tmp := tempfile.mkdtemp(prefix="shards-"))
        if store_tmp is None:
            shutil.rmtree(store, ignore_errors=True)
    # on a GPU run the shards are pinned to the host too (CUDA_VISIBLE_DEVICES=""): no GPU for them
    shard_fns = [shard_main if pin is None else functools.partial(run_pinned, pin, shard_main)
                 for pin in shard_pins]
    roles = [Role("shard", s, shard_fns[s], (ShardSpec(s, lo, hi, vec0[lo:hi].copy(), t.optimizer,
                                                     t.lr, t.adagrad_floor, dcfg.mode,
                                                     dcfg.max_staleness, dcfg.nan_limit,
                                                     store_dir=store,
                                                     checkpoint_every=dcfg.checkpoint_every),))
             for s, (lo, hi) in enumerate(ranges)]
    roles += [Role("replica", r, replica_main,
                   (ReplicaSpec(r, cfg, parts[r], rng_states[r], tuple(ranges), dcfg.steps,
                                dcfg.fetch_every, dcfg.push_every, dcfg.granted,
                                dcfg.retry_timeout, dcfg.max_retries, device=dcfg.device,
                                pin=replica_pins[r]),))
              for r in range(dcfg.replicas)]
    metrics = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        metrics = open(out / "metrics.jsonl", "w")
    history: list[dict] = []
    t0 = time.monotonic()

    def progress(p: Progress):
        line = {"t": round(time.monotonic() - t0, 6), **asdict(p)}
        line["versions"] = list(p.versions)
        history.append(line)
        if metrics is not None:
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
        if on_progress is not None:
            on_progress(p, line["t"])

    group = make_group(backend, roles, address=address, max_restarts=dcfg.max_restarts,
                       start_method=dcfg.start_method, faults=faults, trace=trace)
    drv = None
    try:
        group.start()
        t0 = time.monotonic()
        drv = _Driver(group, dcfg, progress)
        if dcfg.mode == "sync":
            drv.run_sync()
        elif dcfg.deterministic:
            drv.run_deterministic(Scheduler(dcfg.seed))
        else:
            drv.run_free()
        reports = drv.snapshot()
        seconds = time.monotonic() - t0
        group.close()
    except DownpourError as err:
        where = _final_checkpoint(cfg, drv, out) if drv is not None else None
        group.close(graceful=False)
        raise DownpourError(f"{err}; final checkpoint: {where or 'none (a shard is missing)'}") from None
    except BaseException:
        group.close(graceful=False)
        raise
    finally:
        if metrics is not None:
            metrics.close()
        if store_tmp is not None:
            shutil.rmtree(store_tmp, ignore_errors=True)
    if len(reports) != dcfg.shards:
        raise DownpourError(f"only {len(reports)} of {dcfg.shards} shards reported at the end")
    vec = np.concatenate([reports[s].values for s in range(dcfg.shards)])  # (n_params,)
    transport: Counter = Counter()
    for bye in group.byes.values():
        transport.update({k: v for k, v in bye.stats.items() if isinstance(v, int)})
    tr = group.chrome_trace() if trace else {}
    if out is not None and trace:
        group.write_trace(out / "trace.json")
    result = DownpourResult(unflatten(vec, cfg), vec, params_sha256(vec),
                            [reports[s].version for s in range(dcfg.shards)],
                            [reports[s].stats for s in range(dcfg.shards)], history, drv.dead,
                            dict(transport), seconds, trace=tr, events=_with_losses(drv.events, reports))
    if reports[0].opt is not None:
        result.opt_state = unflatten(np.concatenate([reports[s].opt for s in range(dcfg.shards)]), cfg)
    if eval_frames:
        result.objective = evaluate(cfg, vec, data[:eval_frames])
    return result
