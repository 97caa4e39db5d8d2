"""simcluster: the simulated DistBelief cluster, one OS process per partition, replica or shard.

Built so far (issue 6, part 1): the foundations every role runs on.

- :mod:`simcluster.messages`  the messages, tiny frozen dataclasses (errors travel as data)
- :mod:`simcluster.faults`    FaultPlan / LinkModel: latency, bandwidth, drops, duplicates, crashes
- :mod:`simcluster.transport` the one module every message passes through (inbox per process,
  faults injected here and nowhere else)
- :mod:`simcluster.shm`       bulk arrays in shared memory: per-link pools of reusable segments
- :mod:`simcluster.group`     ProcessGroup: start, watch and stop N role processes
- :mod:`simcluster.logs`      every process's log records reach the parent's log
- :mod:`simcluster.trace`     Chrome trace-event export (one track per process)
- :mod:`simcluster.plan`      the partition plan: who owns which neurons, and their halos
- :mod:`simcluster.plan_report` its costs (parameters, bytes, flops) and a PNG of the tiling
- :mod:`simcluster.demo_roles` small role functions for tests and benchmarks

Not built yet: the partition workers running the model per tile, the coordinator, the parameter
servers (issues 6 part 2 and 7).
"""

from .faults import Crash, Dist, FaultPlan, LinkModel
from .group import Context, ProcessGroup, RemoteError, Role, WorkerDied
from .messages import Bye, Envelope, Error, Ping, Pong, Ready, Stop, Tensor
from .transport import PeerUnreachable, RecvTimeout, Transport, TransportError

__all__ = [
    "Crash", "Dist", "FaultPlan", "LinkModel",
    "Context", "ProcessGroup", "RemoteError", "Role", "WorkerDied",
    "Bye", "Envelope", "Error", "Ping", "Pong", "Ready", "Stop", "Tensor",
    "PeerUnreachable", "RecvTimeout", "Transport", "TransportError",
]
