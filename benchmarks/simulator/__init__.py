"""A light node simulator for benchmarks/scale.py: many nodes per process over the real wire.

``nodes`` hosts N simulated nodes in one process (one NATS connection); ``probe`` runs
the real coordinator with an event-loop lag monitor written to a file, so the same
measurement works on any version of the coordinator.
"""
