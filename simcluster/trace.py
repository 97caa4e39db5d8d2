"""Tracing: every message sent and received, and every compute span, as Chrome trace events.

Each process keeps a :class:`Tracer`. The transport records a ``send`` slice for every send and a
``recv`` slice for every receive (its length is the time spent waiting), joined by a flow arrow
(``ph: "s"`` at the send, ``ph: "f"`` at the receive) so Perfetto draws the message; role
functions wrap their work in ``with tracer.span("forward stage 1"):``. Children ship their events
to the parent in their last message (:class:`~simcluster.messages.Bye`) and
:func:`chrome_trace` merges them: one track (``pid``) per process, named after its role.

Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC, one clock for every process on the machine),
exported in microseconds from the start of the run. Format:
https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager


class Tracer:
    """Collects one process's trace events (plain dicts, times in ns; see :func:`chrome_trace`)."""

    def __init__(self, node: int, enabled: bool = True):
        self.node = node
        self.enabled = enabled
        self.events: list[dict] = []

    @contextmanager
    def span(self, name: str, cat: str = "compute", **args):
        """Record the time spent in the ``with`` block as one slice."""
        t0 = time.monotonic_ns()
        try:
            yield
        finally:
            if self.enabled:
                self.events.append({"ph": "X", "name": name, "cat": cat, "t0": t0,
                                    "t1": time.monotonic_ns(), "args": args})

    def instant(self, name: str, t: float, args: dict | None = None) -> None:
        if self.enabled:
            self.events.append({"ph": "i", "name": name, "cat": "fault", "t0": int(t * 1e9),
                                "args": args or {}})

    def message(self, direction: str, kind: str, peer: str, t0: float, t1: float, src: int,
                seq: int, nbytes: int, delay: float = 0.0) -> None:
        """A send or recv slice (t0, t1 in monotonic seconds) with its flow end point.

        ``src`` is the sending node; the flow id is (sender, receiver, seq) and ``peer`` is the
        other side's description (the receiver's, for a send). ``delay`` is the network delay the
        fault plan gave a received message (deliver_at - sent_at), shown as ``args.delay_ms``.
        """
        if not self.enabled:
            return
        word = "to" if direction == "send" else "from"
        self.events.append({"ph": "X", "name": f"{direction} {kind} {word} {peer}", "cat": direction,
                            "t0": int(t0 * 1e9), "t1": int(t1 * 1e9),
                            "args": {"peer": peer, "seq": seq, "bytes": nbytes,
                                     "delay_ms": round(delay * 1e3, 6)},
                            "flow": (direction, src, peer if direction == "send" else None, seq)})


def _flow_events(ev: dict, pid: int, names: dict, ts0: float, ts1: float) -> list[dict]:
    direction, src, peer, seq = ev["flow"]
    if direction == "send":
        fid = f"{src}>{peer}#{seq}"
        return [{"ph": "s", "id": fid, "name": "message", "cat": "message", "pid": pid, "tid": 0,
                 "ts": ts0}]
    fid = f"{src}>{names.get(pid, pid)}#{seq}"
    inside = ts1 - min(1.0, (ts1 - ts0) / 2)  # a point inside the recv slice it binds to
    return [{"ph": "f", "bp": "e", "id": fid, "name": "message", "cat": "message", "pid": pid,
             "tid": 0, "ts": inside}]


def chrome_trace(events_by_node: dict[int, list[dict]], names: dict[int, str], t0_ns: int) -> dict:
    """Merge every process's events into one Chrome trace-event document.

    ``names[node]`` labels the process track ("coordinator", "partition 3"); flows pair a send
    with its receive by (sender node, receiver name, sequence number).
    """
    out = []
    for node in sorted(names):
        out.append({"ph": "M", "name": "process_name", "pid": node, "tid": 0,
                    "args": {"name": names[node]}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": node, "tid": 0,
                    "args": {"sort_index": node}})
    flows = []
    for node, events in events_by_node.items():
        for ev in events:
            ts0 = (ev["t0"] - t0_ns) / 1e3
            rec = {"ph": ev["ph"], "name": ev["name"], "cat": ev["cat"], "pid": node, "tid": 0,
                   "ts": ts0, "args": ev.get("args", {})}
            if ev["ph"] == "X":
                ts1 = (ev["t1"] - t0_ns) / 1e3
                rec["dur"] = max(ts1 - ts0, 0.0)
                if "flow" in ev:
                    flows.extend(_flow_events(ev, node, names, ts0, ts0 + rec["dur"]))
            elif ev["ph"] == "i":
                rec["s"] = "p"
            out.append(rec)
    # keep only complete arrows: a process that died (or the last Bye) leaves half of one
    ids = {}
    for f in flows:
        ids.setdefault(f["id"], set()).add(f["ph"])
    out.extend(f for f in flows if ids[f["id"]] == {"s", "f"})
    return {"traceEvents": out, "displayTimeUnit": "ms"}


def write_chrome_trace(path, document: dict) -> None:
    """Write a trace document as JSON (open it at https://ui.perfetto.dev)."""
    with open(path, "w") as f:
        json.dump(document, f)
