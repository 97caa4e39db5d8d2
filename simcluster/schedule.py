"""The seeded scheduler of deterministic runs: who acts next is a draw, not a race.

In a free-running asynchronous run the order in which replicas fetch and push is decided by the
operating system, so two runs differ. In a deterministic run the driver grants one action at a
time (a fetch, or a compute and its push) to a replica drawn by this scheduler from those still
running; every message of the run then follows from the seed, and a run, faults included,
replays bit for bit. The interleavings are still those of an asynchronous run: a replica's
gradient is computed from the parameters it fetched, however many pushes of other replicas
the scheduler let in between (that is its staleness).

One caveat: a request is resent when its reply is later than the retry timeout. Lost and
duplicated messages are then harmless (shards recognise duplicates), but a *spurious* resend
(a reply that was only slow, on a loaded machine) adds a message to its link and shifts that
link's later fault draws; with NaN faults this can change which push is poisoned. Choose a
retry timeout well above the slowest reply when replaying runs with NaN faults.
"""

from __future__ import annotations

import numpy as np


class Scheduler:
    """Draws the next replica to act, uniformly among ``candidates``, from its own Generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng([int(seed), 0x5EED])
        self.picks = 0

    def pick(self, candidates) -> int:
        """One of ``candidates`` (sorted first, so a set's iteration order never matters)."""
        options = sorted(candidates)
        if not options:
            raise ValueError("pick: no candidates left to schedule")
        self.picks += 1
        return options[int(self.rng.integers(len(options)))]
