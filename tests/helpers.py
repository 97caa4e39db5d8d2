"""Small helpers shared by the simcluster tests (import as ``from helpers import deadline``)."""

import signal
from contextlib import contextmanager


@contextmanager
def deadline(seconds):
    """Fail (never hang) if the block takes longer than ``seconds``."""
    def expired(*_):
        raise TimeoutError(f"test took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
