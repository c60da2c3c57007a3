"""cancelscope cells: ``async with`` (the normal form) and plain ``with`` (hot paths)."""

from __future__ import annotations

import asyncio
from typing import Any

import cancelscope as cs
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

Scope = cs.CancellationScope


def _outer() -> tuple[Any, Any]:
    scope = Scope(raise_on_cancel=False)
    return scope, scope.cancel


def _children(p: Params) -> dict[str, float]:
    async def run() -> dict[str, float]:
        with no_gc():
            t0 = perf_ns()
            async with cs.cancellable() as scope:
                for _ in range(p.children):
                    scope.spawn(sleeper)
                await asyncio.sleep(0)
                t1 = perf_ns()
                scope.cancel()
            t2 = perf_ns()
        return {"C": (t2 - t0) / 1e6, "C'": (t2 - t1) / 1e6}

    return asyncio.run(run())


async def _handler(i: int) -> int:
    async with cs.with_timeout(10) as scope:
        a = scope.spawn(fetch, i)
        b = scope.spawn(fetch, i + 1)
        c = scope.spawn(fetch, i + 2)
    return a.result() + b.result() + c.result()


def columns() -> dict[str, Column]:
    out: dict[str, Column] = {}
    for sync in (False, True):
        cells: dict[str, Cell] = {
            "A": hot_cell("A", Scope, sync=sync),
            "B": hot_cell("B", lambda: cs.with_timeout(1000), sync=sync),
            "D": nest_cell(Scope, _outer, sync=sync),
            "E": fire_cell(lambda: cs.with_timeout(0), (TimeoutError,), sync=sync),
            "F": shield_cell(_outer, cs.non_cancellable, sync=sync),
            "G": memory_cell(Scope, lambda: Scope(timeout=1000), sync=sync),
        }
        unsupported: dict[str, str] = {}
        if sync:
            unsupported["C"] = "n/a: spawn needs async with"
            unsupported["H"] = "n/a: spawn needs async with"
        else:
            cells["C"] = _children
            cells["H"] = requests_cell(_handler)
        name = "cancelscope" if not sync else "cancelscope (with)"
        out[name] = Column(cells, unsupported)
    return out
