"""quattro cells (``CancelScope``, ``fail_after``, ``TaskGroup``); it has no shield."""

from __future__ import annotations

import asyncio
from typing import Any

import quattro

from benchmarks.common import (
    Cell,
    Column,
    Params,
    fetch,
    fire_cell,
    hot_cell,
    memory_cell,
    nest_cell,
    no_gc,
    perf_ns,
    requests_cell,
    sleeper,
)


def _outer() -> tuple[Any, Any]:
    scope = quattro.CancelScope()
    return scope, scope.cancel


def _children(p: Params) -> dict[str, float]:
    # quattro's TaskGroup is asyncio's; a CancelScope around it cancels it.
    async def run() -> dict[str, float]:
        with no_gc():
            t0 = perf_ns()
            with quattro.CancelScope() as scope:
                async with quattro.TaskGroup() as tg:
                    for _ in range(p.children):
                        tg.create_task(sleeper())
                    await asyncio.sleep(0)
                    t1 = perf_ns()
                    scope.cancel()
            t2 = perf_ns()
        return {"C": (t2 - t0) / 1e6, "C'": (t2 - t1) / 1e6}

    return asyncio.run(run())


async def _handler(i: int) -> int:
    with quattro.fail_after(10):
        async with quattro.TaskGroup() as tg:
            a = tg.create_task(fetch(i))
            b = tg.create_task(fetch(i + 1))
            c = tg.create_task(fetch(i + 2))
    return int(a.result() + b.result() + c.result())


def columns() -> dict[str, Column]:
    cells: dict[str, Cell] = {
        "A": hot_cell("A", quattro.CancelScope, sync=True),
        "B": hot_cell("B", lambda: quattro.fail_after(1000), sync=True),
        "C": _children,
        "D": nest_cell(quattro.CancelScope, _outer, sync=True),
        "E": fire_cell(lambda: quattro.fail_after(0), (TimeoutError,), sync=True),
        "G": memory_cell(quattro.CancelScope, lambda: quattro.fail_after(1000), sync=True),
        "H": requests_cell(_handler),
    }
    return {"quattro": Column(cells, {"F": "no equivalent: quattro has no shield"})}
