"""Bytecodes executed per operation, by function: ``python -m benchmarks.bytecodes``.

Where `benchmarks.instructions` says how much a case costs, this says where the Python
part of it goes: it runs a case of `benchmarks.instructions.CASES` in this process with
``sys.monitoring`` counting every bytecode executed (Python 3.12+), and prints, for each
column, the functions that ran the most bytecodes per operation. With ``--lines FUNC`` it
prints the per-line counts of the functions named FUNC instead. Counting slows the run
down a hundredfold; the counts themselves are exact and do not depend on load.

Usage: ``python -m benchmarks.bytecodes [-n N] [--top K] [--lines FUNC] CASE``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dis
import gc
import linecache
import sys
from types import CodeType
from typing import Any

from benchmarks.instructions import CASES, UNITS, Run

_TOOL = 4  # a sys.monitoring tool id that debuggers and profilers do not claim


def _count(run: Run, n: int) -> collections.Counter[tuple[CodeType, int]]:
    """Bytecodes executed by ``run(n)`` after a warm-up, per (code object, offset)."""
    counts: collections.Counter[tuple[CodeType, int]] = collections.Counter()
    mon: Any = getattr(sys, "monitoring")  # noqa: B009 (3.12+; the checkers know 3.10)

    def on_instruction(code: CodeType, offset: int) -> None:
        counts[code, offset] += 1

    async def main() -> None:
        await run(20)  # warm-up, not counted
        gc.collect()
        gc.disable()
        mon.use_tool_id(_TOOL, "benchmarks.bytecodes")
        try:
            mon.register_callback(_TOOL, mon.events.INSTRUCTION, on_instruction)
            mon.set_events(_TOOL, mon.events.INSTRUCTION)
            try:
                await run(n)
            finally:
                mon.set_events(_TOOL, 0)
        finally:
            mon.free_tool_id(_TOOL)
            gc.enable()

    asyncio.run(main())
    return counts


def _where(code: CodeType) -> str:
    filename = code.co_filename.replace("\\", "/")
    for marker in ("/cancelscope/", "/asyncio/", "/benchmarks/"):
        if marker in filename:
            filename = marker.strip("/") + "/" + filename.rsplit(marker, 1)[1]
            break
    else:
        filename = filename.rsplit("/", 1)[-1]
    return f"{code.co_qualname} ({filename}:{code.co_firstlineno})"


def _by_function(counts: collections.Counter[tuple[CodeType, int]], n: int, top: int) -> None:
    per_code: collections.Counter[CodeType] = collections.Counter()
    for (code, _offset), count in counts.items():
        per_code[code] += count
    print(f"{sum(per_code.values()) / n:,.0f} bytecodes per operation in total\n")
    print("| bytecodes | function |")
    print("|---|---|")
    for code, count in per_code.most_common(top):
        print(f"| {count / n:,.1f} | {_where(code)} |")


def _by_line(counts: collections.Counter[tuple[CodeType, int]], n: int, name: str) -> None:
    codes = {code for code, _offset in counts if code.co_name == name}
    if not codes:
        print(f"no function named {name!r} ran")
        return
    for code in sorted(codes, key=_where):
        lines: collections.Counter[int] = collections.Counter()
        for ins in dis.get_instructions(code):
            count = counts.get((code, ins.offset), 0)
            if count and ins.positions is not None and ins.positions.lineno is not None:
                lines[ins.positions.lineno] += count
        print(f"{_where(code)}: {sum(lines.values()) / n:,.1f} bytecodes per operation")
        for lineno in sorted(lines):
            text = linecache.getline(code.co_filename, lineno).rstrip()
            print(f"{lines[lineno] / n:8.1f}  {lineno:5d}  {text}")
        print()


# Not an `if sys.version_info` test in main: mypy would then find the rest
# of main unreachable when it checks for 3.10 or 3.11.
_HAS_MONITORING: bool = hasattr(sys, "monitoring")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bytecodes")
    parser.add_argument("case", help=f"one of {', '.join(CASES)}")
    parser.add_argument("-n", type=int, default=200, help="operations counted")
    parser.add_argument("--top", type=int, default=25, help="functions shown per column")
    parser.add_argument("--lines", metavar="FUNC", help="per-line counts of functions FUNC")
    parser.add_argument("--column", help="only this column (default: every column)")
    args = parser.parse_args(argv)
    if not _HAS_MONITORING:
        print("needs Python 3.12+ (sys.monitoring)", file=sys.stderr)
        return 2
    if args.case not in CASES:
        print(f"unknown case {args.case!r}; choose from {list(CASES)}", file=sys.stderr)
        return 2
    if args.n < 1:
        print("-n must be at least 1", file=sys.stderr)
        return 2
    columns = dict(CASES[args.case])
    if args.column is not None and args.column not in columns:
        print(f"unknown column {args.column!r}; choose from {list(columns)}", file=sys.stderr)
        return 2
    print(f"Python {sys.version.split()[0]}, case {args.case}, per {UNITS[args.case]} (n={args.n})")
    for column, run in columns.items():
        if args.column is not None and column != args.column:
            continue
        print(f"\n## {column}\n")
        counts = _count(run, args.n)
        if args.lines:
            _by_line(counts, args.n, args.lines)
        else:
            _by_function(counts, args.n, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
