"""Stress: many children, many deadlines at once, long runs of scopes, no cycles under load.

Sizes are kept small enough for CI (the whole module takes a few seconds per Python); set
``CANCELSCOPE_SOAK=1`` for the sizes named in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import tracemalloc
from typing import Any

import pytest

import cancelscope as cs
from cancelscope import _scope, _tasks

from ._helpers import TimerTracker, cancelling, current_task, live_timers

SOAK = os.environ.get("CANCELSCOPE_SOAK", "") not in ("", "0")

# CI sizes, and bigger ones for a soak
CHILDREN = 100_000
DEADLINES = 10_000
SEQUENTIAL = 1_000_000 if SOAK else 100_000
NEST = 10_000 if SOAK else 1_000
# tracemalloc growth allowed over a run of sequential scopes, whatever its length: a leak of
# even one byte per scope would exceed it at either size.
MEMORY_BOUND = 64 * 1024

OURS = (cs.CancellationScope, cs.TaskHandle, _scope._Request, _tasks._ChildScope)


async def _park() -> None:
    """Wait on a future of its own until cancelled (no shared waiter list to contend on)."""
    await asyncio.get_running_loop().create_future()


def _our_tasks_left() -> list[asyncio.Task[Any]]:
    """Tasks of the running loop other than the current one."""
    me = current_task()
    return [t for t in asyncio.all_tasks() if t is not me]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_many_children_cancelled_at_once() -> None:
    """CHILDREN children of one scope, all parked, are cancelled by one request and awaited."""
    task = current_task()
    entry = cancelling(task)
    handles: list[cs.TaskHandle[None]] = []
    scope = cs.cancellable(name="many")

    async def body() -> None:
        async with scope:
            handles.extend(scope.spawn(_park) for _ in range(CHILDREN))
            await asyncio.sleep(0)
            scope.cancel("all at once")
            await asyncio.sleep(0)

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is scope
    assert scope.cancelled_caught
    assert all(h.cancelled() for h in handles)
    assert _our_tasks_left() == []
    assert cancelling(task) == entry


class _Passes:
    """Were events seen in one pass over the loop's ready queue (one loop iteration)?

    `seen` records one; the first also schedules a ``call_soon`` marker, which runs in the
    next pass, after every callback already queued in this one. ``before_marker`` counts
    what was seen before the marker ran: all of it, when everything came in one pass.
    """

    def __init__(self) -> None:
        self.count = 0
        self.before_marker: int | None = None

    def seen(self) -> None:
        self.count += 1
        if self.count == 1:
            asyncio.get_running_loop().call_soon(self.marker)

    def marker(self) -> None:
        self.before_marker = self.count


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_many_deadlines_fire_in_one_iteration() -> None:
    """DEADLINES scopes in as many children, each with its own timer at t=5, all fire at t=5,
    and every scope exits in one loop iteration."""
    loop = asyncio.get_running_loop()
    caught: list[float] = []
    passes = _Passes()

    async def timed() -> None:
        async with cs.move_on_at(5) as scope:
            await asyncio.sleep(3600)
        assert scope.cancelled_caught
        caught.append(loop.time())
        passes.seen()

    async with cs.cancellable() as outer:
        for _ in range(DEADLINES):
            outer.spawn(timed)
    assert caught == [5.0] * DEADLINES
    assert passes.before_marker == DEADLINES
    assert loop.time() == 5
    assert not outer.cancel_called
    assert live_timers() == set()
    assert _our_tasks_left() == []


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_many_deadlines_fire_in_one_iteration_on_the_real_clock() -> None:
    """The same without a virtual clock (which uvloop cannot have): DEADLINES parked children
    each in its own scope, all given one real deadline a little ahead, all fire by it.

    The deadline is at least 50 ms ahead, and four times as far as arming the timers once
    took. One iteration is checked on the default loop (with or without the eager task
    factory), unless arming them again took longer than that (the process stalled): then
    some scopes found their deadline passed and were cancelled at once, not by a timer.
    Not on uvloop: it reads its clock twice when it arms a timer (for the delay, then when
    it starts the libuv timer), so timers given one absolute deadline can land a millisecond
    apart (11 of 10,000 in one run here) and fire an iteration later. Everything else is checked
    on every loop: each scope cancelled by its own deadline, exited, no timer or task left.
    """
    loop = asyncio.get_running_loop()
    timers = TimerTracker(loop)
    scopes: list[cs.CancellationScope] = []
    all_in = asyncio.Event()
    passes = _Passes()

    async def timed() -> None:
        async with cs.move_on_at(None) as scope:
            scopes.append(scope)
            if len(scopes) == DEADLINES:
                all_in.set()
            await loop.create_future()
        passes.seen()

    try:
        async with cs.cancellable() as outer:
            for _ in range(DEADLINES):
                outer.spawn(timed)
            await all_in.wait()
            # Arm every timer once, far ahead, to see how long arming takes (uvloop: about
            # 0.1 s for 10,000), then give them all one deadline well beyond that.
            started = loop.time()
            for scope in scopes:
                scope.deadline = started + 3600
            deadline = loop.time() + max(0.05, 4 * (loop.time() - started))
            for scope in scopes:
                scope.deadline = deadline
            armed = loop.time() < deadline
            # The body ends; the exit waits for the children, which wait for the deadline.
    finally:
        timers.restore()
    assert passes.count == DEADLINES
    if armed and not type(loop).__module__.startswith("uvloop"):
        assert passes.before_marker == DEADLINES
    for scope in scopes:
        assert scope.cancel_called
        assert scope.cancelled_caught
        assert scope._timer is None
        failure = scope.cancel_requested.result()
        assert isinstance(failure, cs.TimeoutFailure)
        assert failure.scope is scope
        assert failure.deadline == deadline
    assert not outer.cancel_called
    assert timers.live() == []
    assert live_timers() == set()
    assert _our_tasks_left() == []


@pytest.mark.asyncio
async def test_sequential_scopes_keep_memory_flat() -> None:
    """SEQUENTIAL enter/exits (plain, cancelled, with a deadline) leave tracemalloc flat."""

    async def cycle(n: int) -> None:
        for i in range(n):
            kind = i % 3
            if kind == 0:
                async with cs.cancellable():
                    pass
            elif kind == 1:
                async with cs.move_on_after(3600):
                    pass
            else:
                try:
                    async with cs.cancellable(name="c") as scope:
                        scope.cancel("again")
                        await asyncio.sleep(0)
                except cs.CancelledFailure:
                    pass

    await cycle(3_000)  # warm caches, free lists and the loop's internals
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await cycle(SEQUENTIAL)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < MEMORY_BOUND
    assert live_timers() == set()


@pytest.mark.asyncio
async def test_a_million_sequential_scopes_allocate_nothing_lasting() -> None:
    """1,000,000 enter/exits (every CI run): the count of live allocated blocks stays flat.

    The tracemalloc version above measures bytes but slows every allocation, so CI runs it
    at a tenth of this size; ``sys.getallocatedblocks()`` costs nothing per allocation, so
    the full million runs here: one object kept per 1,000 scopes would already fail.
    """

    async def cycle(n: int) -> None:
        for i in range(n):
            if i % 2:
                async with cs.move_on_after(3600):
                    pass
            else:
                with cs.CancellationScope():
                    pass
            if i % 1_000 == 0:
                # Let the loop run: it drops cancelled timer handles from its heap only
                # in an iteration (without this, 500,000 of them pile up, scopes or not).
                await asyncio.sleep(0)

    await cycle(3_000)
    gc.collect()
    before = sys.getallocatedblocks()
    await cycle(1_000_000)
    gc.collect()
    after = sys.getallocatedblocks()
    assert after - before < 1_000
    assert live_timers() == set()


@pytest.mark.asyncio
async def test_cancellation_through_a_deep_nest_leaves_no_cycle() -> None:
    """A CancelledError crossing NEST scopes (children at every tenth) creates no garbage cycle."""

    async def nest(top: cs.CancellationScope) -> None:
        # An exit stack, not recursion: the depth is not bounded by Python's stack.
        async with contextlib.AsyncExitStack() as stack:
            for depth in range(NEST, 0, -1):
                scope = await stack.enter_async_context(cs.cancellable(name=f"level {depth}"))
                if depth % 10 == 0:
                    scope.spawn(_park)
            top.cancel("from the bottom")
            await asyncio.sleep(3600)

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        top = cs.cancellable(name="top")
        with pytest.raises(cs.CancelledFailure) as info:
            async with top:
                await nest(top)
        assert info.value.scope is top
        del info, top
        gc.collect()
        ours = [o for o in gc.garbage if isinstance(o, OURS)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert ours == []
    assert _our_tasks_left() == []
