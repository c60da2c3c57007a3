"""`cancel_once`: asyncio's one-shot cancellation for code whose cleanup relies on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

import cancelscope as cs

from ._helpers import HAS_COUNTS, cancelling, current_task, forever, no_unawaited_coroutine_warning


def _others() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {current_task()}


async def _cleanup_after_cancel(record: list[str], started: asyncio.Event, steps: int) -> str:
    """Wait until cancelled, then clean up over several suspension points, then re-raise."""
    try:
        await forever(started)
    except asyncio.CancelledError as exc:
        record.append(f"cancelled: {exc.args[0] if exc.args else None}")
        for i in range(steps):
            await asyncio.sleep(0)
            record.append(f"cleanup step {i}")
        raise
    return "unreachable"


async def _cancel_while_running(
    call: Callable[[], Awaitable[object]], started: asyncio.Event, reason: str | None = None
) -> tuple[cs.CancellationScope, asyncio.Task[None]]:
    """Await ``call()`` in a scope named "request" in a new task; cancel the scope once
    ``started`` is set. Returns the scope and the task (to be awaited by the test)."""
    scope = cs.cancellable(name="request")

    async def host() -> None:
        async with scope:
            await call()

    task = asyncio.create_task(host())
    await started.wait()
    scope.cancel(reason)
    return scope, task


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_returns_the_result_when_not_cancelled() -> None:
    """Without a cancellation it is a plain await: the result, and no task left behind."""

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    async with cs.cancellable():
        assert await cs.cancel_once(double, 21) == 42
    assert _others() == set()


@pytest.mark.asyncio
async def test_raises_the_calls_exception() -> None:
    """The call's own exception comes out unchanged."""

    async def broken() -> None:
        await asyncio.sleep(0)
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        await cs.cancel_once(broken)


@pytest.mark.asyncio
async def test_accepts_a_function_returning_any_awaitable() -> None:
    """A function returning a future (not a coroutine) works too."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert await cs.cancel_once(lambda: fut) == "done"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_a_cancelled_scope_cancels_the_call_once() -> None:
    """Cleanup after the one CancelledError runs to its end; then the scope reports its own."""
    record: list[str] = []
    started = asyncio.Event()

    scope, task = await _cancel_while_running(
        lambda: cs.cancel_once(_cleanup_after_cancel, record, started, 3), started, "client left"
    )
    with pytest.raises(cs.CancelledFailure) as info:
        await task
    assert info.value.scope is scope
    assert info.value.reason == "client left"
    assert record == [
        "cancelled: cancelled by scope 'request': client left",
        "cleanup step 0",
        "cleanup step 1",
        "cleanup step 2",
    ]
    assert scope.cancelled_caught
    if HAS_COUNTS:
        assert cancelling(task) == 0
    assert _others() == set()


@pytest.mark.asyncio
async def test_without_it_level_triggered_delivery_interrupts_that_cleanup() -> None:
    """The contrast: awaited directly, the same cleanup is cancelled at its first await."""
    record: list[str] = []
    started = asyncio.Event()

    _, task = await _cancel_while_running(
        lambda: _cleanup_after_cancel(record, started, 3), started, "client left"
    )
    with pytest.raises(cs.CancelledFailure):
        await task
    assert record == ["cancelled: cancelled by scope 'request': client left"]


@pytest.mark.asyncio
async def test_an_anyio_shielded_close_completes() -> None:
    """httpcore's pattern: on cancellation, close under an anyio shield, then re-raise."""
    record: list[str] = []
    started = asyncio.Event()
    closing = asyncio.Event()

    async def request() -> None:
        try:
            await forever(started)
        except BaseException:
            with anyio.CancelScope(shield=True):
                closing.set()
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                record.append("connection closed")
            raise

    _, task = await _cancel_while_running(lambda: cs.cancel_once(request), started)
    with pytest.raises(cs.CancelledFailure):
        await task
    assert closing.is_set()
    assert record == ["connection closed"]


@pytest.mark.asyncio
async def test_a_deadline_gives_timeout_failure() -> None:
    """A scope's deadline reaches the call once too, and the scope reports TimeoutFailure."""
    record: list[str] = []
    started = asyncio.Event()

    async def host() -> None:
        async with cs.with_timeout(3600, name="slow") as scope:
            loop = asyncio.get_running_loop()
            loop.call_soon(setattr, scope, "deadline", loop.time())
            await cs.cancel_once(_cleanup_after_cancel, record, started, 2)

    with pytest.raises(cs.TimeoutFailure):
        await host()
    assert record[1:] == ["cleanup step 0", "cleanup step 1"]


@pytest.mark.asyncio
async def test_a_native_cancel_during_cleanup_is_passed_on_once() -> None:
    """task.cancel() while the call cleans up: the call gets a second CancelledError, and the
    caller's cancellation passes the scope as foreign (it does not own it)."""
    record: list[str] = []
    started = asyncio.Event()
    in_cleanup = asyncio.Event()
    release = asyncio.Event()

    async def work() -> None:
        try:
            await forever(started)
        except asyncio.CancelledError:
            record.append("first cancel")
            in_cleanup.set()
            try:
                await release.wait()
            except asyncio.CancelledError as exc:
                record.append(f"second cancel: {exc.args[0] if exc.args else None}")
            raise

    scope, task = await _cancel_while_running(lambda: cs.cancel_once(work), started)
    await in_cleanup.wait()
    task.cancel("shutdown")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["first cancel", "second cancel: shutdown"]
    assert not scope.cancelled_caught
    if HAS_COUNTS:
        assert cancelling(task) == 1  # the native request is still there for its owner
    assert _others() == set()


@pytest.mark.asyncio
async def test_an_error_in_the_cleanup_wins() -> None:
    """If the cancelled call's cleanup raises, that error comes out, as if awaited directly."""
    started = asyncio.Event()

    async def work() -> None:
        try:
            await forever(started)
        except asyncio.CancelledError:
            raise OSError("close failed") from None

    _, task = await _cancel_while_running(lambda: cs.cancel_once(work), started)
    with pytest.raises(OSError, match="close failed"):
        await task


@pytest.mark.asyncio
async def test_a_call_that_ignores_the_cancel_still_leaves_the_caller_cancelled() -> None:
    """The call may swallow its CancelledError and return: the caller is cancelled all the same."""
    started = asyncio.Event()
    record: list[str] = []

    async def stubborn() -> str:
        try:
            await forever(started)
        except asyncio.CancelledError:
            record.append("swallowed")
        return "finished anyway"

    async def call() -> None:
        await cs.cancel_once(stubborn)
        record.append("not reached")

    _, task = await _cancel_while_running(call, started)
    with pytest.raises(cs.CancelledFailure):
        await task
    assert record == ["swallowed"]


@pytest.mark.asyncio
async def test_bad_input_is_refused_at_once_and_starts_nothing() -> None:
    """A non-callable, or a function returning no awaitable: TypeError at the call (no
    await needed), no task started."""

    async def coro_fn() -> None:
        pass

    with no_unawaited_coroutine_warning(), pytest.raises(TypeError, match="returning an awaitable"):
        _ = cs.cancel_once(coro_fn())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="returned int"):
        _ = cs.cancel_once(lambda: 3)  # type: ignore[arg-type, return-value]
    with pytest.raises(TypeError, match="not str"):
        _ = cs.cancel_once("fn")  # type: ignore[arg-type]
    assert _others() == set()


@pytest.mark.asyncio
async def test_nothing_starts_before_the_await() -> None:
    """A good call returns a coroutine; the task that runs the call starts when awaited."""
    ran: list[str] = []

    async def work() -> str:
        ran.append("ran")
        return "done"

    pending = cs.cancel_once(work)
    assert ran == []
    assert _others() == set()
    assert await pending == "done"
    assert ran == ["ran"]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["raise", "task.cancel()"])
async def test_a_call_that_cancels_itself_raises_cancelled_failure(how: str) -> None:
    """Nobody cancelled the caller: no bare CancelledError leaks into it (as in gather)."""

    async def quits() -> None:
        await asyncio.sleep(0)
        if how == "raise":
            raise asyncio.CancelledError("quit")
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(0)

    itself = r"cancel_once\(.*quits\) was cancelled by itself"
    with pytest.raises(cs.CancelledFailure, match=itself) as info:
        await cs.cancel_once(quits)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    if HAS_COUNTS:
        assert cancelling(current_task()) == 0
    assert _others() == set()
    # Inside a scope the caller keeps running: the scope was not cancelled either.
    async with cs.cancellable() as scope:
        with pytest.raises(cs.CancelledFailure):
            await cs.cancel_once(quits)
    assert not scope.cancel_called
