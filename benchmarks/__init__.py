"""Benchmarks of cancelscope side by side with its peers (issue 3).

Run them with ``python -m benchmarks`` from the repository root; see docs/benchmarks.md.
"""
