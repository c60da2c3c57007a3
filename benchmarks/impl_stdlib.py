"""stdlib cells: ``asyncio.timeout`` and ``asyncio.TaskGroup`` (Python 3.11+)."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.common import (
    Cell,
    Column,
    Params,
    fetch,
    fire_cell,
    hot_cell,
    idle_cell,
    memory_cell,
    nest_cell,
    no_gc,
    perf_ns,
    requests_cell,
    sleeper,
)


def _plain() -> Any:
    return asyncio.timeout(None)


def _outer() -> tuple[Any, Any]:
    cm = asyncio.timeout(None)

    def cancel() -> None:
        cm.reschedule(asyncio.get_running_loop().time())

    return cm, cancel


class _Stop(Exception):
    pass


def _children(p: Params) -> dict[str, float]:
    # asyncio.TaskGroup has no cancel(): the documented way to stop one is to raise.
    async def run() -> dict[str, float]:
        t1 = 0
        with no_gc():
            t0 = perf_ns()
            try:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(p.children):
                        tg.create_task(sleeper())
                    await asyncio.sleep(0)
                    t1 = perf_ns()
                    raise _Stop
            except BaseExceptionGroup as eg:  # noqa: F821 (this module needs 3.11+)
                if eg.subgroup(_Stop) is None:
                    raise
            t2 = perf_ns()
        return {"C": (t2 - t0) / 1e6, "C'": (t2 - t1) / 1e6}

    return asyncio.run(run())


async def _handler(i: int) -> int:
    async with asyncio.timeout(10):
        a, b, c = await asyncio.gather(fetch(i), fetch(i + 1), fetch(i + 2))
    return a + b + c


def columns() -> dict[str, Column]:
    cells: dict[str, Cell] = {
        "A": hot_cell("A", _plain, sync=False),
        "B": hot_cell("B", lambda: asyncio.timeout(1000), sync=False),
        "C": _children,
        "D": nest_cell(_plain, _outer, sync=False, catch=(TimeoutError,)),
        "E": fire_cell(lambda: asyncio.timeout(0), (TimeoutError,), sync=False),
        "F": idle_cell(),
        "G": memory_cell(_plain, lambda: asyncio.timeout(1000), sync=False),
        "H": requests_cell(_handler),
    }
    notes = {
        "F": "baseline: an idle asyncio.sleep (asyncio.shield cannot keep a cancelled task inside)",
        "H": "bare asyncio: asyncio.timeout + asyncio.gather",
    }
    return {"stdlib": Column(cells, notes=notes)}
