"""SPEC 8: scopes next to asyncio.timeout, wait_for, shield, TaskGroup, anyio, Runner, eager tasks.

Each side keeps its own behaviour: cancellation that a scope does not own passes through it
untouched, and a scope's own cancellation is never mistaken for somebody else's.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import cancelscope as cs

from ._helpers import (
    HAS_COUNTS,
    ExceptionGroup,
    Runner,
    TaskGroup,
    cancelling,
    current_task,
    eager_loop,
    forever,
    forever_noting_cancel,
    forever_raising_on_cancel,
    only_310,
    requires_311,
    requires_312,
    timeout,
    uncancel,
)


async def _raise_on_cancel() -> None:
    await forever_raising_on_cancel(ValueError("cleanup failed"))


async def _boom() -> None:
    raise ZeroDivisionError


def _cancel_both(task: asyncio.Task[None], scope: cs.CancellationScope, first: str) -> None:
    """Call task.cancel("native") and scope.cancel("ours"), ``first`` ("native"/"scope") first."""
    if first == "native":
        task.cancel("native")
        scope.cancel("ours")
    else:
        scope.cancel("ours")
        task.cancel("native")


async def _after_the_scope() -> str:
    """Await once more after a scope is gone: say whether a stray CancelledError arrived."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        return "after: stray CancelledError"
    return "after: not cancelled"


# --------------------------------------------------------------------------- asyncio.timeout


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_asyncio_timeout_inside_scope() -> None:
    """asyncio.timeout inside a scope raises its TimeoutError; the scope is not involved."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    async with cs.cancellable() as scope:
        try:
            async with timeout(2):
                await asyncio.sleep(10)
        except TimeoutError as err:
            record.append(f"{type(err).__name__} at {loop.time():g}")
        await asyncio.sleep(1)
        record.append("scope goes on")
    assert record == ["TimeoutError at 2", "scope goes on"]
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False
    assert cancelling(current_task()) == 0


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_asyncio_timeout_around_scopes() -> None:
    """asyncio.timeout around scopes raises TimeoutError; its CancelledError passes through them."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with timeout(2), cs.cancellable() as outer, cs.move_on_after(50) as inner:
            await asyncio.sleep(10)
    except TimeoutError as err:
        record.append(f"{type(err).__name__} at {loop.time():g}")
    assert record == ["TimeoutError at 2"]
    assert outer.cancelled_caught is False
    assert inner.cancelled_caught is False
    assert cancelling(current_task()) == 0
    await asyncio.sleep(0)


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_with_timeout_inside_asyncio_timeout() -> None:
    """with_timeout expiring inside a longer asyncio.timeout raises TimeoutFailure only."""
    record: list[str] = []
    try:
        async with timeout(10) as native, cs.with_timeout(2):
            await asyncio.sleep(100)
    except cs.TimeoutFailure:
        record.append("TimeoutFailure")
    assert record == ["TimeoutFailure"]
    assert native.expired() is False
    assert cancelling(current_task()) == 0


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_with_timeout_around_asyncio_timeout() -> None:
    """with_timeout expiring around a longer asyncio.timeout raises TimeoutFailure only."""
    record: list[str] = []
    try:
        async with cs.with_timeout(2) as scope, timeout(10) as native:
            await asyncio.sleep(100)
    except cs.TimeoutFailure as failure:
        record.append(f"TimeoutFailure from scope: {failure.scope is scope}")
    assert record == ["TimeoutFailure from scope: True"]
    assert native.expired() is False
    assert cancelling(current_task()) == 0


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_equal_deadlines_asyncio_timeout_outer() -> None:
    """asyncio.timeout and an inner with_timeout expiring together: asyncio's TimeoutError wins."""
    record: list[str] = []
    try:
        async with timeout(5) as native, cs.with_timeout(5) as scope:
            await asyncio.sleep(100)
    except TimeoutError as err:
        record.append(type(err).__name__)
    assert record == ["TimeoutError"]
    assert native.expired() is True
    assert scope.cancelled_caught is False
    assert cancelling(current_task()) == 0
    await asyncio.sleep(0)


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_equal_deadlines_scope_outer() -> None:
    """with_timeout and an inner asyncio.timeout expiring together: the outer scope reports."""
    record: list[str] = []
    try:
        async with cs.with_timeout(5) as scope, timeout(5):
            await asyncio.sleep(100)
    except cs.TimeoutFailure as failure:
        record.append(f"TimeoutFailure from scope: {failure.scope is scope}")
    assert record == ["TimeoutFailure from scope: True"]
    assert cancelling(current_task()) == 0
    await asyncio.sleep(0)


# --------------------------------------------------------------------------- native cancel


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_native_cancel_passes_through_scopes_untouched() -> None:
    """task.cancel() on the host passes through every kind of scope as the same exception."""
    record: list[str] = []
    entered = asyncio.Event()
    seen: list[BaseException] = []
    scopes: list[cs.CancellationScope] = []

    async def host() -> None:
        try:
            async with (
                cs.cancellable() as a,
                cs.with_timeout(3600) as b,
                cs.move_on_after(3600) as c,
                cs.non_cancellable() as d,
                cs.CancellationScope(raise_on_cancel=False) as e,
            ):
                scopes.extend([a, b, c, d, e])
                await forever(entered, on_cancel=seen.append)
        except asyncio.CancelledError as err:
            record.append(f"same object: {err is seen[0]} args={err.args}")
            if HAS_COUNTS:
                record.append(f"cancelling={cancelling(current_task())}")
            raise

    task = asyncio.create_task(host())
    await entered.wait()
    task.cancel("native")
    results = await asyncio.gather(task, return_exceptions=True)
    expected = ["same object: True args=('native',)"]
    if HAS_COUNTS:
        expected.append("cancelling=1")
    assert record == expected
    assert isinstance(results[0], asyncio.CancelledError)
    assert [s.cancelled_caught for s in scopes] == [False] * 5
    assert [s.cancel_called for s in scopes] == [False] * 5


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_native_cancel_count_restored_after_caught() -> None:
    """After catching a native cancel outside the scopes, uncancel() brings cancelling() to 0."""
    record: list[str] = []

    async def host() -> None:
        task = current_task()
        try:
            async with cs.cancellable(), cs.non_cancellable():
                task.cancel()
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            record.append(f"cancelling={cancelling(task)}")
            uncancel(task)
        await asyncio.sleep(0)
        record.append(f"after: cancelling={cancelling(task)}")

    await asyncio.create_task(host())
    assert record == ["cancelling=1", "after: cancelling=0"]


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("first", ["native", "scope"])
async def test_same_iteration_native_and_scope_cancel(first: str) -> None:
    """3.11+: a native cancel in the same iteration as the scope's own is never swallowed."""
    record: list[str] = []
    entered = asyncio.Event()
    scope = cs.cancellable(name="s")

    async def host() -> None:
        try:
            async with scope:
                entered.set()
                await forever()
        except asyncio.CancelledError:
            record.append(f"CancelledError cancelling={cancelling(current_task())}")
            raise
        except cs.CancelledFailure:
            record.append("swallowed into CancelledFailure")

    task = asyncio.create_task(host())
    await entered.wait()
    _cancel_both(task, scope, first)
    results = await asyncio.gather(task, return_exceptions=True)
    assert record == ["CancelledError cancelling=1"]
    assert isinstance(results[0], asyncio.CancelledError)


@only_310
@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("first", ["native", "scope"])
async def test_same_iteration_race_on_310(first: str) -> None:
    """3.10 (documented): a same-iteration native cancel may be absorbed, and then nothing leaks."""
    record: list[str] = []
    entered = asyncio.Event()
    scope = cs.cancellable(name="s")

    async def host() -> None:
        try:
            async with scope:
                entered.set()
                await forever()
        except asyncio.CancelledError:
            record.append("CancelledError")
            raise
        except cs.CancelledFailure:
            record.append("absorbed")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        record.append("task goes on")

    task = asyncio.create_task(host())
    await entered.wait()
    _cancel_both(task, scope, first)
    await asyncio.gather(task, return_exceptions=True)
    assert record in (["CancelledError"], ["absorbed", "task goes on"])
    assert task.cancelled() is (record == ["CancelledError"])


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_native_cancel_after_scope_cancel_is_not_absorbed() -> None:
    """A native cancel landing in a later iteration than the scope's own is never absorbed."""
    record: list[str] = []
    shielded = asyncio.Event()
    scope = cs.cancellable(name="s")

    async def host() -> None:
        try:
            async with scope:
                try:
                    await forever()
                except asyncio.CancelledError:
                    record.append("scope's cancel caught")
                    async with cs.non_cancellable():
                        shielded.set()
                        await forever()
        except asyncio.CancelledError as err:
            record.append(f"CancelledError {err.args}")
            if HAS_COUNTS:
                record.append(f"cancelling={cancelling(current_task())}")
            raise
        except cs.CancelledFailure:
            record.append("absorbed")

    task = asyncio.create_task(host())
    await asyncio.sleep(0)
    scope.cancel("ours")
    await shielded.wait()
    await asyncio.sleep(0)
    task.cancel("native")
    results = await asyncio.gather(task, return_exceptions=True)
    expected = ["scope's cancel caught", "CancelledError ('native',)"]
    if HAS_COUNTS:
        expected.append("cancelling=1")
    assert record == expected
    assert isinstance(results[0], asyncio.CancelledError)


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_scope_cancel_after_native_cancel_is_not_absorbed() -> None:
    """A native cancel caught inside a shield and re-raised after a later scope cancel passes."""
    record: list[str] = []
    shielded = asyncio.Event()
    release = asyncio.Event()
    scope = cs.cancellable(name="s")

    async def host() -> None:
        try:
            async with scope:
                try:
                    await forever()
                except asyncio.CancelledError:
                    async with cs.non_cancellable():
                        shielded.set()
                        await release.wait()
                    raise
        except asyncio.CancelledError as err:
            record.append(f"CancelledError {err.args}")
            raise
        except cs.CancelledFailure:
            record.append("absorbed")

    task = asyncio.create_task(host())
    await asyncio.sleep(0)
    task.cancel("native")
    await shielded.wait()
    scope.cancel("ours")
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(task, return_exceptions=True)
    assert record == ["CancelledError ('native',)"]
    assert task.cancelled()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_native_cancel_pending_at_entry_is_not_absorbed() -> None:
    """A native cancel requested just before entry and delivered inside a cancelled scope passes."""
    record: list[str] = []

    async def host() -> None:
        current_task().cancel("native")
        try:
            async with cs.cancellable() as scope:
                scope.cancel("ours")
                await asyncio.sleep(0)
        except asyncio.CancelledError as err:
            record.append(f"CancelledError {err.args}")
            raise
        except cs.CancelledFailure:
            record.append("native cancel absorbed into CancelledFailure")

    task = asyncio.create_task(host())
    await asyncio.gather(task, return_exceptions=True)
    assert record == ["CancelledError ('native',)"]
    assert task.cancelled()


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_eager_taskgroup_abort_before_scope_entry_not_absorbed() -> None:
    """A TaskGroup abort requested before a scope's entry (eager child failed) is not absorbed."""
    record: list[str] = []
    try:
        async with TaskGroup() as tg:
            tg.create_task(_boom())
            try:
                async with cs.cancellable() as scope:
                    scope.cancel("ours")
                    await forever()
            except cs.CancelledFailure:
                record.append("abort absorbed by the scope")
            await asyncio.sleep(0)
            record.append("TaskGroup body went on")
    except ExceptionGroup as group:
        record.append(repr(group.exceptions))
    assert record == ["(ZeroDivisionError(),)"]
    assert cancelling(current_task()) == 0


# --------------------------------------------------------------------------- wait_for


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_wait_for_around_scope() -> None:
    """wait_for around a scope times out with its own TimeoutError; the scope passes it."""
    loop = asyncio.get_running_loop()
    scopes: list[cs.CancellationScope] = []

    async def work() -> None:
        async with cs.cancellable() as scope:
            scopes.append(scope)
            await asyncio.sleep(100)

    with pytest.raises(asyncio.TimeoutError) as info:
        await asyncio.wait_for(work(), 3)
    assert not isinstance(info.value, cs.CancelledFailure)
    assert loop.time() == 3
    assert scopes[0].cancelled_caught is False
    if HAS_COUNTS:
        assert cancelling(current_task()) == 0


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_wait_for_timeout_inside_scope() -> None:
    """wait_for timing out inside a scope raises its TimeoutError through the body unchanged."""
    record: list[str] = []
    async with cs.cancellable() as scope:
        try:
            await asyncio.wait_for(asyncio.sleep(100), 3)
        except asyncio.TimeoutError as err:
            record.append(f"timeout, a failure: {isinstance(err, cs.CancelledFailure)}")
        await asyncio.sleep(0)
    assert record == ["timeout, a failure: False"]
    assert scope.cancel_called is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_scope_cancel_while_in_wait_for() -> None:
    """A scope cancelled while its body waits in wait_for cancels the inner work and reports."""
    record: list[str] = []
    started = asyncio.Event()

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope:
                await asyncio.wait_for(
                    forever_noting_cancel(record, "inner cancelled", started), 3600
                )
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    await started.wait()
    scope.cancel("stop")
    await task
    assert record == ["inner cancelled", "failure stop"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_with_timeout_inside_wait_for() -> None:
    """with_timeout expiring inside a longer wait_for raises TimeoutFailure out of wait_for."""
    loop = asyncio.get_running_loop()

    async def work() -> None:
        async with cs.with_timeout(2):
            await asyncio.sleep(100)

    with pytest.raises(cs.TimeoutFailure):
        await asyncio.wait_for(work(), 10)
    assert loop.time() == 2


# --------------------------------------------------------------------------- asyncio.shield


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_asyncio_shield_inside_cancelled_scope() -> None:
    """asyncio.shield inside a cancelled scope: the await is cancelled, the inner task finishes."""
    record: list[str] = []
    release = asyncio.Event()

    async def inner() -> str:
        await release.wait()
        record.append("inner finished")
        return "inner result"

    inner_task = asyncio.create_task(inner())
    try:
        async with cs.cancellable() as scope:
            asyncio.get_running_loop().call_soon(scope.cancel, "stop")
            await asyncio.shield(inner_task)
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    release.set()
    record.append(await inner_task)
    assert record == ["failure stop", "inner finished", "inner result"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_asyncio_shield_protects_work_with_own_scope() -> None:
    """Work shielded by asyncio.shield keeps its own scopes and completes after a native cancel."""
    record: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def work() -> str:
        async with cs.cancellable() as own:
            entered.set()
            await release.wait()
            await asyncio.sleep(0)
        record.append(f"work done, own scope cancelled: {own.cancel_called}")
        return "work result"

    inner_task = asyncio.ensure_future(work())

    async def host() -> None:
        async with cs.cancellable():
            await asyncio.shield(inner_task)

    task = asyncio.create_task(host())
    await entered.wait()
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    release.set()
    record.append(await inner_task)
    assert record == ["work done, own scope cancelled: False", "work result"]


# --------------------------------------------------------------------------- asyncio.TaskGroup


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_taskgroup_inside_cancelled_scope() -> None:
    """A TaskGroup inside a cancelled scope cancels its tasks; the scope reports its failure."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope, TaskGroup() as tg:
            tg.create_task(forever_noting_cancel(record, "a cancelled"))
            tg.create_task(forever_noting_cancel(record, "b cancelled"))
            await asyncio.sleep(0)
            scope.cancel("stop")
            await forever()
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    assert sorted(record[:2]) == ["a cancelled", "b cancelled"]
    assert record[2:] == ["failure stop"]
    assert cancelling(current_task()) == 0
    await asyncio.sleep(0)


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_taskgroup_failure_inside_scope_passes_through() -> None:
    """A TaskGroup's ExceptionGroup passes through the enclosing scope unchanged."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope, TaskGroup() as tg:
            tg.create_task(_boom())
            await forever()
    except ExceptionGroup as group:
        record.append(repr(group.exceptions))
    assert record == ["(ZeroDivisionError(),)"]
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False
    assert cancelling(current_task()) == 0


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_taskgroup_abort_passes_through_scope() -> None:
    """A TaskGroup aborting its body cancels through a scope inside it, untouched."""
    record: list[str] = []
    scopes: list[cs.CancellationScope] = []
    try:
        async with TaskGroup() as tg:
            tg.create_task(_boom())
            async with cs.cancellable() as scope, cs.non_cancellable() as shield:
                scopes.extend([scope, shield])
                try:
                    await forever()
                except asyncio.CancelledError:
                    record.append("body cancelled by the TaskGroup")
                    raise
    except ExceptionGroup as group:
        record.append(repr(group.exceptions))
    assert record == ["body cancelled by the TaskGroup", "(ZeroDivisionError(),)"]
    assert [s.cancelled_caught for s in scopes] == [False, False]
    assert cancelling(current_task()) == 0
    await asyncio.sleep(0)


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_scope_cancel_inside_taskgroup_body() -> None:
    """A scope cancelled inside a TaskGroup body reports; the TaskGroup and its tasks go on."""
    record: list[str] = []

    reported = asyncio.Event()

    async def worker() -> str:
        await reported.wait()
        await asyncio.sleep(0)
        record.append("worker finished")
        return "ok"

    async with TaskGroup() as tg:
        task = tg.create_task(worker())
        try:
            async with cs.cancellable() as scope:
                scope.cancel("inner")
                await forever()
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")
            reported.set()
    assert record == ["failure inner", "worker finished"]
    assert task.result() == "ok"
    assert cancelling(current_task()) == 0


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gh116720_group_inside_taskgroup_keeps_abort() -> None:
    """gh-116720 analogue: a scope's group raised during a TaskGroup abort keeps the abort going."""
    record: list[str] = []
    try:
        async with TaskGroup() as tg:
            tg.create_task(_boom())
            try:
                async with cs.cancellable() as scope:
                    scope.spawn(_raise_on_cancel)
                    await forever()
            except ExceptionGroup as group:
                record.append(f"scope group {group.exceptions!r}")
            try:
                await asyncio.sleep(0)
                record.append("TaskGroup abort was swallowed")
            except asyncio.CancelledError:
                record.append("still cancelled")
                raise
    except ExceptionGroup as group:
        record.append(f"taskgroup group {group.exceptions!r}")
    await asyncio.sleep(0)
    record.append(f"after: cancelling={cancelling(current_task())}")
    assert record == [
        "scope group (ValueError('cleanup failed'),)",
        "still cancelled",
        "taskgroup group (ZeroDivisionError(),)",
        "after: cancelling=0",
    ]


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_group_through_taskgroup_leaves_no_stray_cancel() -> None:
    """A scope's group raised straight through an aborting TaskGroup leaves no stray cancel."""
    record: list[str] = []
    try:
        async with TaskGroup() as tg:
            tg.create_task(_boom())
            async with cs.cancellable() as scope:
                scope.spawn(_raise_on_cancel)
                await forever()
    except ExceptionGroup as group:
        record.append(f"{len(group.exceptions)} errors, cancelling={cancelling(current_task())}")
    record.append(await _after_the_scope())
    assert record == ["2 errors, cancelling=0", "after: not cancelled"]


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_group_through_asyncio_timeout_leaves_no_stray_cancel() -> None:
    """A scope's group raised through an expired asyncio.timeout leaves no stray cancel."""
    record: list[str] = []
    try:
        async with timeout(1), cs.cancellable() as scope:
            scope.spawn(_raise_on_cancel)
            await forever()
    except ExceptionGroup as group:
        record.append(f"group {group.exceptions!r}, cancelling={cancelling(current_task())}")
    record.append(await _after_the_scope())
    assert record == [
        "group (ValueError('cleanup failed'),), cancelling=0",
        "after: not cancelled",
    ]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gh116720_native_cancel_survives_scope_group() -> None:
    """gh-116720 analogue: a scope raising a group does not swallow a native cancel of its host."""
    record: list[str] = []
    entered = asyncio.Event()

    async def host() -> None:
        try:
            async with cs.cancellable() as scope:
                scope.spawn(_raise_on_cancel)
                entered.set()
                await forever()
        except ExceptionGroup as group:
            record.append(f"group {group.exceptions!r}")
        if HAS_COUNTS:
            record.append(f"cancelling={cancelling(current_task())}")
        try:
            await asyncio.sleep(0)
            record.append("native cancel swallowed")
        except asyncio.CancelledError:
            record.append("still cancelled")
            raise

    task = asyncio.create_task(host())
    await entered.wait()
    await asyncio.sleep(0)
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    expected = ["group (ValueError('cleanup failed'),)"]
    if HAS_COUNTS:
        expected.append("cancelling=1")
    expected.append("still cancelled")
    assert record == expected
    assert isinstance(results[0], asyncio.CancelledError)


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gh116720_outer_scope_cancel_survives_inner_group() -> None:
    """gh-116720 analogue with scopes: an inner scope's group does not end the outer's cancel."""
    record: list[str] = []
    try:
        async with cs.cancellable() as outer:
            try:
                async with cs.cancellable() as inner:
                    inner.spawn(_raise_on_cancel)
                    await asyncio.sleep(0)
                    outer.cancel("outer")
                    await forever()
            except ExceptionGroup as group:
                record.append(f"inner group {group.exceptions!r}")
            try:
                await asyncio.sleep(0)
                record.append("outer cancellation swallowed")
            except asyncio.CancelledError:
                record.append("still cancelled")
                raise
    except cs.CancelledFailure as failure:
        record.append(f"outer failure {failure.reason}")
    assert record == [
        "inner group (ValueError('cleanup failed'),)",
        "still cancelled",
        "outer failure outer",
    ]


# --------------------------------------------------------------------------- anyio


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_scope_inside_cancelled_scope_passes_it() -> None:
    """Our cancellation passes through an anyio CancelScope nested inside, which stays out of it."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            with anyio.CancelScope() as anyio_scope:
                scope.cancel("ours")
                await anyio.sleep(1)
            record.append("anyio scope swallowed it")
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    assert record == ["failure ours"]
    assert anyio_scope.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_anyio_move_on_inside_scope() -> None:
    """anyio.move_on_after inside a scope times out on its own; the scope is not involved."""
    record: list[str] = []
    async with cs.cancellable() as scope:
        with anyio.move_on_after(2) as anyio_scope:
            await anyio.sleep(100)
        record.append(f"anyio moved on: {anyio_scope.cancelled_caught}")
        await asyncio.sleep(0)
        record.append("scope goes on")
    assert record == ["anyio moved on: True", "scope goes on"]
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_cancel_passes_through_our_scopes() -> None:
    """anyio's cancellation passes through our scopes (shield included) to its own scope."""
    record: list[str] = []
    scopes: list[cs.CancellationScope] = []
    with anyio.CancelScope() as anyio_scope:
        async with cs.cancellable() as ours, cs.non_cancellable() as shield:
            scopes.extend([ours, shield])
            anyio_scope.cancel()
            try:
                await anyio.sleep(1)
            except asyncio.CancelledError:
                record.append("interrupted inside our shield")
                raise
        record.append("not reached")
    record.append(f"anyio caught: {anyio_scope.cancelled_caught}")
    await asyncio.sleep(0)
    record.append("goes on")
    assert record == ["interrupted inside our shield", "anyio caught: True", "goes on"]
    assert [s.cancelled_caught for s in scopes] == [False, False]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_anyio_move_on_around_our_scope() -> None:
    """anyio.move_on_after expiring around our scope: anyio absorbs it, our scope passes it."""
    loop = asyncio.get_running_loop()
    with anyio.move_on_after(2) as anyio_scope:
        async with cs.with_timeout(10) as scope:
            await asyncio.sleep(100)
    assert anyio_scope.cancelled_caught is True
    assert scope.cancelled_caught is False
    assert scope.cancel_called is False
    assert loop.time() == 2


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_our_timeout_inside_anyio_move_on() -> None:
    """with_timeout expiring inside a longer anyio.move_on_after raises TimeoutFailure out."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    with anyio.move_on_after(10) as anyio_scope:
        try:
            async with cs.with_timeout(2):
                await asyncio.sleep(100)
        except cs.TimeoutFailure:
            record.append(f"TimeoutFailure at {loop.time():g}")
        await asyncio.sleep(1)
        record.append("anyio body goes on")
    assert record == ["TimeoutFailure at 2", "anyio body goes on"]
    assert anyio_scope.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_shield_does_not_block_our_request() -> None:
    """An anyio shield inside a cancelled scope does not block the scope's request."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            with anyio.CancelScope(shield=True):
                scope.cancel("ours")
                try:
                    await anyio.sleep(1)
                except asyncio.CancelledError:
                    record.append("interrupted inside anyio shield")
                    raise
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    assert record == ["interrupted inside anyio shield", "failure ours"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_and_scope_cancelled_together_anyio_inside() -> None:
    """Both cancelled in one step, anyio scope inside ours: anyio absorbs nothing of ours."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            with anyio.CancelScope() as anyio_scope:
                scope.cancel("ours")
                anyio_scope.cancel()
                await anyio.sleep(1)
            record.append("anyio scope exited, our cancellation still on")
            await anyio.sleep(1)
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    await asyncio.sleep(0)
    assert record[-1] == "failure ours"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_and_scope_cancelled_together_ours_inside() -> None:
    """Both cancelled in one step, our scope inside anyio's: anyio's cancel is not absorbed."""
    record: list[str] = []
    with anyio.CancelScope() as anyio_scope:
        try:
            async with cs.cancellable() as scope:
                anyio_scope.cancel()
                scope.cancel("ours")
                await anyio.sleep(1)
        except cs.CancelledFailure:
            record.append("ours absorbed it")
        await anyio.sleep(1)
        record.append("anyio body went on")
    record.append(f"anyio caught: {anyio_scope.cancelled_caught}")
    await asyncio.sleep(0)
    assert record == ["anyio caught: True"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_task_group_inside_cancelled_scope() -> None:
    """An anyio task group inside a cancelled scope stops its tasks; the scope reports."""
    record: list[str] = []

    async def worker() -> None:
        try:
            await anyio.sleep(3600)
        except asyncio.CancelledError:
            record.append("worker cancelled")
            raise

    try:
        async with cs.cancellable() as scope, anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await asyncio.sleep(0)
            scope.cancel("ours")
            await anyio.sleep(3600)
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    await asyncio.sleep(0)
    assert record == ["worker cancelled", "failure ours"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_anyio_task_group_failure_through_scope() -> None:
    """An anyio task group's failure cancels its body through our scope, untouched."""
    record: list[str] = []
    scopes: list[cs.CancellationScope] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_boom)
            async with cs.cancellable() as scope:
                scopes.append(scope)
                try:
                    await anyio.sleep(3600)
                except asyncio.CancelledError:
                    record.append("body cancelled by anyio")
                    raise
    except ExceptionGroup as group:
        record.append(repr(group.exceptions))
    await asyncio.sleep(0)
    assert record == ["body cancelled by anyio", "(ZeroDivisionError(),)"]
    assert scopes[0].cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_our_scope_inside_anyio_task() -> None:
    """A scope inside an anyio task-group task works as in any task."""
    record: list[str] = []

    async def worker() -> None:
        try:
            async with cs.cancellable() as scope:
                scope.cancel("in worker")
                await anyio.sleep(1)
        except cs.CancelledFailure as failure:
            record.append(f"worker failure {failure.reason}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
    assert record == ["worker failure in worker"]


@pytest.fixture
def anyio_backend() -> str:
    """Run anyio-marked tests on asyncio only."""
    return "asyncio"


@pytest.mark.anyio
async def test_works_under_anyio_pytest_plugin() -> None:
    """Scopes work in a test run by anyio's pytest plugin."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            scope.cancel("plugin")
            await anyio.lowlevel.checkpoint()
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    assert record == ["failure plugin"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_cancel_during_spawn_does_not_interrupt_later_shield() -> None:
    """A request made by a child (eagerly, inside spawn) does not interrupt a later shield."""
    record: list[str] = []

    async def child(scope: cs.CancellationScope) -> None:
        scope.cancel("from child")

    try:
        async with cs.cancellable() as outer:
            outer.spawn(child, outer)
            async with cs.non_cancellable():
                try:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                    record.append("shield body ran")
                except asyncio.CancelledError:
                    record.append("shield body interrupted")
                    raise
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    assert record == ["shield body ran", "failure from child"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_cancel_during_spawn_does_not_leak_after_scope() -> None:
    """A request made by a child (eagerly, inside spawn) leaves no cancellation after the scope."""
    record: list[str] = []

    async def child(scope: cs.CancellationScope) -> None:
        scope.cancel("from child")

    async with cs.cancellable() as scope:
        scope.spawn(child, scope)
    record.append("scope exited")
    record.append(await _after_the_scope())
    assert record == ["scope exited", "after: not cancelled"]
    assert scope.cancel_called is True


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_child_failing_during_spawn_does_not_leak_after_group() -> None:
    """A child failing at once (eagerly, inside spawn) leaves no cancellation after the group."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            scope.spawn(_boom)
    except ExceptionGroup as group:
        record.append(repr(group.exceptions))
    record.append(await _after_the_scope())
    assert record == ["(ZeroDivisionError(),)", "after: not cancelled"]


# --------------------------------------------------------------------------- runners


async def _runner_workload() -> list[str]:
    record: list[str] = []
    try:
        async with cs.with_timeout(0):
            await asyncio.sleep(3600)
    except cs.TimeoutFailure:
        record.append("timeout")

    async def child() -> str:
        await asyncio.sleep(0)
        return "child result"

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        record.append(await handle)
    try:
        async with cs.cancellable() as scope:
            scope.spawn(forever)
            scope.cancel("stop")
            await forever()
    except cs.CancelledFailure as failure:
        record.append(f"cancelled {failure.reason}")
    return record


EXPECTED_WORKLOAD = ["timeout", "child result", "cancelled stop"]


def test_works_under_asyncio_run() -> None:
    """Scopes, deadlines and children work under asyncio.run."""
    assert asyncio.run(_runner_workload()) == EXPECTED_WORKLOAD


@requires_311
def test_works_under_asyncio_runner() -> None:
    """Scopes work under asyncio.Runner, across several run() calls on one loop."""
    with Runner() as runner:
        assert runner.run(_runner_workload()) == EXPECTED_WORKLOAD
        assert runner.run(_runner_workload()) == EXPECTED_WORKLOAD


def _python_task_loop() -> asyncio.AbstractEventLoop:
    """A loop whose tasks are asyncio's pure-Python Task, not the C one."""
    loop = asyncio.new_event_loop()
    py_task: Any = asyncio.tasks._PyTask  # type: ignore[attr-defined]
    loop.set_task_factory(lambda loop, coro, **kw: py_task(coro, loop=loop, **kw))
    return loop


@requires_311
def test_works_with_pure_python_tasks() -> None:
    """Entries count a pending foreign cancel on a task that is not the C asyncio.Task.

    (The entry reads cancelling() through the C method's descriptor, which
    refuses other task classes; it must fall back to the task's own method.)
    """

    async def main() -> list[str]:
        task = current_task()
        record = [f"C task: {type(task) is asyncio.Task}"]
        task.cancel()  # a foreign request, caught and not withdrawn: cancelling() == 1
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            record.append("caught the foreign cancel")
        for flavour in ("with", "async with"):
            scope = cs.CancellationScope(raise_on_cancel=False)
            if flavour == "with":
                with scope:
                    scope.cancel()
                    await forever()
            else:
                async with scope:
                    scope.cancel()
                    await forever()
            # Absorbed: the one foreign request counted at entry is not the scope's.
            record.append(f"{flavour}: caught {scope.cancelled_caught}, count {cancelling(task)}")
        started, release = asyncio.Event(), asyncio.Event()

        async def child() -> None:
            started.set()
            await release.wait()  # (released only if the cancel failed: no hang then)

        scope = cs.CancellationScope(raise_on_cancel=False)
        async with scope:
            handle = scope.spawn(child)
            await started.wait()
            try:
                scope.cancel()  # delivered to the waiting child by the walk of the children
            finally:
                release.set()
            await forever()
        record.append(f"child cancelled {handle.cancelled()}, count {cancelling(task)}")
        uncancel(task)
        return record

    with Runner(loop_factory=_python_task_loop) as runner:
        assert runner.run(main()) == [
            "C task: False",
            "caught the foreign cancel",
            "with: caught True, count 1",
            "async with: caught True, count 1",
            "child cancelled True, count 1",
        ]


@requires_312
def test_works_under_eager_task_factory_runner() -> None:
    """Scopes work under asyncio.Runner with the eager task factory."""
    with Runner(loop_factory=eager_loop) as runner:
        assert runner.run(_runner_workload()) == EXPECTED_WORKLOAD


@requires_312
def test_eager_child_runs_inside_spawn() -> None:
    """With the eager task factory a child may run to completion inside spawn; all else holds."""

    async def main() -> list[str]:
        record: list[str] = []

        async def quick() -> str:
            record.append(f"child sees its scope: {cs.CancellationScope.current() is scope}")
            return "quick"

        async def plain() -> None:
            record.append(f"plain task sees: {cs.CancellationScope.current()}")

        async with cs.cancellable() as scope:
            handle = scope.spawn(quick)
            record.append(f"done right after spawn: {handle.done()}")
            record.append(await handle)
            await asyncio.create_task(plain())
        return record

    with Runner(loop_factory=eager_loop) as runner:
        assert runner.run(main()) == [
            "child sees its scope: True",
            "done right after spawn: True",
            "quick",
            "plain task sees: None",
        ]


@requires_312
def test_eager_plain_task_not_reached() -> None:
    """An eager plain task started inside a cancelled scope is not reached by its request."""

    async def main() -> list[str]:
        record: list[str] = []

        release = asyncio.Event()

        async def plain() -> None:
            await asyncio.sleep(0)
            await release.wait()
            record.append("plain finished")

        try:
            async with cs.cancellable() as scope:
                scope.cancel()
                task = asyncio.create_task(plain())
                await asyncio.sleep(0)
        except cs.CancelledFailure:
            record.append("scope cancelled")
        release.set()
        await task
        return record

    with Runner(loop_factory=eager_loop) as runner:
        assert runner.run(main()) == ["scope cancelled", "plain finished"]
