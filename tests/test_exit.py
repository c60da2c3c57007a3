"""SPEC §7, exit: what ``__aexit__`` raises, absorbs or passes through, and ``cancelled_caught``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

import cancelscope as cs

from ._helpers import (
    HAS_COUNTS,
    BaseExceptionGroup,
    ExceptionGroup,
    assert_not_cancelling,
    cancelling,
    children_failing_together,
    current_task,
    fail_soon,
    forever,
    forever_noting_cancel,
    forever_raising_on_cancel,
    forever_returning_on_cancel,
    live_timers,
    requires_311,
    run_on_private_loop,
    run_with_failing_child,
    timeout,
)


class _Abort(BaseException):
    """A BaseException that is not an Exception (and, unlike Ctrl-C, stays inside its task)."""


async def _assert_no_cancellation_leaks() -> None:
    """Later awaits in this task are not cancelled, and no request is left pending."""
    assert_not_cancelling()
    for _ in range(3):
        await asyncio.sleep(0)
    event = asyncio.Event()
    asyncio.get_running_loop().call_soon(event.set)
    await event.wait()
    assert_not_cancelling()


# --- step 1: child failures give a group -----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_one_child_failure_gives_a_group_of_one() -> None:
    """A single child failure is raised as an ExceptionGroup holding that very exception."""
    boom = ValueError("boom")
    scope = cs.cancellable(name="owner")
    with pytest.raises(ExceptionGroup) as info:
        await run_with_failing_child(scope, boom)
    assert len(info.value.exceptions) == 1
    assert info.value.exceptions[0] is boom
    # The body was unwound by the scope's own cancellation, which the scope absorbed.
    assert scope.cancelled_caught
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_non_exception_child_failure_gives_a_base_exception_group() -> None:
    """A child ending with a BaseException that is not an Exception gives a BaseExceptionGroup."""
    abort = _Abort()
    boom = ValueError("boom")
    with pytest.raises(BaseExceptionGroup) as info:
        await children_failing_together(abort, boom)
    assert not isinstance(info.value, ExceptionGroup)
    assert {id(e) for e in info.value.exceptions} == {id(abort), id(boom)}


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_single_non_exception_child_failure_gives_a_base_exception_group_of_one() -> None:
    """One child ending with a non-Exception BaseException gives a BaseExceptionGroup of one."""
    abort = _Abort()
    with pytest.raises(BaseExceptionGroup) as info:
        await run_with_failing_child(cs.cancellable(), abort)
    assert not isinstance(info.value, ExceptionGroup)
    assert list(info.value.exceptions) == [abort]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_keyboard_interrupt_from_body_with_child_failure_gives_a_base_exception_group() -> (
    None
):
    """A body raising KeyboardInterrupt next to a child failure: BaseExceptionGroup of both."""
    boom = ValueError("boom")
    interrupt = KeyboardInterrupt()

    async def body() -> None:
        async with cs.cancellable() as scope:
            scope.spawn(fail_soon, boom)
            await forever_raising_on_cancel(interrupt)

    # Catch everything inside this task: a KeyboardInterrupt escaping a task stops the loop.
    caught: BaseException | None = None
    try:
        await body()
    except BaseException as exc:
        caught = exc
    assert isinstance(caught, BaseExceptionGroup)
    assert not isinstance(caught, ExceptionGroup)
    assert {id(e) for e in caught.exceptions} == {id(boom), id(interrupt)}


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_body_exception_raised_on_failure_cancellation_joins_the_group() -> None:
    """A body that answers the failure's cancellation with its own error: both in the group."""
    boom = ValueError("child")
    cleanup_error = KeyError("body cleanup")
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(fail_soon, boom)
            await forever_raising_on_cancel(cleanup_error)

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert {id(e) for e in info.value.exceptions} == {id(boom), id(cleanup_error)}
    assert len(info.value.exceptions) == 2
    # The body replaced the cancellation with its own error: nothing was absorbed.
    assert not scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_body_exception_and_child_failing_on_cancellation_are_grouped() -> None:
    """A body error plus a child that fails while being cancelled: one group of both."""
    started = asyncio.Event()
    body_error = KeyError("body")
    child_error = OSError("child cleanup failed")

    async def body() -> None:
        async with cs.cancellable() as scope:
            scope.spawn(forever_raising_on_cancel, child_error, started)
            await started.wait()
            raise body_error

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert {id(e) for e in info.value.exceptions} == {id(body_error), id(child_error)}
    assert len(info.value.exceptions) == 2


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_group_after_a_normal_body_leaves_cancelled_caught_false() -> None:
    """A child failing after the body ended normally: group raised, nothing absorbed."""
    body_done = asyncio.Event()
    boom = ValueError("boom")

    async def failing() -> None:
        await body_done.wait()
        raise boom

    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(failing)
            body_done.set()

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [boom]
    assert scope.cancel_called
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


# --- step 2: other exceptions propagate unchanged --------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_body_exception_propagates_unchanged() -> None:
    """A body's non-cancellation exception propagates as the same object, not in a group."""
    error = ValueError("plain")
    started = asyncio.Event()
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(forever, started)
            await started.wait()
            raise error

    with pytest.raises(ValueError) as info:
        await body()
    assert info.value is error
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_inner_cancelled_failure_propagates_unchanged_through_outer_scope() -> None:
    """An inner scope's CancelledFailure passes an outer (uncancelled) scope unchanged."""
    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")
    raised: list[BaseException] = []

    async def body() -> None:
        async with outer:
            try:
                async with inner:
                    inner.cancel("inner only")
                    await forever()
            except cs.CancelledFailure as exc:
                raised.append(exc)
                raise

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value is raised[0]
    assert info.value.scope is inner
    assert inner.cancelled_caught
    assert not outer.cancelled_caught
    assert not outer.cancel_called
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_inner_timeout_failure_propagates_unchanged_through_outer_scope() -> None:
    """An inner with_timeout's TimeoutFailure passes an outer scope unchanged."""
    outer = cs.with_timeout(100)

    async def body() -> None:
        async with outer, cs.with_timeout(5) as inner:
            assert inner.deadline == 5
            await asyncio.sleep(3600)

    with pytest.raises(cs.TimeoutFailure) as info:
        await body()
    assert info.value.deadline == 5
    assert info.value.scope is not outer
    assert not outer.cancelled_caught
    assert asyncio.get_running_loop().time() == 5


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_error_raised_while_handling_own_cancellation_propagates() -> None:
    """A body that turns its scope's CancelledError into another error: that error propagates."""
    error = RuntimeError("cleanup failed")
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.cancel()
            await forever_raising_on_cancel(error)

    with pytest.raises(RuntimeError) as info:
        await body()
    assert info.value is error
    assert scope.cancel_called
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


# --- step 3: own cancellation is absorbed ----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_own_cancellation_becomes_cancelled_failure_caused_by_the_absorbed_error() -> None:
    """The scope's own CancelledError becomes CancelledFailure(scope, reason) from that error."""
    scope = cs.cancellable(name="mine")
    absorbed: list[asyncio.CancelledError] = []

    async def body() -> None:
        async with scope:
            scope.cancel("my reason")
            await forever(on_cancel=absorbed.append)

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert not isinstance(info.value, cs.TimeoutFailure)
    assert info.value.scope is scope
    assert info.value.reason == "my reason"
    assert info.value.__cause__ is absorbed[0]
    assert scope.cancelled_caught
    assert scope.cancel_called
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_with_no_reason_gives_a_failure_with_reason_none() -> None:
    """cancel() without a reason: the CancelledFailure's reason is None."""
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.cancel()
            await forever()

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.reason is None
    assert info.value.scope is scope
    assert isinstance(info.value.__cause__, asyncio.CancelledError)


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_becomes_timeout_failure_caused_by_the_absorbed_error() -> None:
    """A passed deadline exits with TimeoutFailure (a TimeoutError) caused by the CancelledError."""
    loop = asyncio.get_running_loop()
    timers_before = live_timers()
    scope = cs.with_timeout(10, name="slow")
    absorbed: list[asyncio.CancelledError] = []

    async def body() -> None:
        async with scope:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError as exc:
                absorbed.append(exc)
                raise

    with pytest.raises(cs.TimeoutFailure) as info:
        await body()
    assert isinstance(info.value, TimeoutError)
    assert info.value.scope is scope
    assert info.value.deadline == 10
    assert info.value.reason == "deadline exceeded"
    assert info.value.__cause__ is absorbed[0]
    assert scope.cancelled_caught
    assert loop.time() == 10
    assert live_timers() == timers_before
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda now: cs.move_on_after(3), id="move_on_after"),
        pytest.param(lambda now: cs.move_on_at(now + 3), id="move_on_at"),
        pytest.param(
            lambda now: cs.CancellationScope(timeout=3, raise_on_cancel=False),
            id="raise_on_cancel=False",
        ),
    ],
)
async def test_silent_forms_exit_normally_on_their_deadline(
    make: Callable[[float], cs.CancellationScope],
) -> None:
    """move_on_after/move_on_at/raise_on_cancel=False swallow their own cancellation."""
    loop = asyncio.get_running_loop()
    timers_before = live_timers()
    record: list[str] = []
    async with make(loop.time()) as scope:
        try:
            await asyncio.sleep(3600)
        finally:
            record.append("unwound")
    record.append("after")
    assert record == ["unwound", "after"]
    assert scope.cancel_called
    assert scope.cancelled_caught
    assert loop.time() == 3
    assert live_timers() == timers_before
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_raise_on_cancel_false_exits_normally_on_cancel() -> None:
    """A raise_on_cancel=False scope cancelled by cancel() exits normally."""
    async with cs.CancellationScope(raise_on_cancel=False) as scope:
        scope.cancel("quietly")
        await forever()
    assert scope.cancelled_caught
    assert scope.cancel_reason == "quietly"
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("outer_first", [True, False], ids=["outer-first", "inner-first"])
async def test_with_nested_cancelled_scopes_the_outermost_reports(outer_first: bool) -> None:
    """Both nested scopes cancelled: the inner passes the error on, the outer absorbs it."""
    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")
    seen: list[asyncio.CancelledError] = []
    passed: list[BaseException] = []

    async def body() -> None:
        async with outer:
            try:
                async with inner:
                    for scope in (outer, inner) if outer_first else (inner, outer):
                        scope.cancel(scope.name)
                    await forever(on_cancel=seen.append)
            except BaseException as exc:
                passed.append(exc)
                raise

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert passed[0] is seen[0]
    assert info.value.scope is outer
    assert info.value.reason == "outer"
    assert info.value.__cause__ is seen[0]
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_below_a_shield_the_scope_under_the_shield_reports() -> None:
    """Outer and inner cancelled with a shield between: the inner reports; its failure passes."""
    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")
    record: list[str] = []

    async def body() -> None:
        async with outer:
            async with cs.non_cancellable(name="shield"), inner:
                outer.cancel("outer")
                inner.cancel("inner")
                await forever()
            record.append("not reached")

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is inner
    assert info.value.reason == "inner"
    assert inner.cancelled_caught
    assert not outer.cancelled_caught
    assert record == []
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
@requires_311
@pytest.mark.parametrize("native_first", [True, False], ids=["native-first", "scope-first"])
async def test_a_pending_native_cancel_is_not_absorbed(native_first: bool) -> None:
    """Own cancel plus a native task.cancel(): the scope re-raises; cancelling() stays 1."""
    scope = cs.cancellable(name="mine")
    observed: list[int] = []

    async def victim() -> None:
        task = current_task()
        try:
            async with scope:
                if native_first:
                    task.cancel("native")
                    scope.cancel("own")
                else:
                    scope.cancel("own")
                    task.cancel("native")
                await forever()
        except asyncio.CancelledError:
            observed.append(cancelling(task))
            raise

    task = asyncio.create_task(victim())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert observed == [1]
    assert not scope.cancelled_caught


# --- step 4: foreign cancellation passes through ---------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_native_cancel_is_reraised_as_the_same_object() -> None:
    """task.cancel() from outside: the scope re-raises the very CancelledError, count intact."""
    started = asyncio.Event()
    scope = cs.cancellable(name="bystander")
    inside: list[asyncio.CancelledError] = []
    outside: list[asyncio.CancelledError] = []
    counts: list[int] = []

    async def victim() -> None:
        task = current_task()
        try:
            async with scope:
                await forever(started, on_cancel=inside.append)
        except asyncio.CancelledError as exc:
            outside.append(exc)
            counts.append(cancelling(task))
            raise

    task = asyncio.create_task(victim())
    await started.wait()
    task.cancel("from outside")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert outside[0] is inside[0]
    assert outside[0].args == ("from outside",)
    assert counts == [1 if HAS_COUNTS else -1]
    assert not scope.cancelled_caught
    assert not scope.cancel_called


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_outer_scope_cancellation_passes_the_inner_scope_unchanged() -> None:
    """An outer scope's CancelledError leaves an inner, uncancelled scope as the same object."""
    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")
    inside: list[asyncio.CancelledError] = []
    between: list[BaseException] = []

    async def body() -> None:
        async with outer:
            try:
                async with inner:
                    outer.cancel("from outer")
                    await forever(on_cancel=inside.append)
            except BaseException as exc:
                between.append(exc)
                raise

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert between[0] is inside[0]
    assert info.value.__cause__ is inside[0]
    assert info.value.scope is outer
    assert not inner.cancelled_caught
    assert not inner.cancel_called
    assert outer.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@requires_311
async def test_asyncio_timeout_around_a_scope_keeps_its_behaviour() -> None:
    """asyncio.timeout around a scope still raises its own TimeoutError at its deadline."""
    loop = asyncio.get_running_loop()
    scope = cs.cancellable()

    async def body() -> None:
        async with timeout(5), scope:
            await asyncio.sleep(3600)

    with pytest.raises(TimeoutError) as info:
        await body()
    assert not isinstance(info.value, cs.CancelledFailure)
    assert loop.time() == 5
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


# --- step 5: swallowed or never delivered ----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_body_that_swallowed_the_cancellation_exits_normally() -> None:
    """A body that catches its CancelledError and returns without awaiting exits normally."""
    record: list[str] = []
    async with cs.cancellable() as scope:
        scope.cancel("stop")
        try:
            await forever()
        except asyncio.CancelledError:
            record.append("swallowed")
    record.append("after")
    assert record == ["swallowed", "after"]
    assert scope.cancel_called
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


def _cancelled_in_body(scope: cs.CancellationScope) -> None:
    scope.cancel("in body")


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.parametrize(
    ("make", "in_body"),
    [
        pytest.param(lambda: cs.with_timeout(0), False, id="with_timeout(0)"),
        pytest.param(lambda: cs.with_timeout(-1), False, id="with_timeout(-1)"),
        pytest.param(lambda: cs.with_deadline(-5), False, id="with_deadline(past)"),
        pytest.param(cs.cancellable, True, id="cancel-in-body"),
    ],
)
async def test_cancelled_body_that_never_suspends_exits_normally(
    make: Callable[[], cs.CancellationScope], in_body: bool
) -> None:
    """A cancelled scope whose body never awaits exits normally and leaks nothing."""
    timers_before = live_timers()
    record: list[str] = []
    async with make() as scope:
        if in_body:
            _cancelled_in_body(scope)
        record.append("body ran")
    assert record == ["body ran"]
    assert not scope.cancelled_caught
    assert live_timers() == timers_before
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_pre_cancelled_scope_whose_body_never_suspends_exits_normally() -> None:
    """A scope cancelled before entry, with a body that never awaits, exits normally."""
    scope = cs.cancellable()
    scope.cancel("before entry")
    async with scope:
        value = 1 + 1
    assert value == 2
    assert scope.cancel_called
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_no_cancellation_leaks_after_a_cancelled_failure() -> None:
    """After catching a scope's CancelledFailure the task runs on uncancelled."""
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.cancel()
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    await _assert_no_cancellation_leaks()
    async with cs.cancellable() as fresh:
        await asyncio.sleep(0)
    assert not fresh.cancel_called


# --- cancelled_caught ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelled_caught_is_false_for_an_uncancelled_scope() -> None:
    """A scope never cancelled has cancelled_caught False (and cancel_called False)."""
    async with cs.cancellable() as scope:
        await asyncio.sleep(0)
    assert not scope.cancel_called
    assert not scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_caught_stays_false_when_a_foreign_cancel_unwinds_the_body() -> None:
    """cancelled_caught is False after an outer scope's cancellation passed through."""
    outer = cs.cancellable()
    inner = cs.cancellable()

    async def body() -> None:
        async with outer, inner:
            outer.cancel()
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    assert not inner.cancelled_caught
    assert outer.cancelled_caught


# --- the documented choice for cancellation during the exit's wait ---------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_during_the_exit_wait_after_a_normal_body_exits_normally() -> None:
    """Body ended normally, scope cancelled while waiting for children: normal exit.

    SPEC §7 decides by what unwound the body; the children's handles report CancelledFailure.
    """
    body_done = asyncio.Event()

    async def canceller(scope: cs.CancellationScope) -> None:
        await body_done.wait()
        scope.cancel("late")

    async with cs.cancellable(name="owner") as scope:
        waiter = scope.spawn(forever)
        scope.spawn(canceller, scope)
        body_done.set()
    assert scope.cancel_called
    assert not scope.cancelled_caught
    with pytest.raises(cs.CancelledFailure) as info:
        await waiter
    assert info.value.scope is scope
    assert info.value.reason == "late"
    await _assert_no_cancellation_leaks()


# --- requests that arrive while the exit waits for children ----------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_outer_cancel_arriving_during_the_inner_exit_wait_makes_the_outer_report() -> None:
    """Inner absorbed its own cancel, then the outer is cancelled while inner waits: outer reports.

    SPEC §7 evaluates ownership "after waiting for every child".
    """
    release = asyncio.Event()
    child_started = asyncio.Event()
    exiting = asyncio.Event()
    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")

    async def stubborn() -> None:
        async with cs.non_cancellable():
            child_started.set()
            await release.wait()

    async def late_outer_cancel() -> None:
        await exiting.wait()
        # The host is now suspended in the inner scope's exit, waiting for the child.
        outer.cancel("outer")
        release.set()

    async def body() -> None:
        async with outer:
            helper = asyncio.create_task(late_outer_cancel())
            try:
                async with inner:
                    inner.spawn(stubborn)
                    await child_started.wait()
                    inner.cancel("inner")
                    try:
                        await forever()
                    except asyncio.CancelledError:
                        exiting.set()
                        raise
            finally:
                await asyncio.shield(helper)

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is outer
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("message", [None, "native"], ids=["no-message", "message"])
@pytest.mark.parametrize("swallow", [False, True], ids=["body-reraises", "body-swallows"])
async def test_native_cancel_arriving_during_the_exit_wait_is_not_absorbed(
    message: str | None, swallow: bool
) -> None:
    """Own cancel reached the body, then task.cancel() arrives during the wait: re-raised.

    Whether the body let its own CancelledError out or swallowed it, a native cancel made in a
    later loop iteration is foreign (step 4), on 3.10 too (SPEC 8 only excuses the same
    iteration).
    """
    release = asyncio.Event()
    child_started = asyncio.Event()
    exiting = asyncio.Event()
    scope = cs.cancellable(name="mine")
    counts: list[int] = []
    record: list[str] = []

    async def stubborn() -> None:
        async with cs.non_cancellable():
            child_started.set()
            await release.wait()
        record.append("child finished")

    async def host() -> None:
        task = current_task()
        try:
            async with scope:
                scope.spawn(stubborn)
                await child_started.wait()
                scope.cancel("own")
                try:
                    await forever()
                except asyncio.CancelledError:
                    exiting.set()
                    if not swallow:
                        raise
                exiting.set()
        except asyncio.CancelledError:
            counts.append(cancelling(task))
            raise
        except BaseException as exc:
            record.append(f"host ended with {type(exc).__name__}")
            raise

    task = asyncio.create_task(host())
    await exiting.wait()
    # The host is now suspended in the scope's exit, waiting for the shielded child.
    task.cancel(message)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["child finished"]
    assert counts == [1 if HAS_COUNTS else -1]
    assert not scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("message", [None, "native"], ids=["no-message", "message"])
async def test_native_cancel_of_a_shielded_cleanup_after_own_cancel_is_not_absorbed(
    message: str | None,
) -> None:
    """Own cancel caught, then a later native cancel interrupts a shielded cleanup: re-raised.

    SPEC 4: a native cancel still interrupts a non-cancellable body; SPEC 7 step 4: the scope
    does not own it, so it passes on unchanged (on 3.10 too: it lands in a later iteration).
    """
    in_cleanup = asyncio.Event()
    scope = cs.cancellable(name="mine")
    seen: list[asyncio.CancelledError] = []
    outside: list[BaseException] = []

    async def host() -> None:
        try:
            async with scope:
                scope.cancel("own")
                try:
                    await forever()
                except asyncio.CancelledError:
                    async with cs.non_cancellable():
                        await forever(in_cleanup, on_cancel=seen.append)
        except BaseException as exc:
            outside.append(exc)
            raise

    task = asyncio.create_task(host())
    await in_cleanup.wait()
    task.cancel(message)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert len(outside) == 1
    assert outside[0] is seen[0]
    assert not scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_passing_during_the_exit_wait_after_a_normal_body_exits_normally() -> None:
    """Body ended normally; the deadline passes while children run: normal exit, children cut.

    Same rule as cancel() during the wait: SPEC §7 decides by what unwound the body.
    """
    loop = asyncio.get_running_loop()
    timers_before = live_timers()
    async with cs.with_timeout(5) as scope:
        handle = scope.spawn(asyncio.sleep, 3600)
    assert loop.time() == 5
    assert scope.cancel_called
    assert not scope.cancelled_caught
    with pytest.raises(cs.CancelledFailure):
        await handle
    assert live_timers() == timers_before
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_keyboard_interrupt_from_the_body_propagates_unchanged() -> None:
    """A body raising KeyboardInterrupt (no child failure): children cancelled, same object out."""
    interrupt = KeyboardInterrupt()
    started = asyncio.Event()
    record: list[str] = []

    async def body() -> None:
        async with cs.cancellable() as scope:
            scope.spawn(forever_noting_cancel, record, "child cancelled", started)
            await started.wait()
            raise interrupt

    # Catch everything inside this task: a KeyboardInterrupt escaping a task stops the loop.
    caught: BaseException | None = None
    try:
        await body()
    except BaseException as exc:
        caught = exc
    assert caught is interrupt
    assert record == ["child cancelled"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_exit_raises_nothing_when_children_succeed_after_a_swallowed_cancel() -> None:
    """Body swallowed its own cancellation; a child that caught it and returned: normal exit."""
    started = asyncio.Event()
    async with cs.cancellable() as scope:
        handle = scope.spawn(forever_returning_on_cancel, "stopped", started)
        await started.wait()
        scope.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await forever()
    assert handle.result() == "stopped"
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_pending_native_cancel_is_not_eaten_by_a_normal_exit() -> None:
    """A native cancel requested in a body that then exits normally still reaches the task."""
    scope = cs.cancellable()
    record: list[str] = []
    counts: list[int] = []

    async def victim() -> None:
        task = current_task()
        async with scope:
            scope.cancel("own")
            with contextlib.suppress(asyncio.CancelledError):
                await forever()
            record.append("own swallowed")
            task.cancel("native")
        record.append("scope exited")
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            record.append(f"native delivered: {exc.args}")
            counts.append(cancelling(task))
            raise
        record.append("native lost")

    task = asyncio.create_task(victim())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["own swallowed", "scope exited", "native delivered: ('native',)"]
    assert counts == [1 if HAS_COUNTS else -1]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_error_raised_by_the_body_itself_passes_unchanged() -> None:
    """A CancelledError the body raises with no request behind it passes as the same object."""
    manual = asyncio.CancelledError("manual")
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            await asyncio.sleep(0)
            raise manual

    with pytest.raises(asyncio.CancelledError) as info:
        await body()
    assert info.value is manual
    assert not scope.cancelled_caught
    await _assert_no_cancellation_leaks()


def test_keyboard_interrupt_in_a_child_gives_a_base_exception_group() -> None:
    """A child raising KeyboardInterrupt is reported at exit in a BaseExceptionGroup.

    Run on a private loop in a thread: were the interrupt to escape the child's task it would
    stop that loop, not this test session.
    """
    interrupt = KeyboardInterrupt()
    outcome: list[BaseException | None] = []

    async def child() -> None:
        await asyncio.sleep(0)
        raise interrupt

    async def main() -> None:
        try:
            async with cs.cancellable() as scope:
                scope.spawn(child)
                await forever()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    outcome.extend(run_on_private_loop(main))
    assert len(outcome) == 1
    group = outcome[0]
    assert isinstance(group, BaseExceptionGroup)
    assert not isinstance(group, ExceptionGroup)
    assert list(group.exceptions) == [interrupt]
