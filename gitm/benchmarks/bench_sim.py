"""Simulator and evaluation speed: ``python benchmarks/bench_sim.py [--workers 2]`` (same as ``gitm-bench``).

Prints one JSON line per measurement; see :mod:`gitm.bench` for what each line measures."""

from gitm.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
