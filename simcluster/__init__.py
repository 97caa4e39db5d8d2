"""simcluster: the simulated DistBelief cluster (model partitions, replicas, parameter servers).

Not built yet: see the simcluster issues. Nothing here is claimed to work.
"""
