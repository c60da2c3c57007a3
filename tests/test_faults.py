"""Faults: user callbacks that raise, children failing in cleanup, interrupts, a closed loop.

Each case ends with the outcome docs/semantics.md §10 documents and with nothing left
running: no task, no timer.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import (
    HAS_COUNTS,
    BaseExceptionGroup,
    ExceptionGroup,
    forever,
    live_timers,
    run_on_private_loop,
)


def _others() -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me]


def _record_loop_errors(found: list[dict[str, Any]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: found.append(ctx))


# --------------------------------------------------------------------------- user callbacks


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_raising_cancel_requested_callback_goes_to_the_loop_handler() -> None:
    """A done-callback of cancel_requested that raises is reported to the loop; the scope exits."""
    errors: list[dict[str, Any]] = []
    _record_loop_errors(errors)
    record: list[str] = []

    def bad(_fut: asyncio.Future[cs.CancelledFailure]) -> None:
        record.append("callback ran")
        raise ZeroDivisionError("in callback")

    async def body() -> None:
        async with cs.cancellable(name="s") as scope:
            scope.cancel_requested.add_done_callback(bad)
            scope.spawn(forever)
            scope.cancel("stop")
            await forever()

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.reason == "stop"
    await asyncio.sleep(0)  # the callback runs from the loop
    assert record == ["callback ran"]
    assert [type(ctx.get("exception")) for ctx in errors] == [ZeroDivisionError]
    assert _others() == []


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_loop_callback_that_cancels_then_raises_still_cancels() -> None:
    """A loop callback calling cancel() and then raising: the cancel holds, the error is logged."""
    errors: list[dict[str, Any]] = []
    _record_loop_errors(errors)

    def cancel_then_raise(scope: cs.CancellationScope) -> None:
        scope.cancel("from a callback")
        raise KeyError("after cancel")

    async with cs.move_on_after(None, name="s") as scope:
        asyncio.get_running_loop().call_soon(cancel_then_raise, scope)
        await forever()
    assert scope.cancelled_caught
    assert scope.cancel_reason == "from a callback"
    assert [type(ctx.get("exception")) for ctx in errors] == [KeyError]


# --------------------------------------------------------------------------- children in cleanup


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_raising_during_cancellation_cleanup_is_a_failure() -> None:
    """A child raising from its cleanup is reported; a sibling's awaiting cleanup finishes first."""
    record: list[str] = []

    async def raises_in_cleanup() -> None:
        try:
            await forever()
        finally:
            raise ValueError("cleanup failed")

    async def slow_cleanup() -> None:
        try:
            await forever()
        finally:
            async with cs.non_cancellable():
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            record.append("slow cleanup done")

    scope = cs.cancellable(name="s")

    async def body() -> None:
        async with scope:
            scope.spawn(raises_in_cleanup)
            scope.spawn(slow_cleanup)
            await asyncio.sleep(0)
            scope.cancel("stop")
            await forever()

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert [repr(e) for e in info.value.exceptions] == ["ValueError('cleanup failed')"]
    assert scope.cancelled_caught
    assert record == ["slow cleanup done"]
    assert _others() == []


# --------------------------------------------------------------------------- host cancelled in exit


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("times", [1, 2])
async def test_host_cancelled_while_waiting_for_children(times: int) -> None:
    """task.cancel() (once or twice) during the exit's wait: children cancelled, then re-raised."""
    record: list[str] = []
    waiting = asyncio.Event()
    release = asyncio.Event()

    async def shielded_child() -> None:
        async with cs.non_cancellable():
            waiting.set()
            await release.wait()
            record.append("shielded child finished its work")

    async def unshielded_child() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            record.append("unshielded child cancelled")
            raise

    async def host() -> None:
        async with cs.cancellable(name="s") as scope:
            scope.spawn(shielded_child)
            scope.spawn(unshielded_child)
            await waiting.wait()
        record.append("not reached")  # pragma: no cover

    task = asyncio.get_running_loop().create_task(host())
    await waiting.wait()
    await asyncio.sleep(0)  # the host is now in the exit's wait
    for i in range(times):
        task.cancel(f"native {i}")
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    if HAS_COUNTS:  # 3.10 hands the awaiter of a cancelled task a message-less copy
        assert info.value.args == ("native 0",)
    assert record == ["unshielded child cancelled", "shielded child finished its work"]
    if HAS_COUNTS:
        assert task.cancelling() == times  # both requests still the canceller's to withdraw
    assert _others() == []


# --------------------------------------------------------------------------- interrupts


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_a_child_is_raised_in_a_base_group(kind: type[BaseException]) -> None:
    """KeyboardInterrupt/SystemExit in a child: siblings cancelled, a BaseExceptionGroup escapes."""
    record: list[str] = []
    raised = kind()

    async def interrupt() -> None:
        await asyncio.sleep(0)
        raise raised

    async def main() -> None:
        async with cs.cancellable() as scope:
            scope.spawn(forever_noting, record, "sibling cancelled")
            scope.spawn(interrupt)
            await forever_noting(record, "body cancelled")
        record.append("not reached")  # pragma: no cover

    escaped = run_on_private_loop(main)
    assert len(escaped) == 1
    group = escaped[0]
    assert isinstance(group, BaseExceptionGroup)
    assert not isinstance(group, ExceptionGroup)
    assert list(group.exceptions) == [raised]
    assert sorted(record) == ["body cancelled", "sibling cancelled"]


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
def test_interrupt_in_the_body_propagates_bare_after_the_children(
    kind: type[BaseException],
) -> None:
    """KeyboardInterrupt/SystemExit in the body: children cancelled and awaited, then it escapes."""
    record: list[str] = []
    raised = kind()

    async def main() -> None:
        async with cs.cancellable() as scope:
            scope.spawn(forever_noting, record, "child cancelled")
            await asyncio.sleep(0)
            raise raised

    escaped = run_on_private_loop(main)
    assert escaped == [raised]
    assert record == ["child cancelled"]


async def forever_noting(record: list[str], note: str) -> None:
    """Wait forever; note the cancellation in ``record`` and re-raise it."""
    try:
        await forever()
    except asyncio.CancelledError:
        record.append(note)
        raise


# --------------------------------------------------------------------------- shielded laggard


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_child_ignoring_cancellation_in_a_shield_delays_the_exit() -> None:
    """A child finishing 5s of shielded work after its scope timed out: exit at t=6, then report."""
    loop = asyncio.get_running_loop()
    record: list[str] = []

    async def laggard() -> None:
        async with cs.non_cancellable():
            await asyncio.sleep(6)
            record.append(f"shielded work done at {loop.time():g}")
        await asyncio.sleep(0)
        record.append("not reached")  # pragma: no cover

    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with cs.with_timeout(1, name="t") as scope:
            handles.append(scope.spawn(laggard))
            await forever()

    with pytest.raises(cs.TimeoutFailure):
        await body()
    handle = handles[0]
    record.append(f"exit at {loop.time():g}")
    assert record == ["shielded work done at 6", "exit at 6"]
    assert handle.cancelled()
    assert live_timers() == set()
    assert _others() == []


# --------------------------------------------------------------------------- closed loop


def test_asyncio_run_shutdown_closes_open_scopes_in_background_tasks() -> None:
    """asyncio.run's shutdown cancels a background task inside scopes: they exit, children too."""
    record: list[str] = []

    async def background(started: asyncio.Event) -> None:
        try:
            async with cs.with_timeout(3600, name="outer") as scope:
                scope.spawn(forever_noting, record, "child cancelled")
                async with cs.non_cancellable():
                    started.set()
                    await forever()
        except asyncio.CancelledError:
            record.append(f"background got CancelledError; timer {scope._timer}")
            raise

    async def main() -> None:
        started = asyncio.Event()
        asyncio.get_running_loop().create_task(background(started))
        await started.wait()

    assert run_on_private_loop(main) == []
    assert record == ["child cancelled", "background got CancelledError; timer None"]


@pytest.mark.parametrize("host_in_exit", [False, True], ids=["host-in-body", "host-in-exit"])
def test_loop_closed_with_open_scopes_unwinds_quietly(host_in_exit: bool) -> None:
    """Regression: a loop closed under open scopes; closing the coroutines raised RuntimeError.

    The tasks can never run again: cancel() is dropped without error, and closing their
    coroutines (as garbage collection does) unwinds every scope quietly, timers cancelled.
    """
    loop = asyncio.new_event_loop()
    scopes: list[cs.CancellationScope] = []
    holders: list[asyncio.Task[None]] = []
    started = asyncio.Event()

    async def child() -> None:
        async with cs.move_on_after(3600, name="child's") as scope:
            scopes.append(scope)
            started.set()
            await forever()

    async def holder() -> None:
        async with cs.with_timeout(3600, name="host's") as scope:
            scopes.append(scope)
            scope.spawn(child)
            if not host_in_exit:
                await forever()

    async def start() -> None:
        holders.append(loop.create_task(holder()))
        await started.wait()
        await asyncio.sleep(0)

    loop.run_until_complete(start())
    tasks = asyncio.all_tasks(loop)
    assert len(tasks) == 2
    loop.close()
    assert all(scope.active for scope in scopes)
    scopes[0].cancel("after close")  # handed to a closed loop: dropped, no error
    assert not scopes[0].cancel_called
    for task in tasks:
        task._log_destroy_pending = False  # type: ignore[attr-defined]  # asyncio's to report
        coro = task.get_coro()
        assert coro is not None
        coro.close()  # what collecting the pending task does
    assert [scope.active for scope in scopes] == [False, False]
    assert [scope._timer for scope in scopes] == [None, None]
    del tasks
    del coro
    gc.collect()


@pytest.mark.asyncio
async def test_generator_exit_raised_inside_a_child_is_still_a_failure() -> None:
    """Only a coroutine closed from outside its task unwinds quietly; a raised one fails."""
    raised = GeneratorExit()

    async def child() -> None:
        await asyncio.sleep(0)
        raise raised

    async def body() -> None:
        async with cs.cancellable() as scope:
            scope.spawn(child)
            await forever()

    with pytest.raises(BaseExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [raised]
