"""simcluster: the simulated DistBelief cluster, one OS process per partition, replica or shard.

Model parallelism (issue 6): one model replica split over an R x C grid of partitions::

                          coordinator (node 0)                      simcluster.coordinator
           SetWeights once, StepInput |  ^ StepResult: share of J,
           (my pixels) per step       v  | gradient slices, timings
        +--------------+--------------+--------------+
        | partition 0  <-Halo->  partition 1  <-Halo->  ...          simcluster.partition
        +------^-------+------^-------+--------------+              (one process each)
               | Halo         | Halo     halo pieces go straight between the partitions
        +------v-------+------v-------+--------------+              that own / read them
        | partition C  <-Halo->  ...                  |
        +--------------+--------------+--------------+
              every message: simcluster.transport (faults injected there only)

Follow one step: the coordinator sends each partition its owned pixels (:class:`StepInput`); each
partition runs :func:`~simcluster.tile_program.tile_step`, refimpl's sublayers on crops, which
pauses at every halo exchange: it sends its pieces (:class:`Halo`) to the partitions that read
or own those cells and resumes with theirs; at the end it returns its share of the objective
and its gradient slices (:class:`StepResult`), which the coordinator assembles into refimpl's
canonical params dict. :func:`~simcluster.tiled.tiled_step` runs the same programs in one
process (the oracle).

- :mod:`simcluster.plan`         the partition plan: who owns which neurons, and their halos
- :mod:`simcluster.plan_report`  its costs (parameters, bytes, flops) and a PNG of the tiling
- :mod:`simcluster.tiles`        crops, routes, and the gather / scatter-add halo exchanges
- :mod:`simcluster.tile_program` one partition's forward and backward, yielding at exchanges
- :mod:`simcluster.tiled`        every partition in one process, in lockstep (the oracle)
- :mod:`simcluster.partition`    the partition worker process and its messages
- :mod:`simcluster.coordinator`  starts the partitions, splits the minibatch, gathers J and grads

Data parallelism (issue 7): Downpour SGD, N model replicas against S parameter-server shards
(the diagram is in :mod:`simcluster.downpour`)::

    replica 0 .. N-1 --Fetch every P steps / Push every G steps--> shard 0 .. S-1
         ^  (each on its own part of the frames)                    (a contiguous range of the
         +----------- Grant (deterministic / sync), Progress ------ driver   flat parameters)

- :mod:`simcluster.downpour`        the driver: modes async / sync / bounded, deterministic
  replay, restarts, the run's summary and ``params sha256``
- :mod:`simcluster.ps`              a parameter-server shard: server-side SGD / Adagrad, versions,
  staleness, duplicate and NaN rejection, quarantine
- :mod:`simcluster.ps_checkpoint`   a shard's atomic checkpoints and write-ahead log
- :mod:`simcluster.replica`         a model replica: fetch, compute, push
- :mod:`simcluster.schedule`        the seeded scheduler of deterministic replay
- :mod:`simcluster.downpour_faults` fault plans written in TOML
- :mod:`simcluster.ps_toy`          a least-squares toy through the real shard rules (staleness)

The foundations every role runs on (issue 6, part 1):

- :mod:`simcluster.messages`  the messages, tiny frozen dataclasses (errors travel as data)
- :mod:`simcluster.faults`    FaultPlan / LinkModel: latency, bandwidth, drops, duplicates, crashes
- :mod:`simcluster.transport` the one module every message passes through (inbox per process,
  faults injected here and nowhere else)
- :mod:`simcluster.wire`      a message's bytes: arrays as raw bytes or shared-memory references
- :mod:`simcluster.shm`       bulk arrays in shared memory: per-link pools of reusable segments
- :mod:`simcluster.group`     ProcessGroup: start, watch and stop N role processes
- :mod:`simcluster.logs`      every process's log records reach the parent's log
- :mod:`simcluster.trace`     Chrome trace-event export (one track per process)
- :mod:`simcluster.demo_roles` small role functions for tests and benchmarks
- :mod:`simcluster.ray_backend` the same roles as Ray actors (``backend="ray"``): a RayGroup and
  its transport (object store for bulk arrays, the same fault plan); imports Ray only when used

Importing any simcluster module imports this package, hence the partition workers and refimpl:
the forkserver preloads ``simcluster.group``, so 169 partitions share one import of them
(each importing refimpl on its own would add ~0.1 s of CPU per process to the start-up).
"""

from .faults import Crash, Dist, FaultPlan, LinkModel
from .group import Context, ProcessGroup, RemoteError, Role, WorkerDied
from .messages import Bye, Envelope, Error, Ping, Pong, Ready, Stop, Tensor
from .transport import PeerUnreachable, RecvTimeout, Transport, TransportError
from .coordinator import ClusterStep, Coordinator, StepFailed
from .partition import Halo, SetWeights, StepInput, StepResult
from .tiled import StepOutput, plan_for, tiled_step
from .faults import Straggler
from .downpour import DownpourConfig, DownpourError, DownpourResult, params_sha256, run_downpour
from .downpour_faults import load_fault_plan
from .ps import ShardSpec, ShardState, shard_ranges
from .ps_checkpoint import ShardStore
from .replica import ReplicaSpec
from .schedule import Scheduler

__all__ = [
    "Crash", "Dist", "FaultPlan", "LinkModel",
    "Context", "ProcessGroup", "RemoteError", "Role", "WorkerDied",
    "Bye", "Envelope", "Error", "Ping", "Pong", "Ready", "Stop", "Tensor",
    "PeerUnreachable", "RecvTimeout", "Transport", "TransportError",
    "ClusterStep", "Coordinator", "StepFailed", "Halo", "SetWeights", "StepInput", "StepResult",
    "StepOutput", "plan_for", "tiled_step",
    "Straggler", "DownpourConfig", "DownpourError", "DownpourResult", "params_sha256",
    "run_downpour", "load_fault_plan", "ShardSpec", "ShardState", "shard_ranges", "ShardStore",
    "ReplicaSpec", "Scheduler",
]
