"""Benchmarks: the orchestrator against raw aria2c, curl and the physical limit.

`python -m bench.run` (or `make bench`) starts a local nginx, aria2c and the app
itself, measures, prints, and writes docs/BENCHMARKS.md. Every figure is a ratio
against a baseline measured in the same run, interleaved and repeated, because a
shared machine makes absolute numbers noisy.
"""
