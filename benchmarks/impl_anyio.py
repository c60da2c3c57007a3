"""anyio cells, running on asyncio (``CancelScope``, ``fail_after``, task groups)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio

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
    shield_cell,
    sleeper,
)


def _outer() -> tuple[Any, Any]:
    scope = anyio.CancelScope()
    return scope, scope.cancel


def _children(p: Params) -> dict[str, float]:
    async def run() -> dict[str, float]:
        with no_gc():
            t0 = perf_ns()
            async with anyio.create_task_group() as tg:
                for _ in range(p.children):
                    tg.start_soon(sleeper)
                await asyncio.sleep(0)
                t1 = perf_ns()
                tg.cancel_scope.cancel()
            t2 = perf_ns()
        return {"C": (t2 - t0) / 1e6, "C'": (t2 - t1) / 1e6}

    return asyncio.run(run())


async def _handler(i: int) -> int:
    results = [0, 0, 0]

    async def one(k: int) -> None:
        results[k] = await fetch(i + k)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0)
            tg.start_soon(one, 1)
            tg.start_soon(one, 2)
    return sum(results)


def columns() -> dict[str, Column]:
    cells: dict[str, Cell] = {
        "A": hot_cell("A", anyio.CancelScope, sync=True),
        "B": hot_cell("B", lambda: anyio.fail_after(1000), sync=True),
        "C": _children,
        "D": nest_cell(anyio.CancelScope, _outer, sync=True),
        "E": fire_cell(lambda: anyio.fail_after(0), (TimeoutError,), sync=True),
        "F": shield_cell(_outer, lambda: anyio.CancelScope(shield=True), sync=True),
        "G": memory_cell(anyio.CancelScope, lambda: anyio.fail_after(1000), sync=True),
        "H": requests_cell(_handler),
    }
    return {"anyio": Column(cells)}
