"""gather, race and first_success: results, failures, losers' cleanup, outside cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import (
    ExceptionGroup,
    forever,
    forever_noting_cancel,
    forever_raising_on_cancel,
    no_unawaited_coroutine_warning,
)


class Stop(BaseException):
    """A non-Exception failure (stands in for KeyboardInterrupt without stopping pytest)."""


async def value_after(event: asyncio.Event, value: Any) -> Any:
    """Return ``value`` once ``event`` is set."""
    await event.wait()
    return value


async def raise_after(event: asyncio.Event, exc: BaseException) -> None:
    """Raise ``exc`` once ``event`` is set."""
    await event.wait()
    raise exc


async def slow_cleanup(record: list[str], note: str, go: asyncio.Event) -> None:
    """Wait forever; when cancelled, wait (shielded) for ``go``, then note and re-raise."""
    try:
        await forever()
    except asyncio.CancelledError:
        async with cs.non_cancellable():
            await go.wait()
        record.append(note)
        raise


async def set_soon(event: asyncio.Event) -> None:
    """Set ``event`` after a few loop turns."""
    for _ in range(3):
        await asyncio.sleep(0)
    event.set()


async def cancel_scope_when(event: asyncio.Event, scope: cs.CancellationScope) -> None:
    """Cancel ``scope`` once ``event`` is set."""
    await event.wait()
    scope.cancel("from outside")


# --------------------------------------------------------------------------- gather


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gather_results_in_argument_order() -> None:
    """gather returns a tuple in argument order, whatever the completion order."""
    first, second = asyncio.Event(), asyncio.Event()

    async def finish_first() -> str:
        await asyncio.sleep(0)
        second.set()
        return "b"

    async def finish_second() -> str:
        await second.wait()
        first.set()
        return "a"

    assert await cs.gather(finish_second(), finish_first(), value_after(first, 3)) == (
        "a",
        "b",
        3,
    )
    assert await cs.gather() == ()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gather_first_failure_cancels_the_rest_and_waits_for_cleanup() -> None:
    """A failure cancels the siblings; gather raises it bare only after their cleanup ran."""
    record: list[str] = []
    started, go = asyncio.Event(), asyncio.Event()
    with pytest.raises(ValueError, match="boom"):
        await asyncio.gather(
            cs.gather(
                slow_cleanup(record, "sibling cleaned up", go),
                forever_noting_cancel(record, "other cancelled", started),
                raise_after(started, ValueError("boom")),
            ),
            set_soon(go),
        )
    assert sorted(record) == ["other cancelled", "sibling cleaned up"]


@pytest.mark.asyncio
async def test_gather_two_failures_give_a_group() -> None:
    """Two awaitables failing together: both errors in an ExceptionGroup, nothing lost."""
    go = asyncio.Event()
    go.set()
    with pytest.raises(ExceptionGroup) as info:
        await cs.gather(raise_after(go, ValueError("one")), raise_after(go, KeyError("two")))
    assert [type(e) for e in info.value.exceptions] == [ValueError, KeyError]


@pytest.mark.asyncio
async def test_gather_cleanup_failure_is_not_lost() -> None:
    """A sibling whose cleanup raises adds its error to the group."""
    started = asyncio.Event()
    with pytest.raises(ExceptionGroup) as info:
        await cs.gather(
            forever_raising_on_cancel(OSError("cleanup failed"), started),
            raise_after(started, ValueError("first")),
        )
    assert [type(e) for e in info.value.exceptions] == [ValueError, OSError]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gather_cancelled_from_outside() -> None:
    """An enclosing scope's cancellation cancels every awaitable and surfaces as its failure."""
    record: list[str] = []
    started = asyncio.Event()

    async def body() -> None:
        async with cs.cancellable() as outer:
            outer.spawn(cancel_scope_when, started, outer)
            await cs.gather(
                forever_noting_cancel(record, "a cancelled", started),
                forever_noting_cancel(record, "b cancelled"),
            )

    with pytest.raises(cs.CancelledFailure, match="from outside"):
        await body()
    assert sorted(record) == ["a cancelled", "b cancelled"]


@pytest.mark.asyncio
async def test_gather_native_cancel_waits_for_the_awaitables() -> None:
    """task.cancel() on gather's caller cancels the awaitables, waits, and raises CancelledError."""
    record: list[str] = []
    started, go = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        cs.gather(slow_cleanup(record, "cleaned up", go), forever(started))
    )
    await started.wait()
    task.cancel()
    await set_soon(go)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["cleaned up"]


@pytest.mark.asyncio
async def test_gather_self_cancelled_awaitable_is_a_failure() -> None:
    """An awaitable that cancels itself fails gather with CancelledFailure; siblings stop."""
    record: list[str] = []

    async def cancels_itself() -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    with pytest.raises(cs.CancelledFailure, match="cancelled by itself") as info:
        await cs.gather(forever_noting_cancel(record, "sibling cancelled"), cancels_itself())
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert record == ["sibling cancelled"]


@pytest.mark.asyncio
async def test_gather_accepts_tasks_and_futures() -> None:
    """Tasks and futures are awaitables too."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    fut.set_result(1)
    task = asyncio.create_task(asyncio.sleep(0, result=2))
    assert await cs.gather(fut, task) == (1, 2)


@pytest.mark.asyncio
async def test_bad_arguments_raise_and_close_coroutines() -> None:
    """A non-awaitable raises TypeError at the call, not when awaited; coroutines passed
    alongside are closed, and no task is started."""
    before = asyncio.all_tasks()
    with no_unawaited_coroutine_warning():
        with pytest.raises(TypeError, match="argument 1 is function; did you forget"):
            _ = cs.gather(asyncio.sleep(0), forever)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="race\\(\\) takes awaitables"):
            _ = cs.race(asyncio.sleep(0), 3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="first_success\\(\\) takes awaitables"):
            _ = cs.first_success(None, asyncio.sleep(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="race\\(\\) needs at least one awaitable"):
        _ = cs.race()
    with pytest.raises(ValueError, match="first_success\\(\\) needs at least one"):
        _ = cs.first_success()
    assert asyncio.all_tasks() == before


@pytest.mark.asyncio
async def test_helpers_return_coroutines_that_start_only_when_awaited() -> None:
    """A valid call returns a coroutine: nothing runs before it is awaited (or made a task)."""
    ran: list[int] = []

    async def note(i: int) -> int:
        ran.append(i)
        return i

    pending = cs.gather(note(1), note(2))
    race = cs.race(note(3))
    first = cs.first_success(note(4))
    assert ran == []
    assert await pending == (1, 2)
    assert await asyncio.create_task(race) == 3
    assert await first == 4
    assert ran == [1, 2, 3, 4]


# --------------------------------------------------------------------------- race


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_race_winner_returns_after_losers_are_cancelled_and_awaited() -> None:
    """The first to finish wins; the losers' cleanup has run when race returns."""
    record: list[str] = []
    go = asyncio.Event()

    async def quick() -> str:
        await asyncio.sleep(0)
        return "quick"

    result = await asyncio.gather(
        cs.race(slow_cleanup(record, "slow loser cleaned up", go), quick()), set_soon(go)
    )
    assert list(result) == ["quick", None]
    assert record == ["slow loser cleaned up"]


@pytest.mark.asyncio
async def test_race_winner_error_is_raised() -> None:
    """A winner that fails makes race raise its error bare; losers are cancelled."""
    record: list[str] = []
    started = asyncio.Event()
    with pytest.raises(KeyError):
        await cs.race(
            forever_noting_cancel(record, "loser cancelled", started),
            raise_after(started, KeyError("first to finish")),
        )
    assert record == ["loser cancelled"]


@pytest.mark.asyncio
async def test_race_loser_cleanup_error_is_not_lost() -> None:
    """A loser whose cleanup fails: its error is raised even though another awaitable won."""
    started = asyncio.Event()
    with pytest.raises(OSError, match="cleanup failed"):
        await cs.race(
            forever_raising_on_cancel(OSError("cleanup failed"), started),
            value_after(started, "winner"),
        )


@pytest.mark.asyncio
async def test_race_winner_error_and_loser_cleanup_error_group() -> None:
    """A failing winner plus a failing loser cleanup: both in a group, winner first."""
    started = asyncio.Event()
    with pytest.raises(ExceptionGroup) as info:
        await cs.race(
            forever_raising_on_cancel(OSError("cleanup"), started),
            raise_after(started, KeyError("winner")),
        )
    assert [type(e) for e in info.value.exceptions] == [KeyError, OSError]


@pytest.mark.asyncio
async def test_race_loser_returning_after_cancel_is_ignored() -> None:
    """A loser that swallows its cancellation and returns does not change the winner."""
    started = asyncio.Event()

    async def stubborn() -> str:
        try:
            await forever(started)
        except asyncio.CancelledError:
            return "late"
        return "never"

    assert await cs.race(stubborn(), value_after(started, "winner")) == "winner"


@pytest.mark.asyncio
async def test_race_cancelled_from_outside() -> None:
    """race cancelled by an enclosing scope cancels all and reports that scope's cancellation."""
    record: list[str] = []
    started = asyncio.Event()
    async with cs.move_on_after(None) as outer:
        outer.spawn(cancel_scope_when, started, outer)
        await cs.race(
            forever_noting_cancel(record, "a", started), forever_noting_cancel(record, "b")
        )
        record.append("not reached")
    assert outer.cancelled_caught
    assert sorted(record) == ["a", "b"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_race_as_a_timeout() -> None:
    """race(work, sleep) is a timeout with cancellation: the work is cancelled at the deadline."""
    loop = asyncio.get_running_loop()
    record: list[str] = []

    async def deadline() -> str:
        await asyncio.sleep(1.5)
        return "timed out"

    assert await cs.race(forever_noting_cancel(record, "work cancelled"), deadline()) == (
        "timed out"
    )
    assert loop.time() == 1.5
    assert record == ["work cancelled"]


# --------------------------------------------------------------------------- first_success


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_first_success_skips_failures_and_cancels_the_rest() -> None:
    """Failures before a success are dropped; the first success wins; the rest are cancelled."""
    record: list[str] = []
    failed = asyncio.Event()

    async def fail_first() -> str:
        await asyncio.sleep(0)
        failed.set()
        raise ConnectionError("replica 1 down")

    result = await cs.first_success(
        fail_first(),
        value_after(failed, "replica 2"),
        forever_noting_cancel(record, "replica 3 cancelled"),
    )
    assert result == "replica 2"
    assert record == ["replica 3 cancelled"]


@pytest.mark.asyncio
async def test_first_success_all_failing_is_a_group_in_argument_order() -> None:
    """All failing: an ExceptionGroup of every error in argument order (also for one)."""
    first, second = asyncio.Event(), asyncio.Event()

    async def fail_then(event: asyncio.Event, exc: Exception) -> None:
        await asyncio.sleep(0)
        event.set()
        raise exc

    with pytest.raises(ExceptionGroup) as info:
        await cs.first_success(raise_after(second, KeyError("late")), fail_then(second, OSError()))
    assert [type(e) for e in info.value.exceptions] == [KeyError, OSError]
    with pytest.raises(ExceptionGroup) as single:
        await cs.first_success(fail_then(first, ValueError("only")))
    assert [type(e) for e in single.value.exceptions] == [ValueError]


@pytest.mark.asyncio
async def test_first_success_base_exception_is_raised() -> None:
    """A non-Exception failure (KeyboardInterrupt-like) is raised at once, not collected."""
    record: list[str] = []
    started = asyncio.Event()
    with pytest.raises(Stop):
        await cs.first_success(
            forever_noting_cancel(record, "cancelled", started), raise_after(started, Stop())
        )
    assert record == ["cancelled"]


@pytest.mark.asyncio
async def test_first_success_loser_cleanup_error_is_raised() -> None:
    """After a success, an error from a loser's cleanup is raised, never dropped."""
    started = asyncio.Event()
    with pytest.raises(OSError, match="cleanup"):
        await cs.first_success(
            forever_raising_on_cancel(OSError("cleanup"), started), value_after(started, 1)
        )


@pytest.mark.asyncio
async def test_first_success_cancelled_from_outside() -> None:
    """Cancelled by an enclosing scope, first_success reports that scope's cancellation."""
    failed = asyncio.Event()

    async def body() -> None:
        async with cs.cancellable() as outer:
            outer.spawn(cancel_scope_when, failed, outer)
            await cs.first_success(set_and_fail(failed), forever())

    with pytest.raises(cs.CancelledFailure, match="from outside"):
        await body()


async def set_and_fail(event: asyncio.Event) -> None:
    """Set ``event``, then fail."""
    await asyncio.sleep(0)
    event.set()
    raise ConnectionError("down")


@pytest.mark.asyncio
async def test_helpers_nest_in_one_tree() -> None:
    """A helper's awaitables run in a scope below the caller's current scope."""
    async with cs.cancellable() as outer:

        async def parent_of_current() -> cs.CancellationScope | None:
            scope = cs.CancellationScope.current()
            return scope.parent if scope is not None else None

        (parent,) = await cs.gather(parent_of_current())
        assert parent is outer


# --------------------------------------------------------------------------- all three


async def _cleanup_fails(started: asyncio.Event) -> None:
    try:
        started.set()
        await forever()
    except asyncio.CancelledError:
        raise OSError("cleanup failed") from None


@pytest.mark.asyncio
@pytest.mark.parametrize("helper", [cs.gather, cs.race, cs.first_success])
async def test_a_cleanup_error_during_a_native_cancel_is_not_lost(helper: Any) -> None:
    """task.cancel() on the caller: an awaitable whose cleanup fails has its error raised,
    not the CancelledError (as gather always did)."""
    started = asyncio.Event()
    task = asyncio.create_task(helper(_cleanup_fails(started), forever()))
    await started.wait()
    task.cancel()
    with pytest.raises(OSError, match="cleanup failed"):
        await task


@pytest.mark.asyncio
@pytest.mark.parametrize("helper", [cs.gather, cs.race, cs.first_success])
async def test_a_cleanup_error_when_an_enclosing_scope_cancels_is_not_lost(helper: Any) -> None:
    """An enclosing scope's cancellation: an awaitable whose cleanup fails has its error
    raised, not the scope's CancelledFailure."""
    started = asyncio.Event()

    async def body() -> None:
        async with cs.cancellable() as outer:
            outer.spawn(cancel_scope_when, started, outer)
            await helper(_cleanup_fails(started), forever())

    with pytest.raises(OSError, match="cleanup failed"):
        await body()
