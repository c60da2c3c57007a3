"""``python -m benchmarks``: run the benchmark suite (see docs/benchmarks.md)."""

from benchmarks.run import main

raise SystemExit(main())
