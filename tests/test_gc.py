"""Cancelled scopes, their requests, children and handles form no reference cycles."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

import cancelscope as cs
from cancelscope import _scope, _tasks, _token

from ._helpers import ExceptionGroup

OURS = (cs.CancellationScope, cs.TaskHandle, _scope._Request, _scope._Extra, _tasks._ChildScope)


@pytest.fixture
def garbage() -> Iterator[list[object]]:
    """Collect with DEBUG_SAVEALL around the test; yield the list the test fills."""
    found: list[object] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _collect_ours(found: list[object]) -> None:
    gc.collect()
    found.extend(o for o in gc.garbage if isinstance(o, OURS))
    gc.garbage.clear()


async def _sleep_long() -> None:
    await asyncio.sleep(3600)


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_timed_out_scope_with_children_leaves_no_cycle(garbage: list[object]) -> None:
    """A scope that timed out while owning children is freed by reference counting alone."""
    try:
        async with cs.with_timeout(1, name="t") as scope:
            handle = scope.spawn(_sleep_long)
            await asyncio.sleep(3600)
    except cs.TimeoutFailure:
        pass
    assert handle.cancelled()
    del scope, handle
    _collect_ours(garbage)
    assert garbage == []


@pytest.mark.asyncio
async def test_cancelled_nest_and_failed_child_leave_no_cycle(garbage: list[object]) -> None:
    """Nested cancelled scopes, a failed child and a handle-cancelled child leave no cycle."""

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    async def body(outer: cs.CancellationScope) -> None:
        async with outer, cs.cancellable(name="inner"):
            outer.spawn(_sleep_long).cancel("one")
            outer.spawn(fail)
            await asyncio.sleep(3600)

    outer = cs.cancellable(name="outer")
    with pytest.raises(ExceptionGroup) as info:
        await body(outer)
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    del info
    assert outer.cancelled_caught
    del outer
    _collect_ours(garbage)
    assert garbage == []


@pytest.mark.asyncio
async def test_tokens_links_and_helpers_leave_no_cycle(garbage: list[object]) -> None:
    """scope.token, token=, on_cancel, CancelToken.any, to_thread and race leave no cycle."""
    external = cs.CancelToken()
    combined = cs.CancelToken.any(external, cs.CancelToken())
    linked = cs.CancellationScope(token=combined, raise_on_cancel=False)
    async with cs.move_on_after(None) as outer, linked:
        linked.on_cancel(dict)
        linked.on_cancel(int)
        assert await cs.to_thread(int, 7) == 7
        assert await cs.race(asyncio.sleep(0, "a"), _sleep_long()) == "a"
        external.cancel("stop")
        await asyncio.sleep(0)
    assert linked.cancelled_caught
    assert outer.token.cancelled is False
    del outer, linked, combined, external
    gc.collect()
    found = [o for o in gc.garbage if isinstance(o, (*OURS, _token.CancelToken))]
    gc.garbage.clear()
    assert found == []
