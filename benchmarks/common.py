"""Shared pieces of the benchmark cells: sizes, and generic asyncio measurements.

Every cell is a plain function ``cell(params) -> {case key: value}`` that starts its own
event loop (``asyncio.run`` or ``trio.run``), so no cell inherits another's loop state.
Loop start-up and shutdown are outside the timed sections. The garbage collector is
collected before and disabled during each timed section (as ``timeit`` does), for every
implementation alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

perf_ns = time.perf_counter_ns

#: a no-argument function returning a (sync or async) context manager
Factory = Callable[[], Any]
#: a cell: run one measurement and return {case key: value}
Cell = Callable[["Params"], dict[str, float]]


@dataclass
class Column:
    """One implementation's column: a cell per benchmark id, or the reason it has none."""

    cells: dict[str, Cell]
    unsupported: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Params:
    """Sizes of one run (``--quick`` makes them tiny)."""

    hot_ops: int = 50_000  # A, B: enter+exit per sample
    fire_ops: int = 5_000  # E: fired timeouts per sample
    children: int = 10_000  # C
    depths: tuple[int, ...] = (100, 1000)  # D
    nest_loops: int = 5  # D: nests per sample (averaged)
    shield_seconds: float = 0.5  # F
    open_scopes: int = 10_000  # G
    requests: int = 10_000  # H
    concurrency: int = 100  # H: requests in flight


QUICK = Params(
    hot_ops=300,
    fire_ops=50,
    children=100,
    depths=(100, 1000),
    nest_loops=1,
    shield_seconds=0.02,
    open_scopes=200,
    requests=100,
    concurrency=10,
)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Collect, then keep the collector off for a timed section."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --------------------------------------------------------------------------- A, B
async def hot_async(factory: Factory, n: int) -> float:
    """ns per ``async with factory(): pass``."""
    with no_gc():
        t0 = perf_ns()
        for _ in range(n):
            async with factory():
                pass
        t1 = perf_ns()
    return (t1 - t0) / n


async def hot_sync(factory: Factory, n: int) -> float:
    """ns per ``with factory(): pass`` (inside a task)."""
    with no_gc():
        t0 = perf_ns()
        for _ in range(n):
            with factory():
                pass
        t1 = perf_ns()
    return (t1 - t0) / n


def hot_cell(key: str, factory: Factory, *, sync: bool) -> Cell:
    """A cell timing enter+exit of ``factory()``."""

    def cell(p: Params) -> dict[str, float]:
        fn = hot_sync if sync else hot_async
        return {key: asyncio.run(fn(factory, p.hot_ops))}

    return cell


# --------------------------------------------------------------------------- E
def fire_cell(
    factory: Factory, catch: tuple[type[BaseException], ...], *, sync: bool
) -> Cell:
    """E: ns per ``factory()`` (a timeout of 0) firing around ``asyncio.sleep(1)``."""

    async def run(n: int) -> float:
        sleep = asyncio.sleep
        with no_gc():
            t0 = perf_ns()
            if sync:
                for _ in range(n):
                    try:
                        with factory():
                            await sleep(1)
                    except catch:
                        pass
            else:
                for _ in range(n):
                    try:
                        async with factory():
                            await sleep(1)
                    except catch:
                        pass
            t1 = perf_ns()
        return (t1 - t0) / n

    def cell(p: Params) -> dict[str, float]:
        return {"E": asyncio.run(run(p.fire_ops))}

    return cell


# --------------------------------------------------------------------------- D
#: returns (outer scope, a function cancelling it); the scope swallows its own cancel
Outer = Callable[[], tuple[Any, Callable[[], None]]]


async def _enter_all(
    stack: contextlib.AsyncExitStack[Any], cms: list[Any], *, sync: bool
) -> None:
    if sync:
        for cm in cms:
            stack.enter_context(cm)
    else:
        for cm in cms:
            await stack.enter_async_context(cm)


def nest_cell(
    inner: Factory,
    outer: Outer,
    *,
    sync: bool,
    catch: tuple[type[BaseException], ...] = (),
) -> Cell:
    """D: a nest of ``depth`` scopes (an ``outer`` one plus ``depth - 1`` inner ones).

    ``D.nest.N``: µs to enter and exit the whole nest, nothing cancelled.
    ``D.cancel.N``: µs from cancelling the outermost scope (the host task blocked in the
    innermost) until the host task has left the nest and its awaiter has resumed.
    """

    async def plain(depth: int) -> int:
        cms = [inner() for _ in range(depth)]
        t0 = perf_ns()
        async with contextlib.AsyncExitStack() as stack:
            await _enter_all(stack, cms, sync=sync)
        return perf_ns() - t0

    async def cancelled(depth: int) -> int:
        ready = asyncio.Event()
        cancel: list[Callable[[], None]] = []

        async def host() -> None:
            try:
                async with contextlib.AsyncExitStack() as stack:
                    scope, cancel_fn = outer()
                    cms = [inner() for _ in range(depth - 1)]
                    await _enter_all(stack, [scope, *cms], sync=sync)
                    cancel.append(cancel_fn)
                    ready.set()
                    await asyncio.sleep(3600)
            except catch:
                pass

        task = asyncio.create_task(host())
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():  # the host failed while building the nest
            waiter.cancel()
            await task
            raise RuntimeError("the host task ended before it was blocked")
        await waiter
        t0 = perf_ns()
        cancel[0]()
        await task
        return perf_ns() - t0

    async def run(p: Params) -> dict[str, float]:
        out: dict[str, float] = {}
        with no_gc():
            for depth in p.depths:
                out[f"D.nest.{depth}"] = (
                    sum([await plain(depth) for _ in range(p.nest_loops)]) / p.nest_loops / 1e3
                )
                out[f"D.cancel.{depth}"] = (
                    sum([await cancelled(depth) for _ in range(p.nest_loops)])
                    / p.nest_loops
                    / 1e3
                )
        return out

    def cell(p: Params) -> dict[str, float]:
        return asyncio.run(run(p))

    return cell


# --------------------------------------------------------------------------- F
def shield_cell(outer: Outer, shield: Factory, *, sync: bool) -> Cell:
    """F: process CPU time (as % of wall time) while the task sits in ``shield()`` inside
    an ``outer`` scope that is cancelled right after the shield is entered."""

    async def run(seconds: float) -> float:
        scope, cancel = outer()
        if sync:
            with scope, shield():
                cancel()
                w0, c0 = perf_ns(), time.process_time_ns()
                await asyncio.sleep(seconds)
                c1, w1 = time.process_time_ns(), perf_ns()
        else:
            async with scope, shield():
                cancel()
                w0, c0 = perf_ns(), time.process_time_ns()
                await asyncio.sleep(seconds)
                c1, w1 = time.process_time_ns(), perf_ns()
        return 100.0 * (c1 - c0) / (w1 - w0)

    def cell(p: Params) -> dict[str, float]:
        return {"F": asyncio.run(run(p.shield_seconds))}

    return cell


def idle_cell() -> Cell:
    """F baseline: CPU % of an idle ``asyncio.sleep`` (nothing cancelled, nothing shielded)."""

    async def run(seconds: float) -> float:
        w0, c0 = perf_ns(), time.process_time_ns()
        await asyncio.sleep(seconds)
        c1, w1 = time.process_time_ns(), perf_ns()
        return 100.0 * (c1 - c0) / (w1 - w0)

    def cell(p: Params) -> dict[str, float]:
        return {"F": asyncio.run(run(p.shield_seconds))}

    return cell


# --------------------------------------------------------------------------- G
async def open_many(plain: Factory, deadline: Factory, n: int, *, sync: bool) -> dict[str, float]:
    """G: traced bytes per scope with ``n`` scopes open at once (nested in one task)."""
    out: dict[str, float] = {}
    for key, factory in (("G", plain), ("G.deadline", deadline)):
        scopes: list[Any] = [None] * n
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                scope = factory()
                if sync:
                    scope.__enter__()
                else:
                    await scope.__aenter__()
                scopes[i] = scope
            used = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        for scope in reversed(scopes):
            if sync:
                scope.__exit__(None, None, None)
            else:
                await scope.__aexit__(None, None, None)
        out[key] = used / n
    return out


def memory_cell(plain: Factory, deadline: Factory, *, sync: bool) -> Cell:
    def cell(p: Params) -> dict[str, float]:
        return asyncio.run(open_many(plain, deadline, p.open_scopes, sync=sync))

    return cell


# --------------------------------------------------------------------------- C
async def sleeper() -> None:
    """A child for C: sleeps for an hour, i.e. until it is cancelled."""
    await asyncio.sleep(3600)


# --------------------------------------------------------------------------- H
async def fetch(i: int) -> int:
    """One of the handler's three awaits: simulated I/O that completes next iteration."""
    await asyncio.sleep(0)
    return i


def requests_cell(handler: Callable[[int], Awaitable[int]]) -> Cell:
    """H: requests per second through ``handler``, ``concurrency`` requests in flight."""

    async def run(p: Params) -> float:
        per_worker = p.requests // p.concurrency

        async def worker() -> None:
            for i in range(per_worker):
                await handler(i)

        with no_gc():
            t0 = perf_ns()
            await asyncio.gather(*[worker() for _ in range(p.concurrency)])
            t1 = perf_ns()
        return per_worker * p.concurrency / ((t1 - t0) / 1e9)

    def cell(p: Params) -> dict[str, float]:
        return {"H": asyncio.run(run(p))}

    return cell
