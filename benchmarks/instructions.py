"""Instructions per operation under callgrind: ``python -m benchmarks.instructions``.

Wall-clock ratios on a shared machine move by 0.2-0.3 between runs; the number of
instructions the CPU executes does not (PYTHONHASHSEED is fixed, the garbage collector
is off). For each case this runs the interpreter under ``valgrind --tool=callgrind``
twice, with 0 and with N operations after the same warm-up, and reports the difference
divided by N: instructions per operation, start-up and warm-up excluded. It is how each
optimisation was judged (docs/benchmarks.md). Instructions are not time (a cache miss or
a syscall costs more than an add), so the wall-clock tables stay the reference.

Usage: ``python -m benchmarks.instructions [-n N] [CASE ...]`` (cases below; default all).
Needs valgrind on PATH and the stdlib column's Python (3.11+).

``--functions`` splits one case's count by C function instead (``--top K`` rows, sorted
by how many more instructions per operation the cancelscope column spends in each than
the stdlib column): the same four runs, each read with ``callgrind_annotate``. It tells
interpretation (``_PyEval_EvalFrameDefault``: bytecodes, whose Python functions
``benchmarks.bytecodes`` names) from allocation, deallocation, string formatting or
exception machinery, which no bytecode count shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import cancelscope as cs
from benchmarks.common import fetch, sleeper

Scope = cs.CancellationScope
Run = Callable[[int], Awaitable[None]]


async def _a_with(n: int) -> None:
    for _ in range(n):
        with Scope():
            pass


async def _a_async(n: int) -> None:
    for _ in range(n):
        async with Scope():
            pass


async def _a_std(n: int) -> None:
    for _ in range(n):
        async with asyncio.timeout(None):  # noqa: ASYNC100 (the empty scope is what is timed)
            pass


async def _b_with(n: int) -> None:
    for _ in range(n):
        with cs.with_timeout(1000):
            pass


async def _b_async(n: int) -> None:
    for _ in range(n):
        async with cs.with_timeout(1000):
            pass


async def _b_std(n: int) -> None:
    for _ in range(n):
        async with asyncio.timeout(1000):  # noqa: ASYNC100 (the empty scope is what is timed)
            pass


async def _e_async(n: int) -> None:
    for _ in range(n):
        with contextlib.suppress(TimeoutError):
            async with cs.with_timeout(0):
                await asyncio.sleep(1)


async def _e_std(n: int) -> None:
    for _ in range(n):
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0):
                await asyncio.sleep(1)


async def _c_cs(n: int) -> None:
    async with cs.cancellable() as scope:
        for _ in range(n):
            scope.spawn(sleeper)
        await asyncio.sleep(0)
        scope.cancel()


class _Stop(Exception):
    pass


async def _c_std(n: int) -> None:
    with contextlib.suppress(BaseExceptionGroup):  # noqa: F821 (3.11+)
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(sleeper())
            await asyncio.sleep(0)
            raise _Stop


def _nest(inner: Callable[[], Any], outer: Callable[[], tuple[Any, Callable[[], None]]]) -> Run:
    async def run(n: int) -> None:
        ready = asyncio.Event()
        cancel: list[Callable[[], None]] = []

        async def host() -> None:
            with contextlib.suppress(TimeoutError):
                async with contextlib.AsyncExitStack() as stack:
                    scope, cancel_fn = outer()
                    await stack.enter_async_context(scope)
                    for _ in range(n - 1):
                        await stack.enter_async_context(inner())
                    cancel.append(cancel_fn)
                    ready.set()
                    await asyncio.sleep(3600)

        task = asyncio.create_task(host())
        await ready.wait()
        cancel[0]()
        await task

    return run


def _cs_outer() -> tuple[Any, Callable[[], None]]:
    scope = Scope(raise_on_cancel=False)
    return scope, scope.cancel


def _std_outer() -> tuple[Any, Callable[[], None]]:
    cm = asyncio.timeout(None)
    return cm, lambda: cm.reschedule(asyncio.get_running_loop().time())


async def _h_cs_one(i: int) -> int:
    async with cs.with_timeout(10) as scope:
        a = scope.spawn(fetch, i)
        b = scope.spawn(fetch, i + 1)
        c = scope.spawn(fetch, i + 2)
    return a.result() + b.result() + c.result()


async def _h_std_one(i: int) -> int:
    async with asyncio.timeout(10):
        a, b, c = await asyncio.gather(fetch(i), fetch(i + 1), fetch(i + 2))
    return a + b + c


def _requests(handler: Callable[[int], Awaitable[int]]) -> Run:
    async def run(n: int) -> None:
        async def worker(k: int) -> None:
            for i in range(k):
                await handler(i)

        await asyncio.gather(*[worker(n // 10) for _ in range(10)])

    return run


#: case -> (cancelscope run, stdlib run, unit of one operation)
CASES: dict[str, tuple[tuple[str, Run], ...]] = {
    "A": (("cancelscope (with)", _a_with), ("cancelscope", _a_async), ("stdlib", _a_std)),
    "B": (("cancelscope (with)", _b_with), ("cancelscope", _b_async), ("stdlib", _b_std)),
    "C": (("cancelscope", _c_cs), ("stdlib", _c_std)),
    "D.cancel": (
        ("cancelscope", _nest(Scope, _cs_outer)),
        ("stdlib", _nest(lambda: asyncio.timeout(None), _std_outer)),
    ),
    "E": (("cancelscope", _e_async), ("stdlib", _e_std)),
    "H": (("cancelscope", _requests(_h_cs_one)), ("stdlib", _requests(_h_std_one))),
}
UNITS = {
    "A": "enter+exit (with construction)",
    "B": "enter+exit (with construction)",
    "C": "child spawned, started and cancelled",
    "D.cancel": "level of a nest (built, cancelled, unwound)",
    "E": "fired timeout",
    "H": "request",
}


def _child(case: str, column: str, n: int) -> None:
    run = dict(CASES[case])[column]

    async def main() -> None:
        await run(20)  # warm-up: the same in both runs, so it cancels out
        gc.collect()
        gc.disable()
        if n:
            await run(n)

    asyncio.run(main())


def _collected(case: str, column: str, n: int, out_file: str = "/dev/null") -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            case,
            column,
            str(n),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{proc.stderr}")
    return int(match.group(1))


# A function's line in callgrind_annotate's output: "1,234 ( 0.05%)  file.c:name [lib]".
_ANNOTATED = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*?)(?: \[[^\]]*\])?$")


def parse_annotate(text: str) -> dict[str, int]:
    """Instructions per function in ``callgrind_annotate`` output (``file:function`` keys).

    The file is shortened to its base name; the program total is left out.
    """
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = _ANNOTATED.match(line)
        if match is None or "PROGRAM TOTALS" in line:
            continue
        where = match.group(2)
        path, sep, function = where.rpartition(":")
        key = f"{os.path.basename(path)}:{function}" if sep else where
        counts[key] = counts.get(key, 0) + int(match.group(1).replace(",", ""))
    return counts


def _functions(case: str, column: str, n: int, tmp: str) -> dict[str, float]:
    """Instructions per operation spent in each C function (the runs with n and 0 ops)."""
    per_run: list[dict[str, int]] = []
    for ops in (n, 0):
        out_file = os.path.join(tmp, f"{column}.{ops}.out".replace(" ", "_"))
        _collected(case, column, ops, out_file)
        proc = subprocess.run(
            ["callgrind_annotate", "--threshold=100", out_file],
            capture_output=True,
            text=True,
            check=True,
        )
        per_run.append(parse_annotate(proc.stdout))
    full, empty = per_run
    return {key: (full.get(key, 0) - empty.get(key, 0)) / n for key in full.keys() | empty.keys()}


def function_table(case: str, split: dict[str, dict[str, float]], top: int) -> list[str]:
    """The rows ``--functions`` prints: the ``top`` functions by cancelscope's excess."""
    ours = next(column for column in split if column.startswith("cancelscope"))
    std = split["stdlib"]
    keys = sorted(
        split[ours].keys() | std.keys(),
        key=lambda k: split[ours].get(k, 0.0) - std.get(k, 0.0),
        reverse=True,
    )
    rows = [
        f"Case {case} ({UNITS[case]}), instructions per operation by C function, "
        f"{ours!r} against 'stdlib'\n",
        f"| function | {ours} | stdlib | difference |",
        "|---|---|---|---|",
    ]
    for key in keys[:top]:
        a, b = split[ours].get(key, 0.0), std.get(key, 0.0)
        rows.append(f"| {key} | {a:,.0f} | {b:,.0f} | {a - b:+,.0f} |")
    total_a, total_b = sum(split[ours].values()), sum(std.values())
    rows.append(
        f"| (all functions) | {total_a:,.0f} | {total_b:,.0f} | {total_a - total_b:+,.0f} |"
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    parser.add_argument("-n", type=int, default=1000, help="operations per measured run")
    parser.add_argument(
        "--functions",
        action="store_true",
        help="split each case's count by C function (cancelscope against the stdlib)",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of --functions")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, column, n = args.child
        _child(case, column, int(n))
        return 0
    if args.n < 1 or args.top < 1:
        print("-n and --top need a positive number", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):
        print("needs Python 3.11+ (the stdlib column)", file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:
        print("needs valgrind on PATH", file=sys.stderr)
        return 2
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        print(f"unknown cases {unknown}; choose from {list(CASES)}", file=sys.stderr)
        return 2
    if args.functions:
        if shutil.which("callgrind_annotate") is None:
            print("--functions needs callgrind_annotate on PATH (valgrind)", file=sys.stderr)
            return 2
        print(f"Python {sys.version.split()[0]}, n={args.n}\n")
        with tempfile.TemporaryDirectory() as tmp:
            for case in args.cases or list(CASES):
                columns = [c for c, _ in CASES[case] if c in ("cancelscope", "stdlib")]
                split = {c: _functions(case, c, args.n, tmp) for c in columns}
                print("\n".join(function_table(case, split, args.top)) + "\n")
        return 0
    print(f"Python {sys.version.split()[0]}, instructions per operation (n={args.n})\n")
    print("| case | per | column | instructions | vs stdlib |")
    print("|---|---|---|---|---|")
    for case in args.cases or list(CASES):
        counts = {
            column: (_collected(case, column, args.n) - _collected(case, column, 0)) / args.n
            for column, _ in CASES[case]
        }
        std = counts["stdlib"]
        for column, count in counts.items():
            print(f"| {case} | {UNITS[case]} | {column} | {count:,.0f} | {count / std:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
