"""Logging: every process's records reach one log in the parent, tagged with role and rank.

::

    child 1: logging -> QueueHandler -> PipeQueue ==pipe 1==+
    child 2: logging -> QueueHandler -> PipeQueue ==pipe 2==+--> FanIn --> QueueListener --> parent's
    ...                                                     |    (waits on every pipe)       loggers
    child N: logging -> QueueHandler -> PipeQueue ==pipe N==+

The standard library's :class:`logging.handlers.QueueHandler` and
:class:`~logging.handlers.QueueListener` do the work; what we add is the "queue" between them:
**one pipe per process**. A shared ``multiprocessing.Queue`` holds a lock while a record is
written, so a child killed mid-write would silence every other child; with one pipe each, a dead
child only closes its own pipe. Each child's ``put_nowait`` writes the record synchronously, so
records logged before a crash have already left the process (a ``multiprocessing.Queue`` feeder
thread would lose them). We do not use ``multiprocessing-logging``: it asserts the ``fork`` start
method and drops every record of ``spawn``/``forkserver`` children, and we never fork.

Records carry ``role``, ``rank`` and ``node`` attributes; :data:`FORMAT` shows them, and the
parent's own records get ``role="coordinator"``, ``rank=0`` from the formatter's defaults.
"""

from __future__ import annotations

import logging
import logging.handlers
import threading
from collections import deque
from multiprocessing import connection

FORMAT = "%(asctime)s %(role)s %(rank)s [%(processName)s] %(name)s %(levelname)s: %(message)s"
DEFAULTS = {"role": "coordinator", "rank": 0, "node": 0}


def formatter() -> logging.Formatter:
    """A formatter for the merged log; records from the parent itself get DEFAULTS."""
    return logging.Formatter(FORMAT, defaults=DEFAULTS)


class PipeQueue:
    """The child's end: a queue-like object whose ``put_nowait`` sends the record down a pipe."""

    def __init__(self, conn: connection.Connection):
        self.conn = conn
        self.lock = threading.Lock()  # threads of one process share the pipe

    def put_nowait(self, record) -> None:
        with self.lock:
            try:
                self.conn.send(record)
            except (BrokenPipeError, OSError):
                pass  # the parent is gone: nobody to log to


class _Tag(logging.Filter):
    def __init__(self, role: str, rank: int, node: int):
        super().__init__()
        self.tags = {"role": role, "rank": rank, "node": node}

    def filter(self, record):
        for k, v in self.tags.items():
            setattr(record, k, v)
        return True


def setup_child(conn: connection.Connection, role: str, rank: int, node: int, level: int) -> None:
    """In a child: send every record (of any logger) to the parent, tagged with role and rank."""
    handler = logging.handlers.QueueHandler(PipeQueue(conn))
    handler.addFilter(_Tag(role, rank, node))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)


_WAKE = object()  # FanIn.add's marker: look at the new pipe list, return nothing


class FanIn:
    """The parent's end: a queue-like object whose ``get`` returns the next record from any pipe.

    It is what :class:`~logging.handlers.QueueListener` reads; ``put_nowait`` only carries the
    listener's stop sentinel, which is returned once every pipe has been drained.
    """

    def __init__(self, conns):
        self.conns = list(conns)
        self.local = deque()
        self.wake_r, self.wake_w = connection.Pipe(duplex=False)
        self.lock = threading.Lock()

    def add(self, conn) -> None:
        """Read records from one more pipe too (a restarted child's)."""
        with self.lock:
            self.conns.append(conn)
            self.local.append(_WAKE)
        self.wake_w.send_bytes(b"!")  # get() is waiting on the old list: make it look again

    def put_nowait(self, item) -> None:
        with self.lock:
            self.local.append(item)
        self.wake_w.send_bytes(b"!")

    def get(self, block: bool = True):
        while True:
            ready = connection.wait(self.conns + [self.wake_r], timeout=None if block else 0)
            for conn in ready:
                if conn is self.wake_r:
                    continue
                try:
                    return conn.recv()
                except (EOFError, OSError):  # that child exited (or died): forget its pipe
                    self.conns.remove(conn)
                    conn.close()
            if self.wake_r in ready and not any(c in ready for c in self.conns):
                self.wake_r.recv_bytes()
                with self.lock:
                    item = self.local.popleft()
                if item is _WAKE:
                    continue
                return item
            if not block and not ready:
                raise IndexError("no record")


class _Redispatch(logging.Handler):
    """Hand each record from a child to the parent's logger of the same name (its handlers and
    their levels apply; the logger's own level does not: the child's ``log_level`` already chose)."""

    def emit(self, record):
        logging.getLogger(record.name).handle(record)


class LogServer:
    """Starts the listener thread over the given pipes; :meth:`stop` drains and joins it."""

    def __init__(self, conns):
        self.fanin = FanIn(conns)
        self.listener = logging.handlers.QueueListener(self.fanin, _Redispatch())
        self.listener.start()

    def add(self, conn) -> None:
        self.fanin.add(conn)

    def stop(self) -> None:
        self.listener.stop()
