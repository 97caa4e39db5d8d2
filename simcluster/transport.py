"""The transport: the one module through which every message between processes passes.

::

      node 3 (sender)                                               node 7 (receiver)
    +------------------+                                         +----------------------+
    | send(7, msg)     |  large arrays -> /dev/shm/cn<run>_3_7_* | inbox: a Unix socket |
    |  1 crash now?    |------------------------------------+    |  <rundir>/7.sock     |
    |  2 the link      |                                    |    |                      |
    |    decides:      |   Envelope(src, dst, seq,          v    |  recv(timeout):      |
    |    deliver_at,   |     deliver_at, copies, body) ---------->  read frames, view  |
    |    copies (0 =   |   (one socket per directed link,        |  the shm segments,   |
    |    dropped)      |    non-blocking, length-prefixed)       |  hold each message   |
    |  3 arrays -> shm |                                         |  until deliver_at,   |
    |  4 frame, write  |                                         |  return the oldest   |
    |    what fits     |                                         |  due one             |
    +------------------+                                         +----------------------+

**Inboxes.** Every process listens on its own Unix socket. A sender opens its own connection to
each peer it talks to, so no two writers ever share a channel or a lock: a process killed half
way through a write leaves a torn frame on *its* connection only, which the receiver discards
when it sees the end of file. Nothing else is blocked.

**Sends never block.** Sockets are non-blocking; what the kernel buffer does not take waits in
the sender's outbox and is written whenever the sender is next inside the transport (any send or
receive, and :meth:`Transport.close`). So "everyone sends to all neighbours, then receives"
cannot deadlock, whatever the message size.

**Bulk arrays** (``>= shm_threshold`` bytes) travel through ``multiprocessing.shared_memory``
(:mod:`simcluster.shm`): the sender copies the array into a reusable slot of its pool for that
destination (or a one-off segment) and sends the small :class:`~simcluster.messages.ShmArray`
reference; the receiver returns a view of the segment, without a copy. Small arrays travel as
raw bytes inside the control message (how a message becomes bytes: :mod:`simcluster.wire`).
Segments addressed to a process that died are removed as soon as the group learns of the death,
and every segment of the run when the group shuts down.

**The short path.** With no fault plan and tracing off, :meth:`Transport.send` encodes, frames
and writes, and :meth:`Transport.recv` polls only when nothing it wants is queued: with 169
processes taking turns on 2 cores, each message's Python work is paid with cold caches, and
``benchmarks/model_parallel.py``'s halo round is mostly that work.

**Faults** come from one :class:`~simcluster.faults.FaultPlan` and are applied here and nowhere
else: the sender draws each work message's delivery time and number of copies from the link's
seeded generator; the receiver holds a message until its ``deliver_at`` and delivers duplicates
twice. A link with a ``nan`` rate delivers some messages with every float array replaced by
NaN (a corrupted gradient). Crashes kill the sender itself (SIGKILL), optionally in the middle
of writing a segment; a straggler sleeps at every ``step``.

**Restarted peers.** When a write to a peer fails (it died), the connection and the sender's
shared-memory slots for that peer are dropped (:meth:`Transport.forget`), so the next send
connects afresh: to the new process if the group restarted it.

**Every receive has a timeout** and raises :class:`RecvTimeout` when it expires; a receiver
may also watch process sentinels (the parent does) and learn at once that a peer died.
"""

from __future__ import annotations

import heapq
import os
import select
import signal
import socket
import struct
import time
from collections import deque
from copy import deepcopy
from dataclasses import fields, is_dataclass, replace
from functools import partial
from typing import Any, Callable

import numpy as np

from .faults import FaultPlan, LinkState
from .messages import Envelope, is_system
from .shm import SHM_DIR, SHM_PREFIX, SegmentMaps, SegmentPool, segment_prefix, sweep  # noqa: F401
from .trace import Tracer
from .wire import WireError, decode, encode

DEFAULT_SHM_THRESHOLD = 64 * 1024  # bytes; smaller arrays travel as raw bytes in the control message
_HEADER = struct.Struct("!Q")  # frame = 8-byte big-endian length + _META + body (simcluster.wire)
_META = struct.Struct("!iiqddBB")  # src, dst, seq, sent_at, deliver_at, copies, body encoding
_HEAD = struct.Struct("!QiiqddBB")  # _HEADER and _META packed at once (the short path)
_READ = 1 << 16
_BIG = 1 << 16  # frames this long are written as header and rest, not joined into one copy
_tuple_new = tuple.__new__  # builds an Envelope without its Python-level __new__


class TransportError(RuntimeError):
    """Base class of the transport's errors."""


class RecvTimeout(TransportError, TimeoutError):
    """No matching message arrived within the timeout."""


class PeerUnreachable(TransportError):
    """A peer's inbox cannot be reached (it exited or died)."""


class PeerDied(TransportError):
    """A watched process sentinel fired: ``node`` is gone."""

    def __init__(self, node: int, message: str):
        super().__init__(message)
        self.node = node


def count_send(endpoint, msg) -> bool:
    """Count a work message against the endpoint's crash plan (``crash.after_sends``), dying
    (``endpoint._die()``) once the plan's count is reached. Returns whether ``msg`` is a system
    message, which is never counted nor faulted. Shared by every transport backend."""
    system = is_system(msg)
    if not system:
        crash = endpoint.crash
        if crash is not None and crash.after_sends is not None and endpoint._work_sent >= crash.after_sends:
            endpoint._die()
        endpoint._work_sent += 1
    return system


def socket_path(rundir: str, node: int) -> str:
    return os.path.join(rundir, f"{node}.sock")


class _Outgoing:
    """One connection to a peer's inbox and the bytes not yet written to it."""

    def __init__(self, sock: socket.socket, park: Callable):
        self.sock = sock
        self.park = park  # array -> ShmArray: parks it in a shared-memory slot for this peer
        self.pending: deque = deque()  # frames (bytes) not yet fully written
        self.offset = 0  # bytes of pending[0] already written
        self.link: LinkState | None = None
        self.seq = 0
        self.waiting = False  # registered for "writable" while bytes are pending


class _Poller:
    """``select.epoll`` with a payload per file descriptor (what ``selectors`` does, without its
    few microseconds of bookkeeping per call, which thousands of small messages notice)."""

    def __init__(self):
        self.epoll = select.epoll()
        self.data: dict[int, tuple] = {}

    def register(self, fd: int, write: bool, data: tuple) -> None:
        self.epoll.register(fd, select.EPOLLOUT if write else select.EPOLLIN)
        self.data[fd] = data

    def unregister(self, fd: int) -> None:
        self.epoll.unregister(fd)
        del self.data[fd]

    def select(self, timeout: float) -> list:
        """[(fd, data)] of the ready descriptors (hang-ups and errors count as ready)."""
        return [(fd, self.data[fd]) for fd, _ in self.epoll.poll(timeout) if fd in self.data]

    def close(self) -> None:
        self.epoll.close()


class _Incoming:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()


class Transport:
    """One process's endpoint: its inbox, its connections to peers, its fault decisions.

    Args:
        node: this process's node number (0 is the parent).
        rundir: directory holding every node's inbox socket.
        run_id: names this run's shared-memory segments.
        describe: node -> human-readable name ("partition 3"), used in errors and traces.
        faults: the run's :class:`FaultPlan` with nodes resolved to numbers, or None.
        tracer: records every send and receive.
        shm_threshold: arrays of at least this many bytes go through shared memory.
    """

    def __init__(self, node: int, rundir: str, run_id: str, *, describe: Callable[[int], str] = str,
                 faults: FaultPlan | None = None, tracer: Tracer | None = None,
                 shm_threshold: int = DEFAULT_SHM_THRESHOLD):
        self.node = node
        self.rundir = rundir
        self.run_id = run_id
        self._names: dict[int, str] = {}
        self._describe = describe
        self.faults = faults
        self.crash = faults.crash_for(node) if faults else None
        self.straggle = faults.delay_for(node) if faults else 0.0  # seconds per step (stragglers)
        self.tracer = tracer or Tracer(node, enabled=False)
        self.shm_threshold = int(shm_threshold)
        self.stats = {"sent": 0, "received": 0, "bytes_sent": 0, "bytes_shm": 0, "dropped": 0,
                      "duplicated": 0, "recv_wait_s": 0.0}
        self.pool = SegmentPool(run_id, node)  # bulk arrays out
        self.maps = SegmentMaps()  # bulk arrays in
        self._open_shm = self.maps.open
        self._work_sent = 0  # work messages sent (what Crash.after_sends counts)
        self._out: dict[int, _Outgoing] = {}
        self._in: dict[int, _Incoming] = {}  # fileno -> connection
        self._held: list[tuple[float, int, Envelope]] = []  # arrived, not yet due (deliver_at)
        self._due: deque[Envelope] = deque()  # due, in delivery order
        self._arrivals = 0
        self._watched: dict[int, tuple[int, Callable[[int], str]]] = {}
        self._deaths: list[PeerDied] = []  # watched processes found dead, reported by recv
        self._sel = _Poller()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(socket_path(rundir, node))
        self._listener.listen(1024)
        self._listener.setblocking(False)
        self._sel.register(self._listener.fileno(), False, ("accept", None))
        self.closed = False

    def describe(self, node: int) -> str:
        """A node's name ("partition 3"), for errors and traces (cached: traces ask often)."""
        name = self._names.get(node)
        if name is None:
            name = self._names[node] = self._describe(node)
        return name

    # -- sending ------------------------------------------------------------------------------

    def send(self, dst: int, msg: Any) -> None:
        """Send ``msg`` to node ``dst``. Never blocks; raises PeerUnreachable if ``dst`` is gone.

        A perfect network with tracing off (no fault plan) takes the short path: encode, frame,
        write. Everything else, faults included, goes through :meth:`_send`.
        """
        out = self._out.get(dst)
        if out is None or out.pending or self.faults is not None or self.tracer.enabled or self.closed:
            return self._send(dst, msg)
        out.seq += 1
        t = time.monotonic()
        encoding, body, shm_bytes = encode(msg, out.park, self.shm_threshold)
        head = _HEAD.pack(_META.size + len(body), self.node, dst, out.seq, t, t, 1, encoding)
        try:
            n = out.sock.sendmsg((head, body))  # (two buffers, one system call, no joined copy)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = 0  # (the flush below finds the error again and reports it)
        if n < len(head) + len(body):
            if n < len(head):
                out.pending.extend((head, body))
            else:
                out.pending.append(body)
                n -= len(head)
            out.offset = n
            self._flush(dst, out)
        stats = self.stats
        stats["sent"] += 1
        stats["bytes_sent"] += _META.size + len(body) + shm_bytes
        stats["bytes_shm"] += shm_bytes

    def _send(self, dst: int, msg: Any) -> None:
        """:meth:`send` through the fault plan, the crash plan and the tracer."""
        if self.closed:
            raise TransportError(f"{self.describe(self.node)}: send on a closed transport")
        system = count_send(self, msg)
        t0 = time.monotonic()
        out = self._connection(dst)
        out.seq += 1
        faulty = not system and self.faults is not None
        if faulty and out.link is None:
            out.link = LinkState(self.faults, self.node, dst)
        # decide first: a dropped message creates no segment at all
        deliver_at, copies = out.link.decide(t0, _walk_nbytes(msg)) if faulty else (t0, 1)
        if faulty and out.link.poison():  # a corrupted payload: its float arrays become NaN
            poisoned = _poisoned(msg)
            if poisoned is not msg:
                msg = poisoned
                self.stats["poisoned"] = self.stats.get("poisoned", 0) + 1
        if copies == 0:
            self.stats["dropped"] += 1
            self.stats["sent"] += 1
            self.tracer.instant(f"drop {type(msg).__name__} to {self.describe(dst)}", t0,
                                {"dst": dst, "seq": out.seq})
            return
        # on the wire: the Envelope's fields packed by struct, then the body (simcluster.wire)
        encoding, body, shm_bytes = encode(msg, out.park, self.shm_threshold)
        nbytes = _META.size + len(body) + shm_bytes
        self._write(dst, out, _META.pack(self.node, dst, out.seq, t0, deliver_at, copies, encoding), body)
        self.stats["sent"] += 1
        self.stats["bytes_sent"] += nbytes
        self.stats["bytes_shm"] += shm_bytes
        if copies == 2:
            self.stats["duplicated"] += 1
        if self.tracer.enabled:
            self.tracer.message("send", type(msg).__name__, self.describe(dst), t0, time.monotonic(),
                                self.node, out.seq, nbytes)

    def _write(self, dst: int, out: _Outgoing, meta: bytes, body: bytes) -> None:
        """Queue one frame on ``out`` and write what the socket takes now."""
        n = len(meta) + len(body)
        if n < _BIG:
            out.pending.append(_HEADER.pack(n) + meta + body)
        else:  # large: not joined into one more copy
            out.pending.append(_HEADER.pack(n) + meta)
            out.pending.append(body)
        self._flush(dst, out)

    def _connection(self, dst: int) -> _Outgoing:
        out = self._out.get(dst)
        if out is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5.0)
            try:
                sock.connect(socket_path(self.rundir, dst))
            except OSError as err:
                sock.close()
                raise PeerUnreachable(f"{self.describe(self.node)} cannot reach the inbox of "
                                      f"{self.describe(dst)}: {err}") from None
            sock.setblocking(False)
            out = self._out[dst] = _Outgoing(sock, partial(self.pool.park, dst=dst))
        return out

    def _flush(self, dst: int, out: _Outgoing) -> None:
        try:
            while out.pending:
                head = out.pending[0]
                n = out.sock.send(memoryview(head)[out.offset:] if out.offset else head)
                out.offset += n
                if out.offset == len(head):
                    out.pending.popleft()
                    out.offset = 0
        except BlockingIOError:
            pass
        except OSError as err:
            self.forget(dst)  # the next send reconnects (to a restarted process, if any)
            raise PeerUnreachable(f"{self.describe(self.node)} lost its connection to "
                                  f"{self.describe(dst)}: {err}") from None
        if out.pending and not out.waiting:  # wake up when the kernel takes more
            self._sel.register(out.sock.fileno(), True, ("write", dst))
            out.waiting = True
        elif not out.pending and out.waiting:
            self._sel.unregister(out.sock.fileno())
            out.waiting = False

    def forget(self, dst: int) -> None:
        """Close the connection to ``dst`` and drop what was not yet written to it (the peer
        died); the next send to ``dst`` connects afresh."""
        self.pool.forget(dst)
        out = self._out.pop(dst, None)
        if out is None:
            return
        if out.waiting:
            self._sel.unregister(out.sock.fileno())
        out.sock.close()

    def _die(self) -> None:
        if self.crash.mid_write:  # make sure there is a segment to die in the middle of
            self.pool.park(np.zeros((1 << 20) // 8), 0, die_mid_write=True)
        os.kill(os.getpid(), signal.SIGKILL)

    def step(self, k: int) -> None:
        """Tell the transport that the caller starts step ``k`` (crash plans may fire here, and a
        straggler sleeps its delay)."""
        if self.straggle:
            time.sleep(self.straggle)
        if self.crash is not None and self.crash.at_step is not None and k >= self.crash.at_step:
            self._die()

    # -- receiving ----------------------------------------------------------------------------

    def watch(self, sentinel: int, node: int, explain: Callable[[int], str]) -> None:
        """Once ``sentinel`` becomes ready, recv raises PeerDied(node, explain(node)) (after
        delivering the messages that had already arrived). Reported once."""
        self._watched[sentinel] = (node, explain)
        self._sel.register(sentinel, False, ("sentinel", node))

    def report_death(self, err: PeerDied) -> None:
        """Have the next recv raise ``err`` (a death noticed while waiting for something else)."""
        self._deaths.append(err)

    def unwatch(self, sentinel: int) -> None:
        if self._watched.pop(sentinel, None) is not None:
            self._sel.unregister(sentinel)

    def recv(self, timeout: float, where: Callable[[Envelope], bool] | None = None) -> Envelope:
        """The oldest due message (for which ``where(envelope)`` holds), waiting up to ``timeout`` s.

        Messages that do not match stay queued for later calls. Raises RecvTimeout.
        """
        if not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"recv timeout must be a number of seconds >= 0, got {timeout!r}")
        t0 = time.monotonic()
        deadline = t0 + timeout
        polled = False
        while True:
            env = self._take(where) if self._due or self._held else None
            if env is not None:
                t1 = time.monotonic()
                self.stats["received"] += 1
                self.stats["recv_wait_s"] += t1 - t0
                if self.tracer.enabled:
                    self.tracer.message("recv", type(env.body).__name__, self.describe(env.src), t0,
                                        t1, env.src, env.seq, env.nbytes, env.deliver_at - env.sent_at)
                return env
            if self._deaths:  # (only once the messages that arrived before the death are taken)
                raise self._deaths.pop(0)
            now = time.monotonic()
            if polled and now >= deadline:
                raise RecvTimeout(f"{self.describe(self.node)}: no message within {timeout:g} s")
            wake = deadline
            if self._held:
                wake = min(wake, self._held[0][0])
            self._poll(max(0.0, wake - now))  # returns at once if anything is readable already
            polled = True

    def _take(self, where) -> Envelope | None:
        if self._held:
            now = time.monotonic()
            while self._held and self._held[0][0] <= now:
                self._due.append(heapq.heappop(self._held)[2])
        for i, env in enumerate(self._due):
            if where is None or where(env):
                del self._due[i]
                return env
        return None

    def _poll(self, timeout: float) -> None:
        died = []
        registered = self._sel.data
        for fd, _ in self._sel.epoll.poll(timeout):
            entry = registered.get(fd)
            if entry is None:  # unregistered since (a hang-up handled earlier in this batch)
                continue
            kind, arg = entry
            if kind == "read":
                self._read(fd)
            elif kind == "accept":
                self._accept()
            elif kind == "write":
                self._flush(arg, self._out[arg])
            elif kind == "sentinel":
                died.append(fd)
        if died:  # read first: what a process wrote before it exited is still delivered
            self._poll_reads()
            for fd in died:
                node, explain = self._watched.pop(fd)
                self._sel.unregister(fd)
                self._deaths.append(PeerDied(node, explain(node)))

    def _poll_reads(self) -> None:
        for _ in range(100):
            busy = False
            for fd, (kind, _) in self._sel.select(0):
                if kind == "accept":
                    self._accept()
                    busy = True
                elif kind == "read" and fd in self._in:
                    self._read(fd)
                    busy = True
            if not busy:
                return

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self._in[sock.fileno()] = _Incoming(sock)
            self._sel.register(sock.fileno(), False, ("read", None))

    def _read(self, fd: int) -> None:
        conn = self._in[fd]
        eof = False
        chunks = []
        try:
            while True:  # 64 KiB reads: small buffers come from the heap, not fresh pages
                chunk = conn.sock.recv(_READ)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                if len(chunk) < _READ:
                    break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            eof = True
        if conn.buf or len(chunks) != 1:
            conn.buf += b"".join(chunks)
            buf = conn.buf
        else:
            buf = chunks[0]  # the common case: whole small frames in one read, no copy
        view, off, frame = memoryview(buf), 0, None
        try:
            while len(buf) - off >= _HEADER.size:
                (n,) = _HEADER.unpack_from(buf, off)
                if len(buf) - off < _HEADER.size + n:
                    break
                frame = view[off + _HEADER.size : off + _HEADER.size + n]
                off += _HEADER.size + n
                self._arrive(frame, n)
        finally:  # keep the unparsed rest, even if one frame failed to unpack
            if frame is not None:
                frame.release()
            view.release()
            if buf is conn.buf:
                del conn.buf[:off]  # (off == 0 while a large frame accumulates: no copy)
            elif off < len(buf):  # (conn.buf is empty: it was, to take this branch)
                conn.buf = bytearray(buf[off:])
        if eof:  # the writer closed or died; a torn last frame is discarded with the connection
            self._sel.unregister(fd)
            conn.sock.close()
            del self._in[fd]

    def _arrive(self, data, frame_bytes: int) -> None:
        src, dst, seq, sent_at, deliver_at, copies, encoding = _META.unpack_from(data)
        try:
            body, shm_bytes = decode(encoding, data[_META.size:], self._open_shm)
        except WireError as err:
            raise TransportError(str(err)) from None
        nbytes = frame_bytes + shm_bytes
        if copies == 1 and not self._held and (deliver_at == sent_at or deliver_at <= time.monotonic()):
            self._due.append(_tuple_new(Envelope, (src, dst, seq, sent_at, deliver_at, 1, nbytes, body)))
            return  # the common case, no faults: due at once, nothing held before it
        for copy in range(copies):
            self._arrivals += 1
            env = Envelope(src, dst, seq, sent_at, deliver_at, copies, nbytes,
                           body if copy == 0 else deepcopy(body))  # a duplicate gets its own arrays
            heapq.heappush(self._held, (deliver_at, self._arrivals, env))

    # -- shutting down ------------------------------------------------------------------------

    def drain_outbox(self, timeout: float) -> bool:
        """Write every pending byte, waiting up to ``timeout`` s; True if everything went out."""
        deadline = time.monotonic() + timeout
        while any(o.pending for o in self._out.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._poll(min(left, 0.05))
            except PeerUnreachable:
                return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        if self.closed:
            return
        try:
            self.drain_outbox(timeout)
        finally:
            self.closed = True
            for o in self._out.values():
                o.sock.close()
            for c in self._in.values():
                c.sock.close()
            self.pool.close()
            self._sel.close()
            self._listener.close()
            try:
                os.unlink(socket_path(self.rundir, self.node))
            except FileNotFoundError:
                pass
            # messages that arrived but were never taken: their arrays are already private copies


def _walk_nbytes(obj: Any) -> int:
    """The bytes a message charges to the bandwidth model: its arrays plus a small constant."""
    total, stack = 256, [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, np.ndarray):
            total += o.nbytes
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif is_dataclass(o) and not isinstance(o, type):
            stack.extend(getattr(o, f.name) for f in fields(o))
    return total


def _poisoned(obj: Any) -> Any:
    """A copy of a message whose floating-point arrays are all NaN (what a corrupted gradient
    looks like to its receiver); other fields unchanged. ``obj`` itself if it holds none."""
    if isinstance(obj, np.ndarray):
        return np.full_like(obj, np.nan) if obj.dtype.kind in "fc" else obj
    if isinstance(obj, dict):
        new = {k: _poisoned(v) for k, v in obj.items()}
        return obj if all(new[k] is obj[k] for k in obj) else new
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        new = [_poisoned(v) for v in obj]
        return obj if all(a is b for a, b in zip(new, obj)) else type(obj)(new)
    if is_dataclass(obj) and not isinstance(obj, type):
        new = {f.name: _poisoned(getattr(obj, f.name)) for f in fields(obj)}
        return obj if all(new[k] is getattr(obj, k) for k in new) else replace(obj, **new)
    return obj
