"""SPEC §2, the tree: parents, ``current()``, entering once, LIFO exit in the entering task.

Also the ``fn`` forms of §1 (``cancellable(fn)``, ``scope.run``), which enter a scope for the
caller, and the plain ``with`` form.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import (
    assert_not_cancelling,
    current,
    forever,
    live_timers,
    no_unawaited_coroutine_warning,
)


async def _exit_like_with(scope: cs.CancellationScope, exc: BaseException | None) -> None:
    """Call ``scope.__aexit__`` the way an ``async with`` statement would."""
    if exc is None:
        await scope.__aexit__(None, None, None)
        return
    if not await scope.__aexit__(type(exc), exc, exc.__traceback__):
        raise exc


# --- parent and current() -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_current_is_none_outside_any_scope() -> None:
    """current() is None in a task that has not entered a scope."""
    assert current() is None


def test_constructing_scopes_needs_no_event_loop() -> None:
    """Every scope constructor works without a running loop; nothing is active yet."""
    scopes = [
        cs.CancellationScope(),
        cs.CancellationScope(cancellable=False, timeout=1, name="a", raise_on_cancel=False),
        cs.CancellationScope(deadline=5),
        cs.cancellable(),
        cs.cancellable(name="b"),
        cs.non_cancellable(),
        cs.with_timeout(1),
        cs.with_deadline(5),
        cs.move_on_after(1),
        cs.move_on_at(5),
    ]
    for scope in scopes:
        assert isinstance(scope, cs.CancellationScope)
        assert not scope.active
        assert scope.parent is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_entering_makes_scope_current_with_previous_scope_as_parent() -> None:
    """Entering sets current() and parent; exiting restores the previous current scope."""
    async with cs.cancellable(name="outer") as outer:
        assert current() is outer
        assert outer.parent is None
        assert outer.active
        async with cs.non_cancellable(name="middle") as middle:
            assert current() is middle
            assert middle.parent is outer
            async with cs.cancellable(name="inner") as inner:
                assert current() is inner
                assert inner.parent is middle
            assert current() is middle
            assert not inner.active
        assert current() is outer
        assert not middle.active
    assert current() is None
    assert not outer.active


@pytest.mark.asyncio
async def test_aenter_and_enter_return_the_scope() -> None:
    """``async with scope as x`` and ``with scope as x`` bind x to the scope itself."""
    scope = cs.CancellationScope(name="a")
    async with scope as entered:
        assert entered is scope
    other = cs.CancellationScope(name="b")
    with other as entered_sync:
        assert entered_sync is other


@pytest.mark.asyncio
async def test_scope_name_is_kept() -> None:
    """The name given at construction is the scope's ``name``."""
    async with cs.cancellable(name="fetch") as scope:
        assert scope.name == "fetch"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_task_current_is_the_spawning_scope() -> None:
    """In a child task, current() is the scope it was spawned into, before and after suspending."""
    seen: list[cs.CancellationScope | None] = []

    async def child() -> None:
        seen.append(current())
        await asyncio.sleep(0)
        seen.append(current())

    async with cs.cancellable(name="owner") as owner, cs.cancellable(name="busy") as busy:
        # The body's current scope is `busy`, but the child belongs to `owner`.
        assert current() is busy
        owner.spawn(child)
    assert seen == [owner, owner]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_first_scope_has_spawning_scope_as_parent() -> None:
    """A scope entered in a child task has the spawning scope as parent; exit restores it."""
    seen: list[cs.CancellationScope | None] = []

    async def child() -> None:
        async with cs.cancellable(name="own") as own:
            seen.append(own.parent)
            seen.append(current())
            await asyncio.sleep(0)
        seen.append(current())

    async with cs.cancellable(name="owner") as owner:
        owner.spawn(child)
    assert len(seen) == 3
    assert seen[0] is owner
    assert seen[1] is not owner
    assert seen[1] is not None
    assert seen[1].name == "own"
    assert seen[2] is owner


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_spawned_from_another_task_sees_the_spawning_scope() -> None:
    """A child spawned by a task outside the scope still has the scope as current()."""
    child_seen: list[cs.CancellationScope | None] = []
    helper_seen: list[cs.CancellationScope | None] = []

    async def child() -> None:
        child_seen.append(current())

    async def helper(nursery: cs.CancellationScope) -> None:
        helper_seen.append(current())
        nursery.spawn(child)
        helper_seen.append(current())

    async with cs.cancellable(name="nursery") as nursery:
        await asyncio.create_task(helper(nursery))
    assert helper_seen == [None, None]
    assert child_seen == [nursery]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_task_sees_no_current_scope() -> None:
    """A plain asyncio.create_task task has current() None and its first scope has no parent."""
    seen: list[cs.CancellationScope | None] = []

    async def plain() -> None:
        seen.append(current())
        async with cs.cancellable() as own:
            seen.append(own.parent)
        seen.append(current())

    async with cs.cancellable():
        await asyncio.create_task(plain())
    assert seen == [None, None, None]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_task_is_not_reached_by_scope_cancellation() -> None:
    """Cancelling a scope does not cancel a plain task created inside it."""
    started = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def plain() -> str:
        started.set()
        await release.wait()
        await asyncio.sleep(0)
        record.append("plain finished")
        return "ok"

    scope = cs.cancellable(name="owner")
    task: asyncio.Task[str] | None = None

    async def body() -> None:
        nonlocal task
        async with scope:
            task = asyncio.create_task(plain())
            await started.wait()
            scope.cancel("stop")
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    assert task is not None
    assert not task.done()
    release.set()
    assert await task == "ok"
    assert record == ["plain finished"]


# --- entering once ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_entering_an_exited_scope_again_raises() -> None:
    """Re-entering a scope that has exited raises RuntimeError and leaves current() alone."""
    scope = cs.cancellable(name="once")
    async with scope:
        pass
    with pytest.raises(RuntimeError):
        await scope.__aenter__()
    assert current() is None
    assert not scope.active
    with pytest.raises(RuntimeError):
        scope.__enter__()
    assert current() is None
    assert not scope.active


@pytest.mark.asyncio
async def test_entering_an_active_scope_again_raises_and_changes_nothing() -> None:
    """Entering a scope while it is active raises RuntimeError; the tree is unchanged."""
    async with cs.cancellable(name="outer") as outer, cs.cancellable(name="inner") as inner:
        with pytest.raises(RuntimeError):
            await outer.__aenter__()
        with pytest.raises(RuntimeError):
            await inner.__aenter__()
        with pytest.raises(RuntimeError):
            inner.__enter__()
        assert current() is inner
        assert inner.parent is outer
        assert outer.parent is None
        assert inner.active
        assert outer.active
    assert current() is None


@pytest.mark.asyncio
async def test_run_enters_the_scope_once() -> None:
    """scope.run() on a scope already used raises RuntimeError without calling fn."""
    calls: list[str] = []

    async def fn() -> str:
        calls.append("called")
        return "value"

    scope = cs.cancellable(name="runner")
    assert await scope.run(fn) == "value"
    with pytest.raises(RuntimeError):
        await scope.run(fn)
    assert calls == ["called"]
    assert current() is None


# --- LIFO exit in the entering task ----------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_out_of_order_exit_raises_naming_both_scopes_and_changes_nothing() -> None:
    """Exiting an outer scope before its inner one raises RuntimeError; both still exit fine."""
    outer = cs.cancellable(name="outer-scope")
    inner = cs.cancellable(name="inner-scope")
    await outer.__aenter__()
    await inner.__aenter__()
    with pytest.raises(RuntimeError) as info:
        await outer.__aexit__(None, None, None)
    message = str(info.value)
    assert "outer-scope" in message
    assert "inner-scope" in message
    assert current() is inner
    assert inner.parent is outer
    assert inner.active
    assert outer.active
    await _exit_like_with(inner, None)
    assert current() is outer
    await _exit_like_with(outer, None)
    assert current() is None
    assert [outer.active, inner.active] == [False, False]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancellation_still_works_after_a_refused_out_of_order_exit() -> None:
    """After a refused exit, cancelling the outer scope unwinds both scopes as usual."""
    outer = cs.cancellable(name="outer-scope")
    inner = cs.cancellable(name="inner-scope")
    await outer.__aenter__()
    await inner.__aenter__()
    with pytest.raises(RuntimeError):
        await outer.__aexit__(None, None, None)
    outer.cancel("after refusal")
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await forever()
    with pytest.raises(asyncio.CancelledError) as passed:
        await _exit_like_with(inner, cancelled.value)
    assert passed.value is cancelled.value
    with pytest.raises(cs.CancelledFailure) as failure:
        await _exit_like_with(outer, cancelled.value)
    assert failure.value.scope is outer
    assert failure.value.reason == "after refusal"
    assert failure.value.__cause__ is cancelled.value
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    assert current() is None
    assert_not_cancelling()
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_out_of_order_plain_with_exit_raises_and_changes_nothing() -> None:
    """The LIFO rule holds for scopes entered with plain ``with`` too."""
    outer = cs.cancellable(name="sync-outer")
    inner = cs.cancellable(name="sync-inner")
    outer.__enter__()
    inner.__enter__()
    with pytest.raises(RuntimeError) as info:
        outer.__exit__(None, None, None)
    assert "sync-outer" in str(info.value)
    assert "sync-inner" in str(info.value)
    assert current() is inner
    inner.__exit__(None, None, None)
    assert current() is outer
    outer.__exit__(None, None, None)
    assert current() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_exit_from_another_task_raises_and_changes_nothing() -> None:
    """Exiting a scope from a task that did not enter it raises RuntimeError naming the scope."""
    scope = cs.cancellable(name="owned-scope")
    await scope.__aenter__()
    seen: list[cs.CancellationScope | None] = []

    async def intruder() -> None:
        async with cs.cancellable(name="intruder-scope") as mine:
            try:
                await scope.__aexit__(None, None, None)
            finally:
                seen.append(current())
                seen.append(mine)

    with pytest.raises(RuntimeError, match="owned-scope"):
        await asyncio.create_task(intruder())
    assert seen[0] is seen[1]
    assert current() is scope
    assert scope.active
    # The scope still cancels and exits normally in its own task.
    scope.cancel("still mine")
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await forever()
    with pytest.raises(cs.CancelledFailure) as failure:
        await _exit_like_with(scope, cancelled.value)
    assert failure.value.scope is scope
    assert current() is None
    assert_not_cancelling()


@pytest.mark.asyncio
async def test_exiting_a_scope_never_entered_raises() -> None:
    """__aexit__ on a scope that was never entered raises RuntimeError."""
    scope = cs.cancellable(name="never-entered")
    with pytest.raises(RuntimeError, match=r"never-entered.*was never entered") as info:
        await scope.__aexit__(None, None, None)
    assert info.value.__suppress_context__  # no internal error chained to it
    with pytest.raises(RuntimeError, match=r"never-entered.*was never entered"):
        scope.__exit__(None, None, None)
    assert current() is None
    assert scope.parent is None
    async with scope:
        assert current() is scope


@pytest.mark.asyncio
async def test_exiting_a_scope_twice_raises() -> None:
    """A second __aexit__ on an exited scope raises RuntimeError and leaves current() alone."""
    async with cs.cancellable(name="outer") as outer:
        scope = cs.cancellable(name="twice")
        await scope.__aenter__()
        await scope.__aexit__(None, None, None)
        with pytest.raises(RuntimeError, match="twice"):
            await scope.__aexit__(None, None, None)
        assert current() is outer
        assert outer.active


# --- where entering is possible --------------------------------------------------------------


def test_entering_without_a_running_loop_raises() -> None:
    """Entering a scope (with or async with) with no running event loop raises RuntimeError."""
    sync_scope = cs.cancellable(name="no-loop")
    with pytest.raises(RuntimeError):
        sync_scope.__enter__()
    assert not sync_scope.active

    async_scope = cs.cancellable(name="no-loop-async")
    step = async_scope.__aenter__().__await__()
    with pytest.raises(RuntimeError):
        step.send(None)
    assert not async_scope.active


@pytest.mark.asyncio
async def test_entering_outside_a_task_raises() -> None:
    """Entering a scope from a loop callback (no current task) raises RuntimeError."""
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Future[list[BaseException | None]] = loop.create_future()
    sync_scope = cs.cancellable(name="cb-sync")
    async_scope = cs.cancellable(name="cb-async")

    def callback() -> None:
        results: list[BaseException | None] = []
        for attempt in (
            sync_scope.__enter__,
            lambda: async_scope.__aenter__().__await__().send(None),
        ):
            try:
                attempt()
            except BaseException as exc:
                results.append(exc)
            else:
                results.append(None)
        outcomes.set_result(results)

    loop.call_soon(callback)
    results = await outcomes
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    assert not sync_scope.active
    assert not async_scope.active
    assert current() is None


# --- plain `with` ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_with_takes_part_in_the_tree() -> None:
    """A scope entered with plain ``with`` becomes current and nests with ``async with`` scopes."""
    async with cs.cancellable(name="a") as a:
        with cs.cancellable(name="b") as b:
            assert current() is b
            assert b.parent is a
            async with cs.cancellable(name="c") as c:
                assert c.parent is b
                await asyncio.sleep(0)
            with cs.non_cancellable(name="d") as d:
                assert d.parent is b
            assert current() is b
        assert current() is a
        assert not b.active
    assert current() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_with_cancel_gives_cancelled_failure() -> None:
    """A cancelled plain-``with`` scope interrupts its body and exits with CancelledFailure."""
    scope = cs.cancellable(name="sync")
    absorbed: list[BaseException] = []

    async def body() -> None:
        with scope:
            scope.cancel("plain")
            await forever(on_cancel=absorbed.append)

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is scope
    assert info.value.reason == "plain"
    assert info.value.__cause__ is absorbed[0]
    assert scope.cancelled_caught
    assert_not_cancelling()
    await asyncio.sleep(0)


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_plain_with_timeout_gives_timeout_failure_and_leaves_no_timer() -> None:
    """A plain-``with`` timeout scope fires at its deadline and removes its timer on exit."""
    loop = asyncio.get_running_loop()
    timers_before = live_timers()
    scope = cs.with_timeout(5)

    async def body() -> None:
        with scope:
            await asyncio.sleep(3600)

    with pytest.raises(cs.TimeoutFailure):
        await body()
    assert loop.time() == 5
    assert live_timers() == timers_before


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_plain_with_move_on_after_exits_silently() -> None:
    """A plain-``with`` move_on_after scope swallows its own timeout."""
    loop = asyncio.get_running_loop()
    with cs.move_on_after(2) as scope:
        await asyncio.sleep(3600)
    assert scope.cancelled_caught
    assert loop.time() == 2
    assert_not_cancelling()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_with_non_cancellable_shields_its_body() -> None:
    """A plain-``with`` non-cancellable scope keeps outside requests out of its body."""
    record: list[str] = []
    outer = cs.cancellable(name="outer")

    async def body() -> None:
        async with outer:
            with cs.non_cancellable():
                outer.cancel("outside")
                for _ in range(3):
                    await asyncio.sleep(0)
                record.append("shielded body finished")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                record.append("cancelled after the shield")
                raise

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is outer
    assert record == ["shielded body finished", "cancelled after the shield"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_on_plain_with_scope_raises_and_leaves_nothing() -> None:
    """spawn on a scope entered with plain ``with`` raises RuntimeError; no task, no warning."""
    calls: list[str] = []

    async def child() -> None:
        calls.append("ran")

    tasks_before = asyncio.all_tasks()
    with no_unawaited_coroutine_warning():
        with cs.cancellable(name="sync") as scope:
            with pytest.raises(RuntimeError):
                scope.spawn(child)
            with pytest.raises(RuntimeError):
                scope.spawn(child())
            assert current() is scope
            await asyncio.sleep(0)
        assert asyncio.all_tasks() == tasks_before
    assert calls == []
    assert not scope.cancel_called


# --- the fn forms enter a scope for the caller (§1) ------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_fn_forms_run_fn_in_a_new_scope_below_the_callers_scope() -> None:
    """cancellable/non_cancellable/with_timeout/with_deadline(fn, *args) run fn in a new scope."""
    seen: list[tuple[cs.CancellationScope | None, cs.CancellationScope | None, bool]] = []

    async def fn(tag: str, number: int) -> str:
        scope = current()
        assert scope is not None
        seen.append((scope, scope.parent, scope.cancellable))
        await asyncio.sleep(0)
        return f"{tag}{number}"

    loop = asyncio.get_running_loop()
    forms: list[Awaitable[str]] = []
    async with cs.cancellable(name="caller") as caller:
        forms = [
            cs.cancellable(fn, "a", 1),
            cs.non_cancellable(fn, "b", 2),
            cs.with_timeout(60, fn, "c", 3),
            cs.with_deadline(loop.time() + 60, fn, "d", 4),
        ]
        results = [await form for form in forms]
        assert current() is caller
    assert results == ["a1", "b2", "c3", "d4"]
    assert [parent for _, parent, _ in seen] == [caller] * 4
    assert [flag for _, _, flag in seen] == [True, False, True, True]
    assert len({id(scope) for scope, _, _ in seen}) == 4
    assert all(scope is not caller for scope, _, _ in seen)


@pytest.mark.asyncio
async def test_run_enters_the_scope_and_returns_the_result() -> None:
    """scope.run(fn, *args) makes the scope current around fn and returns fn's result."""
    seen: list[Any] = []

    async def fn(value: int) -> int:
        seen.append(current())
        return value * 2

    async with cs.cancellable(name="caller") as caller:
        scope = cs.cancellable(name="run")
        assert await scope.run(fn, 21) == 42
        assert scope.parent is caller
        assert current() is caller
    assert seen == [scope]
    assert not scope.active


def _raised_at_once(awaitable: Awaitable[Any]) -> BaseException:
    """Run an awaitable's first step by hand; return what it raised without suspending."""
    step = awaitable.__await__()
    try:
        step.send(None)
    except BaseException as exc:
        return exc
    step.close()
    raise AssertionError("suspended instead of raising at once")


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_refused_exits_raise_at_once_and_leave_children_alone() -> None:
    """Out-of-order or wrong-task exit, even with an exception, neither waits nor cancels."""
    release = asyncio.Event()
    started = asyncio.Event()
    record: list[str] = []

    async def child() -> str:
        started.set()
        try:
            await release.wait()
        except asyncio.CancelledError:
            record.append("child cancelled")
            raise
        return "finished"

    outer = cs.cancellable(name="outer-scope")
    inner = cs.cancellable(name="inner-scope")
    await outer.__aenter__()
    handle = outer.spawn(child)
    await started.wait()
    await inner.__aenter__()
    error = ValueError("passed to a refused exit")

    refused = _raised_at_once(outer.__aexit__(ValueError, error, None))
    assert isinstance(refused, RuntimeError)

    async def intruder() -> BaseException:
        return _raised_at_once(inner.__aexit__(ValueError, error, None))

    refused_elsewhere = await asyncio.create_task(intruder())
    assert isinstance(refused_elsewhere, RuntimeError)
    assert "inner-scope" in str(refused_elsewhere)

    await asyncio.sleep(0)
    assert not handle.done()
    assert not outer.cancel_called
    assert not inner.cancel_called
    assert current() is inner
    await _exit_like_with(inner, None)
    release.set()
    await _exit_like_with(outer, None)
    assert handle.result() == "finished"
    assert record == []


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_entering_an_active_scope_from_another_task_raises() -> None:
    """A scope active in one task cannot be entered by another (its child included)."""
    outcome: list[str] = []

    async def child(scope: cs.CancellationScope) -> None:
        try:
            await scope.__aenter__()
        except RuntimeError:
            outcome.append("RuntimeError")
        outcome.append("unchanged" if current() is scope else "changed")

    async with cs.cancellable(name="busy") as scope:
        scope.spawn(child, scope)
    assert outcome == ["RuntimeError", "unchanged"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_on_plain_with_scope_from_another_task_raises() -> None:
    """spawn into a plain-``with`` scope raises RuntimeError from any task."""
    outcome: list[str] = []

    async def helper(scope: cs.CancellationScope) -> None:
        try:
            scope.spawn(asyncio.sleep, 0)
        except RuntimeError:
            outcome.append("RuntimeError")

    tasks_before = asyncio.all_tasks()
    with cs.cancellable(name="sync") as scope:
        await asyncio.create_task(helper(scope))
    assert outcome == ["RuntimeError"]
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_with_cancelled_body_that_never_suspends_leaks_nothing() -> None:
    """A plain-``with`` scope cancelled in a body that never awaits exits normally, no leak."""
    with cs.cancellable() as scope:
        scope.cancel("never delivered")
    assert not scope.cancelled_caught
    assert_not_cancelling()
    for _ in range(3):
        await asyncio.sleep(0)
    assert_not_cancelling()
