"""trio cells, on trio's own loop (``trio.run``)."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from typing import Any

import trio
import trio.lowlevel
import trio.testing

from benchmarks.common import Cell, Column, Factory, Params, no_gc, perf_ns


def _run(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args)


# A, B
def _hot(key: str, factory: Factory) -> Cell:
    async def run(n: int) -> float:
        with no_gc():
            t0 = perf_ns()
            for _ in range(n):
                with factory():
                    pass
            t1 = perf_ns()
        return (t1 - t0) / n

    def cell(p: Params) -> dict[str, float]:
        return {key: _run(run, p.hot_ops)}

    return cell


# C
async def _children(p: Params) -> dict[str, float]:
    with no_gc():
        t0 = perf_ns()
        async with trio.open_nursery() as nursery:
            for _ in range(p.children):
                nursery.start_soon(trio.sleep, 3600)
            await trio.testing.wait_all_tasks_blocked()
            t1 = perf_ns()
            nursery.cancel_scope.cancel()
        t2 = perf_ns()
    return {"C": (t2 - t0) / 1e6, "C'": (t2 - t1) / 1e6}


# D
async def _nest(p: Params) -> dict[str, float]:
    async def plain(depth: int) -> int:
        cms = [trio.CancelScope() for _ in range(depth)]
        t0 = perf_ns()
        with contextlib.ExitStack() as stack:
            for cm in cms:
                stack.enter_context(cm)
        return perf_ns() - t0

    async def cancelled(depth: int) -> int:
        ready, done = trio.Event(), trio.Event()
        outer = trio.CancelScope()

        async def host() -> None:
            with contextlib.ExitStack() as stack:
                for cm in [outer, *[trio.CancelScope() for _ in range(depth - 1)]]:
                    stack.enter_context(cm)
                ready.set()
                await trio.sleep(3600)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(host)
            await ready.wait()  # a failing host cancels the nursery: no hang
            t0 = perf_ns()
            outer.cancel()
            await done.wait()
            t1 = perf_ns()
        return t1 - t0

    out: dict[str, float] = {}
    with no_gc():
        for depth in p.depths:
            out[f"D.nest.{depth}"] = (
                sum([await plain(depth) for _ in range(p.nest_loops)]) / p.nest_loops / 1e3
            )
            out[f"D.cancel.{depth}"] = (
                sum([await cancelled(depth) for _ in range(p.nest_loops)]) / p.nest_loops / 1e3
            )
    return out


# E
async def _fire(n: int) -> float:
    with no_gc():
        t0 = perf_ns()
        for _ in range(n):
            try:
                with trio.fail_after(0):
                    await trio.sleep(1)
            except trio.TooSlowError:
                pass
        t1 = perf_ns()
    return (t1 - t0) / n


# F
async def _shield(seconds: float) -> float:
    with trio.CancelScope() as outer, trio.CancelScope(shield=True):
        outer.cancel()
        w0, c0 = perf_ns(), time.process_time_ns()
        await trio.sleep(seconds)
        c1, w1 = time.process_time_ns(), perf_ns()
    return 100.0 * (c1 - c0) / (w1 - w0)


# G
async def _open_many(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    factories: dict[str, Factory] = {
        "G": trio.CancelScope,
        "G.deadline": lambda: trio.fail_after(1000),
    }
    for key, factory in factories.items():
        scopes: list[Any] = [None] * n
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                scope = factory()
                scope.__enter__()
                scopes[i] = scope
            used = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        for scope in reversed(scopes):
            scope.__exit__(None, None, None)
        out[key] = used / n
    return out


# H
async def _fetch(i: int) -> int:
    await trio.lowlevel.checkpoint()
    return i


async def _handler(i: int) -> int:
    results = [0, 0, 0]

    async def one(k: int) -> None:
        results[k] = await _fetch(i + k)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 0)
            nursery.start_soon(one, 1)
            nursery.start_soon(one, 2)
    return sum(results)


async def _requests(p: Params) -> float:
    per_worker = p.requests // p.concurrency

    async def worker() -> None:
        for i in range(per_worker):
            await _handler(i)

    with no_gc():
        t0 = perf_ns()
        async with trio.open_nursery() as nursery:
            for _ in range(p.concurrency):
                nursery.start_soon(worker)
        t1 = perf_ns()
    return per_worker * p.concurrency / ((t1 - t0) / 1e9)


def columns() -> dict[str, Column]:
    cells: dict[str, Cell] = {
        "A": _hot("A", trio.CancelScope),
        "B": _hot("B", lambda: trio.fail_after(1000)),
        "C": lambda p: _run(_children, p),
        "D": lambda p: _run(_nest, p),
        "E": lambda p: {"E": _run(_fire, p.fire_ops)},
        "F": lambda p: {"F": _run(_shield, p.shield_seconds)},
        "G": lambda p: _run(_open_many, p.open_scopes),
        "H": lambda p: {"H": _run(_requests, p)},
    }
    notes = {"C": "waits with trio.testing.wait_all_tasks_blocked() for the children to block"}
    return {"trio": Column(cells, notes=notes)}
