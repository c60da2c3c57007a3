"""SPEC §5, child tasks: spawn, waiting at exit, failures, and TaskHandle."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import (
    HAS_COUNTS,
    ExceptionGroup,
    assert_not_cancelling,
    cancelling,
    children_failing_together,
    current,
    current_task,
    fail_soon,
    forever,
    forever_noting_cancel,
    forever_raising_on_cancel,
    forever_returning_on_cancel,
    run_with_failing_child,
)


async def _add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


class _Worker:
    async def work(self) -> str:
        return "worked"


async def _shrug_off_cancels(
    started: asyncio.Event, record: list[str], times: int, result: str
) -> str:
    """Set started; catch ``times`` cancellations of a wait (noting each), then return result."""
    started.set()
    for attempt in range(times):
        try:
            await forever()
        except asyncio.CancelledError:
            record.append(f"cancelled {attempt}")
    return result


# --- spawn -----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_function_with_args_returns_a_handle_to_the_result() -> None:
    """spawn(fn, *args) runs fn(*args) as a child; the handle gives its result."""
    tasks_before = asyncio.all_tasks()
    async with cs.cancellable() as scope:
        handle = scope.spawn(_add, 2, 3)
        assert isinstance(handle, cs.TaskHandle)
    assert handle.done()
    assert handle.result() == 5
    assert handle.exception() is None
    assert await handle == 5
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_coroutine_object_returns_a_handle_to_the_result() -> None:
    """spawn(coro) runs the coroutine object as a child; the handle gives its result."""
    async with cs.cancellable() as scope:
        handle = scope.spawn(_add(20, 22))
        assert await handle == 42
    assert handle.result() == 42


@pytest.mark.asyncio
async def test_handle_name_defaults_to_the_coroutine_qualname() -> None:
    """A handle's name is the given name, else the coroutine's __qualname__."""

    async def local_child() -> None:
        pass

    async with cs.cancellable() as scope:
        by_fn = scope.spawn(_add, 1, 2)
        by_coro = scope.spawn(_add(1, 2))
        local = scope.spawn(local_child)
        method = scope.spawn(_Worker().work)
        named_fn = scope.spawn(_add, 1, 2, name="adder")
        named_coro = scope.spawn(local_child(), name="local")
    assert by_fn.name == "_add"
    assert by_coro.name == "_add"
    assert local.name == local_child.__qualname__
    assert local.name.endswith("<locals>.local_child")
    assert method.name == "_Worker.work"
    assert named_fn.name == "adder"
    assert named_coro.name == "local"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_exit_waits_for_every_child() -> None:
    """The scope's exit returns only after every child has finished."""
    record: list[str] = []
    body_done = asyncio.Event()

    async def child(tag: str, turns: int) -> None:
        await body_done.wait()
        # Fixed numbers of loop turns order the two children deterministically.
        for _ in range(turns):
            await asyncio.sleep(0)
        record.append(tag)

    tasks_before = asyncio.all_tasks()
    async with cs.cancellable() as scope:
        first = scope.spawn(child, "slow", 3)
        second = scope.spawn(child, "fast", 1)
        record.append("body done")
        body_done.set()
    record.append("exited")
    assert record == ["body done", "fast", "slow", "exited"]
    assert first.done()
    assert second.done()
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_another_task_can_spawn_into_an_open_scope() -> None:
    """A scope passed to another task works as a nursery; the exit waits for that child too."""
    record: list[str] = []
    body_done = asyncio.Event()

    async def child() -> str:
        await body_done.wait()
        await asyncio.sleep(0)
        record.append("child finished")
        return "from child"

    async def helper(nursery: cs.CancellationScope) -> cs.TaskHandle[str]:
        await asyncio.sleep(0)
        return nursery.spawn(child)

    async with cs.cancellable() as scope:
        handle = await asyncio.create_task(helper(scope))
        body_done.set()
        record.append("body done")
    record.append("exited")
    assert record == ["body done", "child finished", "exited"]
    assert handle.result() == "from child"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_can_spawn_a_sibling_while_the_exit_waits() -> None:
    """A child may spawn into its scope after the body finished; the exit waits for it."""
    record: list[str] = []
    body_done = asyncio.Event()
    late: list[cs.TaskHandle[str]] = []

    async def sibling() -> str:
        await asyncio.sleep(0)
        record.append("sibling finished")
        return "late"

    async def first(nursery: cs.CancellationScope) -> None:
        await body_done.wait()
        record.append("first spawns")
        late.append(nursery.spawn(sibling))

    async with cs.cancellable() as scope:
        scope.spawn(first, scope)
        record.append("body done")
        body_done.set()
    record.append("exited")
    assert record == ["body done", "first spawns", "sibling finished", "exited"]
    assert late[0].result() == "late"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_spawned_into_a_cancelled_scope_is_cancelled_by_its_first_suspension() -> None:
    """A child spawned after cancel() never gets past its first suspension point."""
    record: list[str] = []

    async def child() -> None:
        record.append("started")
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            record.append("cancelled")
            raise
        record.append("resumed")

    scope = cs.cancellable(name="pre")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            scope.cancel("early")
            handles.append(scope.spawn(child))
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    assert record in ([], ["started", "cancelled"])
    with pytest.raises(cs.CancelledFailure) as info:
        await handles[0]
    assert info.value.scope is scope
    assert info.value.reason == "early"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_spawned_below_a_cancelled_parent_is_cancelled_by_its_first_suspension() -> (
    None
):
    """A child of a scope whose parent is cancelled is cancelled by its first suspension."""
    record: list[str] = []

    async def child() -> None:
        record.append("started")
        await asyncio.sleep(0)
        record.append("resumed")

    outer = cs.cancellable(name="outer")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with outer:
            outer.cancel("outer gone")
            async with cs.cancellable(name="inner") as inner:
                handles.append(inner.spawn(child))
                await forever()

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is outer
    assert record in ([], ["started"])
    with pytest.raises(cs.CancelledFailure):
        await handles[0]


# --- failures --------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_failure_cancels_body_and_siblings_and_is_reported() -> None:
    """A failing child cancels the scope (reason names child and error); exit reports it."""
    record: list[str] = []
    boom = ValueError("boom")
    sibling_started = asyncio.Event()

    async def failing() -> None:
        await sibling_started.wait()
        raise boom

    scope = cs.cancellable(name="owner")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            handles.append(
                scope.spawn(forever_noting_cancel, record, "sibling cancelled", sibling_started)
            )
            handles.append(scope.spawn(failing, name="failer"))
            try:
                await forever()
            except asyncio.CancelledError:
                record.append("body cancelled")
                raise

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [boom]
    assert info.value.exceptions[0] is boom
    assert sorted(record) == ["body cancelled", "sibling cancelled"]
    assert scope.cancel_called
    reason = scope.cancel_reason
    assert reason is not None
    assert "failer" in reason
    assert "boom" in reason or "ValueError" in reason
    sibling_handle, failer_handle = handles
    with pytest.raises(cs.CancelledFailure):
        await sibling_handle
    assert failer_handle.exception() is boom


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_failed_handle_raises_the_childs_exception() -> None:
    """await/result() on a failed child's handle raise its exception; exception() returns it."""
    boom = KeyError("boom")

    async def failing() -> None:
        await asyncio.sleep(0)
        raise boom

    scope = cs.cancellable()
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            handles.append(scope.spawn(failing))

    with pytest.raises(ExceptionGroup):
        await body()
    (handle,) = handles
    assert handle.done()
    assert handle.exception() is boom
    with pytest.raises(KeyError) as by_result:
        handle.result()
    assert by_result.value is boom
    with pytest.raises(KeyError) as by_await:
        await handle
    assert by_await.value is boom


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_two_children_failing_together_are_both_reported() -> None:
    """Children that fail in the same loop iteration are all in the exit's group."""
    first = ValueError("first")
    second = TypeError("second")
    with pytest.raises(ExceptionGroup) as info:
        await children_failing_together(first, second)
    assert {id(e) for e in info.value.exceptions} == {id(first), id(second)}
    assert len(info.value.exceptions) == 2


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_failure_after_the_body_finished_cancels_siblings() -> None:
    """A child failing while the exit waits cancels the remaining children and is reported."""
    record: list[str] = []
    body_done = asyncio.Event()
    boom = ValueError("late boom")

    async def failing() -> None:
        await body_done.wait()
        raise boom

    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(forever_noting_cancel, record, "sibling cancelled")
            scope.spawn(failing)
            body_done.set()
            record.append("body done")

    tasks_before = asyncio.all_tasks()
    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [boom]
    assert record == ["body done", "sibling cancelled"]
    assert scope.cancel_called
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_timeout_failure_from_a_childs_inner_scope_is_a_failure() -> None:
    """A TimeoutFailure escaping a child (its own inner with_timeout) fails the scope."""
    loop = asyncio.get_running_loop()

    async def child() -> None:
        async with cs.with_timeout(5):
            await asyncio.sleep(3600)

    scope = cs.cancellable()
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            handles.append(scope.spawn(child))
            await asyncio.sleep(3600)

    with pytest.raises(ExceptionGroup) as info:
        await body()
    (leaf,) = info.value.exceptions
    assert isinstance(leaf, cs.TimeoutFailure)
    assert handles[0].exception() is leaf
    assert scope.cancel_called
    assert loop.time() == 5


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_failure_from_a_childs_inner_scope_is_a_failure() -> None:
    """A CancelledFailure escaping a child (its own inner scope) fails the scope."""

    async def child() -> None:
        async with cs.cancellable(name="child-inner") as inner:
            inner.cancel("inner reason")
            await forever()

    scope = cs.cancellable()
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            handles.append(scope.spawn(child))
            await forever()

    with pytest.raises(ExceptionGroup) as info:
        await body()
    (leaf,) = info.value.exceptions
    assert isinstance(leaf, cs.CancelledFailure)
    assert leaf.reason == "inner reason"
    assert leaf.scope is not None
    assert leaf.scope.name == "child-inner"
    # A failed child: exception() returns the failure instead of raising it.
    assert handles[0].exception() is leaf
    assert scope.cancel_called


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_body_exception_cancels_children_before_waiting() -> None:
    """When the body raises, the children are cancelled and the body's error propagates."""
    record: list[str] = []
    started = [asyncio.Event(), asyncio.Event()]
    error = KeyError("body")

    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with cs.cancellable() as scope:
            for index, event in enumerate(started):
                handles.append(
                    scope.spawn(forever_noting_cancel, record, f"child {index} cancelled", event)
                )
            for event in started:
                await event.wait()
            raise error

    tasks_before = asyncio.all_tasks()
    with pytest.raises(KeyError) as info:
        await body()
    assert info.value is error
    assert sorted(record) == ["child 0 cancelled", "child 1 cancelled"]
    for handle in handles:
        with pytest.raises(cs.CancelledFailure):
            await handle
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_foreign_cancellation_of_the_body_cancels_children() -> None:
    """A native task.cancel() unwinding the body cancels the children too, then propagates."""
    record: list[str] = []
    child_started = asyncio.Event()
    handles: list[cs.TaskHandle[None]] = []

    async def victim() -> None:
        async with cs.cancellable() as scope:
            handles.append(
                scope.spawn(forever_noting_cancel, record, "child cancelled", child_started)
            )
            await forever()

    task = asyncio.create_task(victim())
    await child_started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["child cancelled"]
    assert handles[0].done()
    with pytest.raises(cs.CancelledFailure):
        await handles[0]


# --- TaskHandle ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_before_completion_is_not_done() -> None:
    """Before the child finishes: done() is False, result()/exception() raise InvalidStateError."""
    release = asyncio.Event()

    async def child() -> str:
        await release.wait()
        return "finished"

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        await asyncio.sleep(0)
        assert not handle.done()
        with pytest.raises(asyncio.InvalidStateError):
            handle.result()
        with pytest.raises(asyncio.InvalidStateError):
            handle.exception()
        release.set()
        assert await handle == "finished"
        assert handle.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_child_handle_raises_cancelled_failure_with_scope_and_reason() -> None:
    """A child cancelled with its scope: await/result()/exception() raise CancelledFailure."""
    child_started = asyncio.Event()
    scope = cs.cancellable(name="owner")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            handles.append(scope.spawn(forever, child_started))
            await child_started.wait()
            scope.cancel("shutting down")
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    (handle,) = handles
    assert handle.done()
    with pytest.raises(cs.CancelledFailure) as by_await:
        await handle
    with pytest.raises(cs.CancelledFailure) as by_result:
        handle.result()
    with pytest.raises(cs.CancelledFailure) as by_exception:
        handle.exception()
    for info in (by_await, by_result, by_exception):
        assert info.value.scope is scope
        assert info.value.reason == "shutting down"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_cancel_cancels_that_child_alone_and_is_not_a_failure() -> None:
    """handle.cancel(reason) stops one child; siblings and the scope carry on normally."""
    victim_started = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def other() -> str:
        await release.wait()
        return "other finished"

    async with cs.cancellable(name="owner") as scope:
        doomed = scope.spawn(forever_noting_cancel, record, "victim cancelled", victim_started)
        survivor = scope.spawn(other)
        await victim_started.wait()
        doomed.cancel("only you")
        with pytest.raises(cs.CancelledFailure) as info:
            await doomed
        record.append("body carries on")
        await asyncio.sleep(0)
        release.set()
    assert record == ["victim cancelled", "body carries on"]
    assert survivor.result() == "other finished"
    assert not scope.cancel_called
    assert not scope.cancelled_caught
    assert info.value.reason == "only you"
    assert info.value.scope is scope
    with pytest.raises(cs.CancelledFailure):
        doomed.exception()
    assert_not_cancelling()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_that_catches_handle_cancel_and_returns_has_completed() -> None:
    """A child that catches its cancellation and returns a value completed with that value."""
    started = asyncio.Event()
    async with cs.cancellable() as scope:
        handle = scope.spawn(forever_returning_on_cancel, "cleaned up", started)
        await started.wait()
        handle.cancel("please stop")
        assert await handle == "cleaned up"
    assert handle.result() == "cleaned up"
    assert handle.exception() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_that_catches_scope_cancel_and_returns_has_completed() -> None:
    """A child that returns a value after its scope's cancellation completed with that value."""
    started = asyncio.Event()
    scope = cs.cancellable()
    handles: list[cs.TaskHandle[str]] = []

    async def body() -> None:
        async with scope:
            handles.append(scope.spawn(forever_returning_on_cancel, "cleaned up", started))
            await started.wait()
            scope.cancel()
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    assert handles[0].result() == "cleaned up"
    assert handles[0].exception() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelling_the_task_awaiting_a_handle_does_not_cancel_the_child() -> None:
    """task.cancel() on a task awaiting a handle leaves the child running."""
    release = asyncio.Event()
    waiting = asyncio.Event()

    async def child() -> str:
        await release.wait()
        return "done"

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)

        async def awaiter() -> str:
            waiting.set()
            return await handle

        task = asyncio.create_task(awaiter())
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert not handle.done()
        release.set()
        assert await handle == "done"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelling_the_scope_awaiting_a_handle_does_not_cancel_the_child() -> None:
    """A handle awaited inside another (cancelled) scope: that scope stops, the child does not."""
    release = asyncio.Event()

    async def child() -> str:
        await release.wait()
        return "done"

    async with cs.cancellable(name="owner") as owner:
        handle = owner.spawn(child)
        waiter_scope = cs.cancellable(name="waiter")

        async def wait_in_other_scope() -> None:
            async with waiter_scope:
                waiter_scope.cancel("waiter gives up")
                await handle

        with pytest.raises(cs.CancelledFailure) as info:
            await wait_in_other_scope()
        assert info.value.scope is waiter_scope
        assert not handle.done()
        release.set()
        assert await handle == "done"
    assert not owner.cancel_called


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_can_be_awaited_from_a_child_of_another_scope() -> None:
    """A child of scope B can await a handle owned by scope A."""
    release = asyncio.Event()

    async def producer() -> int:
        await release.wait()
        return 7

    async def consumer(handle: cs.TaskHandle[int]) -> int:
        return await handle * 6

    async with cs.cancellable(name="a") as a:
        produced = a.spawn(producer)
        async with cs.cancellable(name="b") as b:
            consumed = b.spawn(consumer, produced)
            await asyncio.sleep(0)
            release.set()
        assert consumed.result() == 42
    assert produced.result() == 7


# --- shields and reach -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_children_of_a_non_cancellable_scope_are_shielded() -> None:
    """Children of a non-cancellable scope (and of scopes inside it) ignore outside requests."""
    record: list[str] = []
    started = [asyncio.Event(), asyncio.Event()]
    release = asyncio.Event()

    async def child(index: int) -> str:
        started[index].set()
        await release.wait()
        await asyncio.sleep(0)
        record.append(f"child {index} finished")
        return "finished"

    outer = cs.cancellable(name="outer")
    handles: list[cs.TaskHandle[str]] = []

    async def body() -> None:
        async with outer:
            async with cs.non_cancellable() as shield:
                handles.append(shield.spawn(child, 0))
                async with cs.cancellable() as inside:
                    handles.append(inside.spawn(child, 1))
                    for event in started:
                        await event.wait()
                    outer.cancel("outside")
                    await asyncio.sleep(0)
                    record.append("shielded body carries on")
                    release.set()
            record.append("shield exited")
            await forever()

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is outer
    assert record == [
        "shielded body carries on",
        "child 1 finished",
        "child 0 finished",
        "shield exited",
    ] or record == [
        "shielded body carries on",
        "child 0 finished",
        "child 1 finished",
        "shield exited",
    ]
    assert [h.result() for h in handles] == ["finished", "finished"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_on_a_non_cancellable_scope_reaches_its_own_children() -> None:
    """cancel() on a non-cancellable scope itself cancels its children."""
    started = asyncio.Event()
    shield = cs.non_cancellable(name="shield")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with shield:
            handles.append(shield.spawn(forever, started))
            await started.wait()
            shield.cancel("own request")
            await forever()

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert info.value.scope is shield
    with pytest.raises(cs.CancelledFailure) as child_info:
        await handles[0]
    assert child_info.value.reason == "own request"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_outer_cancellation_reaches_children_at_every_suspension() -> None:
    """A child below a cancelled scope is cancelled again at each suspension it tries."""
    started = asyncio.Event()
    record: list[str] = []
    outer = cs.cancellable(name="outer")
    handles: list[cs.TaskHandle[str]] = []

    async def body() -> None:
        async with outer, cs.cancellable(name="inner") as inner:
            handles.append(inner.spawn(_shrug_off_cancels, started, record, 3, "gave up waiting"))
            await started.wait()
            outer.cancel()
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    assert record == ["cancelled 0", "cancelled 1", "cancelled 2"]
    assert handles[0].result() == "gave up waiting"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_each_child_reached_by_one_cancel_gets_it_again_at_every_suspension() -> None:
    """One request reaching many children re-delivers to each child that shrugs it off.

    Children that end on the first delivery and children that catch it (once, or
    three times) are cancelled by the same walk of the tree.
    """
    times = [None, 1, 3, None, 2]  # None: ends on the first delivery
    records: list[list[str]] = [[] for _ in times]
    started = [asyncio.Event() for _ in times]
    handles: list[cs.TaskHandle[str]] = []

    async def ends(started: asyncio.Event, record: list[str]) -> str:
        started.set()
        try:
            await forever()
        finally:
            record.append("ended")
        return "not reached"  # (the wait ends only by cancellation)

    # The body ends without meeting the cancellation: the exit waits for the
    # children and raises nothing (SPEC 7).
    async with cs.cancellable() as scope:
        for i, n in enumerate(times):
            if n is None:
                handles.append(scope.spawn(ends, started[i], records[i]))
            else:
                handles.append(scope.spawn(_shrug_off_cancels, started[i], records[i], n, f"c{i}"))
        for event in started:
            await event.wait()
        scope.cancel()
    assert records == [
        ["ended"],
        ["cancelled 0"],
        ["cancelled 0", "cancelled 1", "cancelled 2"],
        ["ended"],
        ["cancelled 0", "cancelled 1"],
    ]
    assert [h.cancelled() for h in handles] == [True, False, False, True, False]
    assert [h.result() for h in handles if not h.cancelled()] == ["c1", "c2", "c4"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_no_child_outlives_its_scope_whatever_happens() -> None:
    """After the exit, every child task of the scope is done, whichever way the scope ended."""
    tasks_before = asyncio.all_tasks()
    handles: list[cs.TaskHandle[Any]] = []

    async def stubborn() -> None:
        while True:
            try:
                await forever()
            except asyncio.CancelledError:
                break
        await asyncio.sleep(0)

    async def body() -> None:
        async with cs.cancellable() as scope:
            handles.append(scope.spawn(stubborn))
            handles.append(scope.spawn(forever))
            await asyncio.sleep(0)
            raise RuntimeError("body fails")

    with pytest.raises(RuntimeError, match="body fails"):
        await body()
    assert all(h.done() for h in handles)
    assert asyncio.all_tasks() == tasks_before
    assert_not_cancelling()


# --- edge cases ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_leaves_the_spawning_tasks_current_scope_alone() -> None:
    """After spawn() returns (even if the child ran eagerly into a scope) current() is as before."""
    seen: list[cs.CancellationScope | None] = []

    async def child() -> None:
        async with cs.cancellable(name="child-own"):
            seen.append(current())
            await asyncio.sleep(0)

    async with cs.cancellable(name="owner") as owner:
        owner.spawn(child)
        assert current() is owner
        await asyncio.sleep(0)
        assert current() is owner
    assert current() is None
    assert len(seen) == 1
    assert seen[0] is not None
    assert seen[0].name == "child-own"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_failing_before_its_first_suspension_cancels_the_body() -> None:
    """A child that raises at once (eagerly inside spawn, or on its first step) fails the scope."""
    boom = ValueError("at once")
    record: list[str] = []

    async def failing() -> None:
        raise boom

    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(failing)
            record.append("spawned")
            try:
                await forever()
            except asyncio.CancelledError:
                record.append("body cancelled")
                raise

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [boom]
    assert record == ["spawned", "body cancelled"]
    assert scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_returning_before_its_first_suspension_completes() -> None:
    """A child with no suspension point completes; the scope exits normally."""

    async def immediate(value: int) -> int:
        return value

    async with cs.cancellable() as scope:
        handle = scope.spawn(immediate, 3)
        assert await handle == 3
    assert handle.result() == 3
    assert not scope.cancel_called


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_raising_cancelled_error_itself_is_not_a_failure() -> None:
    """A child ending with CancelledError (no request) is cancelled, not failed."""

    async def quits() -> None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    async with cs.cancellable() as scope:
        handle = scope.spawn(quits)
    assert not scope.cancel_called
    assert handle.done()
    with pytest.raises(cs.CancelledFailure):
        await handle


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_failing_with_a_siblings_cancelled_failure_is_a_failure() -> None:
    """A child that lets a CancelledFailure escape (from awaiting a cancelled handle) failed."""
    started = asyncio.Event()

    async def dependent(handle: cs.TaskHandle[None]) -> None:
        await handle

    scope = cs.cancellable(name="owner")

    async def body() -> None:
        async with scope:
            victim_handle = scope.spawn(forever, started)
            scope.spawn(dependent, victim_handle, name="dependent")
            await started.wait()
            await asyncio.sleep(0)
            victim_handle.cancel("victim only")
            await forever()

    with pytest.raises(ExceptionGroup) as info:
        await body()
    (leaf,) = info.value.exceptions
    assert isinstance(leaf, cs.CancelledFailure)
    assert leaf.reason == "victim only"
    assert scope.cancel_called
    assert scope.cancel_reason is not None
    assert "dependent" in scope.cancel_reason


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_failure_in_a_non_cancellable_scope_cancels_its_body() -> None:
    """A failure cancels a non-cancellable scope's own body too (its own request)."""
    boom = ValueError("boom")
    scope = cs.non_cancellable(name="shield")
    with pytest.raises(ExceptionGroup) as info:
        await run_with_failing_child(scope, boom)
    assert list(info.value.exceptions) == [boom]
    assert scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_child_failure_in_a_move_on_scope_is_still_reported() -> None:
    """raise_on_cancel=False does not hide child failures: the group is raised."""
    boom = ValueError("boom")

    async def body() -> None:
        async with cs.move_on_after(100) as scope:
            scope.spawn(fail_soon, boom)
            await asyncio.sleep(3600)

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [boom]
    assert asyncio.get_running_loop().time() == 0


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_spawned_by_a_cancelled_task_belongs_to_the_nursery() -> None:
    """A child spawned from a task in a cancelled scope is not reached by that scope."""
    release = asyncio.Event()
    spawned: list[cs.TaskHandle[str]] = []

    async def child() -> str:
        await release.wait()
        return "finished"

    async def spawner(nursery: cs.CancellationScope) -> None:
        async with cs.cancellable(name="spawner") as own:
            own.cancel("spawner stops")
            spawned.append(nursery.spawn(child))
            await forever()

    async with cs.cancellable(name="nursery") as nursery:
        with pytest.raises(cs.CancelledFailure):
            await asyncio.create_task(spawner(nursery))
        await asyncio.sleep(0)
        assert not spawned[0].done()
        release.set()
    assert spawned[0].result() == "finished"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_exit_keeps_waiting_for_a_shielded_child_when_the_host_is_cancelled() -> None:
    """A native cancel of the host during the exit's wait does not let a child outlive the scope."""
    child_started = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []
    handles: list[cs.TaskHandle[str]] = []
    counts: list[int] = []

    async def child() -> str:
        async with cs.non_cancellable():
            child_started.set()
            await release.wait()
            await asyncio.sleep(0)
        record.append("child finished")
        return "finished"

    async def host() -> None:
        task = current_task()
        try:
            async with cs.cancellable() as scope:
                handles.append(scope.spawn(child))
                record.append("body done")
        except asyncio.CancelledError:
            record.append("host cancelled")
            if HAS_COUNTS:
                counts.append(cancelling(task))
            raise

    task = asyncio.create_task(host())
    await child_started.wait()
    await asyncio.sleep(0)
    task.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["body done", "child finished", "host cancelled"]
    assert handles[0].result() == "finished"
    assert counts == ([1] if HAS_COUNTS else [])


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_cancel_is_level_triggered_for_that_child() -> None:
    """A child cancelled through its handle is cancelled again at each later suspension."""
    started = asyncio.Event()
    record: list[str] = []
    async with cs.cancellable() as scope:
        handle = scope.spawn(_shrug_off_cancels, started, record, 2, "gave up")
        await started.wait()
        handle.cancel()
    assert record == ["cancelled 0", "cancelled 1"]
    assert handle.result() == "gave up"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_cancel_reaches_a_child_inside_a_non_cancellable_scope_only_at_its_edge() -> (
    None
):
    """handle.cancel() is a request from outside the child's own shield: the shield holds."""
    started = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def child() -> None:
        async with cs.non_cancellable():
            started.set()
            await release.wait()
            record.append("shielded part done")
        await asyncio.sleep(0)
        record.append("not reached")

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        await started.wait()
        handle.cancel("stop")
        await asyncio.sleep(0)
        release.set()
    assert record == ["shielded part done"]
    with pytest.raises(cs.CancelledFailure):
        await handle


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_cancel_after_completion_changes_nothing() -> None:
    """handle.cancel() on a finished child keeps its result."""
    async with cs.cancellable() as scope:
        handle = scope.spawn(_add, 1, 1)
        assert await handle == 2
        handle.cancel("too late")
    assert handle.result() == 2
    assert handle.exception() is None
    assert not scope.cancel_called


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_cancelled_natively_is_not_a_failure() -> None:
    """A child ended by a native task.cancel() is cancelled, not failed; the scope carries on."""
    child_tasks: list[asyncio.Task[Any]] = []
    started = asyncio.Event()

    async def child() -> None:
        child_tasks.append(current_task())
        await forever(started)

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        await started.wait()
        child_tasks[0].cancel()
        with pytest.raises(cs.CancelledFailure):
            await handle
        await asyncio.sleep(0)
    assert not scope.cancel_called
    assert not scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_failure_after_cancel_keeps_the_first_reason_and_is_reported() -> None:
    """A child failing while the scope is already cancelled: group raised, first reason kept."""
    started = asyncio.Event()
    cleanup_error = OSError("cleanup failed")
    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(forever_raising_on_cancel, cleanup_error, started)
            await started.wait()
            scope.cancel("first")
            await forever()

    with pytest.raises(ExceptionGroup) as info:
        await body()
    assert list(info.value.exceptions) == [cleanup_error]
    assert scope.cancel_reason == "first"
    assert scope.cancelled_caught


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_accepts_partial_of_a_coroutine_function() -> None:
    """A functools.partial of a coroutine function spawns; the name is the coroutine's."""
    async with cs.cancellable() as scope:
        handle = scope.spawn(functools.partial(_add, 40), 2)
    assert handle.result() == 42
    assert handle.name == "_add"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_cancel_right_after_spawn_cancels_before_the_child_runs_on() -> None:
    """handle.cancel() straight after spawn: the child stops by its first suspension point."""
    record: list[str] = []

    async def child() -> str:
        record.append("started")
        await asyncio.sleep(0)
        record.append("resumed")
        return "finished"

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        handle.cancel("never mind")
    assert record in ([], ["started"])
    with pytest.raises(cs.CancelledFailure) as info:
        await handle
    assert info.value.reason == "never mind"
    assert info.value.scope is scope
    assert not scope.cancel_called


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_cancels_children_and_handles_report_it() -> None:
    """A with_timeout scope's deadline cancels its children too; handles report the reason."""
    scope = cs.with_timeout(4)
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with scope:
            handles.append(scope.spawn(asyncio.sleep, 3600))
            await asyncio.sleep(3600)

    with pytest.raises(cs.TimeoutFailure):
        await body()
    assert asyncio.get_running_loop().time() == 4
    with pytest.raises(cs.CancelledFailure) as info:
        await handles[0]
    assert info.value.reason == "deadline exceeded"
    assert info.value.scope is scope


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_cancelled_by_an_outer_request_names_its_own_scope() -> None:
    """A child cut by an outer scope's cancel: CancelledFailure.scope is the child's scope."""
    started = asyncio.Event()
    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with outer, inner:
            handles.append(inner.spawn(forever, started))
            await started.wait()
            outer.cancel("from outer")
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    with pytest.raises(cs.CancelledFailure) as info:
        await handles[0]
    assert info.value.scope is inner
    assert info.value.reason == "from outer"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_body_exception_in_a_non_cancellable_scope_cancels_its_children() -> None:
    """A non-cancellable scope still cancels its own children when its body raises."""
    started = asyncio.Event()
    error = ValueError("body")
    handles: list[cs.TaskHandle[None]] = []

    async def body() -> None:
        async with cs.non_cancellable() as scope:
            handles.append(scope.spawn(forever, started))
            await started.wait()
            raise error

    with pytest.raises(ValueError) as info:
        await body()
    assert info.value is error
    with pytest.raises(cs.CancelledFailure):
        await handles[0]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_plain_task_created_by_a_child_is_not_a_child() -> None:
    """A task a child makes with asyncio.create_task sees current() None and is not reached."""
    seen: list[cs.CancellationScope | None] = []
    release = asyncio.Event()
    grandchildren: list[asyncio.Task[str]] = []

    async def plain() -> str:
        seen.append(current())
        await release.wait()
        return "survived"

    async def child() -> None:
        grandchildren.append(asyncio.create_task(plain()))
        await forever()

    scope = cs.cancellable()

    async def body() -> None:
        async with scope:
            scope.spawn(child)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            scope.cancel()
            await forever()

    with pytest.raises(cs.CancelledFailure):
        await body()
    assert seen == [None]
    assert not grandchildren[0].done()
    release.set()
    assert await grandchildren[0] == "survived"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_task_cancelled_natively_before_its_first_step() -> None:
    """task.cancel() on a child's task before it ever ran (a shutdown loop over
    asyncio.all_tasks(), say): the child counts as cancelled and the scope's exit does not
    wait for it for ever."""
    ran: list[str] = []

    async def child() -> None:
        ran.append("child ran")

    host = asyncio.current_task()
    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        if not handle.done():  # (with an eager task factory it has already run)
            for task in asyncio.all_tasks():
                if task is not host:
                    task.cancel()
    assert handle.done()
    if ran:
        assert handle.result() is None
    else:
        assert handle.cancelled()
        with pytest.raises(cs.CancelledFailure, match="was cancelled"):
            await handle
    assert not scope.cancel_called
