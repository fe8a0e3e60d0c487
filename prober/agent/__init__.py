"""The probe agent: echo responders, probes, the round loop, reporting and metrics.

One agent runs per node per network (``--network pod`` or ``host``). It never reads
cluster state: its targets come from the collector's pinglist (or a static inventory
file when it runs alone), and it must not import ``kubernetes``, numpy or the
collector's code (an import-linter contract holds the line).
"""
