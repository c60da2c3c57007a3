"""aiofence cells (``Fence``, ``on_timeout``; default backend, i.e. anyio). Python 3.12+.

aiofence has no shield and no task ownership: C and H put a fence around an
``asyncio.TaskGroup`` / ``asyncio.gather``, as its README does.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiofence

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
    event = asyncio.Event()
    return aiofence.Fence(events=[(event, None)]), event.set


def _deadline(seconds: float) -> Any:
    return aiofence.Fence(deadline=asyncio.get_running_loop().time() + seconds)


def _children(p: Params) -> dict[str, float]:
    async def run() -> dict[str, float]:
        event = asyncio.Event()
        with no_gc():
            t0 = perf_ns()
            with aiofence.Fence(events=[(event, None)]):
                async with asyncio.TaskGroup() as tg:
                    for _ in range(p.children):
                        tg.create_task(sleeper())
                    await asyncio.sleep(0)
                    t1 = perf_ns()
                    event.set()
            t2 = perf_ns()
        return {"C": (t2 - t0) / 1e6, "C'": (t2 - t1) / 1e6}

    return asyncio.run(run())


async def _handler(i: int) -> int:
    with aiofence.on_timeout(10).raise_on_cancel():
        a, b, c = await asyncio.gather(fetch(i), fetch(i + 1), fetch(i + 2))
    return a + b + c


def columns() -> dict[str, Column]:
    cells: dict[str, Cell] = {
        "A": hot_cell("A", aiofence.Fence, sync=True),
        "B": hot_cell("B", lambda: aiofence.on_timeout(1000).raise_on_cancel(), sync=True),
        "C": _children,
        "D": nest_cell(aiofence.Fence, _outer, sync=True),
        "E": fire_cell(
            lambda: aiofence.on_timeout(0).raise_on_cancel(), (aiofence.FenceCancelled,), sync=True
        ),
        "G": memory_cell(aiofence.Fence, lambda: _deadline(1000), sync=True),
        "H": requests_cell(_handler),
    }
    notes = {
        "C": "Fence around asyncio.TaskGroup, cancelled through an event",
        "H": "Fence around asyncio.gather",
    }
    return {
        "aiofence": Column(cells, {"F": "no equivalent: aiofence has no shield"}, notes),
    }
