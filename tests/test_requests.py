"""SPEC 3: cancel requests: idempotence, pre-cancel, reach, and the cancel_requested future."""

from __future__ import annotations

import asyncio
import math
import sys

import pytest

import cancelscope as cs

from ._helpers import forever, forever_noting_cancel

# --------------------------------------------------------------------------- cancel()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_first_reason_wins() -> None:
    """cancel() is idempotent: the first call's reason is kept and reported."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            scope.cancel("first")
            scope.cancel("second")
            record.append(f"reason={scope.cancel_reason}")
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(f"failure reason={failure.reason}")
    scope.cancel("third")
    assert record == ["reason=first", "failure reason=first"]
    assert scope.cancel_reason == "first"


@pytest.mark.asyncio
async def test_cancel_first_reason_wins_even_none() -> None:
    """A first cancel() without a reason wins over a later one with a reason."""
    record: list[str | None] = []
    try:
        async with cs.cancellable() as scope:
            scope.cancel()
            scope.cancel("later")
            record.append(scope.cancel_reason)
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(failure.reason)
    assert record == [None, None]
    assert scope.cancel_called is True


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_called_and_reason_before_and_after() -> None:
    """cancel_called/cancel_reason read False/None until cancel(), then True and the reason."""
    seen: list[tuple[bool, str | None]] = []
    try:
        async with cs.cancellable() as scope:
            seen.append((scope.cancel_called, scope.cancel_reason))
            scope.cancel("why")
            seen.append((scope.cancel_called, scope.cancel_reason))
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        seen.append((scope.cancel_called, scope.cancel_reason))
    assert seen == [(False, None), (True, "why"), (True, "why")]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_pre_cancel_before_entry() -> None:
    """cancel() before entry pre-cancels: the body runs up to its first suspension point."""
    record: list[str] = []
    scope = cs.cancellable(name="pre")
    scope.cancel("early")
    assert scope.cancel_called is True
    assert scope.cancel_reason == "early"
    try:
        async with scope:
            record.append("body start")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason} {failure.scope is scope}")
    assert record == ["body start", "failure early True"]
    assert scope.cancelled_caught is True


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_after_exit_does_nothing() -> None:
    """cancel() after the scope exited changes nothing and cancels nothing."""
    async with cs.cancellable() as scope:
        await asyncio.sleep(0)
    requested = scope.cancel_requested
    scope.cancel("too late")
    assert scope.cancel_called is False
    assert scope.cancel_reason is None
    assert scope.cancelled_caught is False
    for _ in range(3):
        await asyncio.sleep(0)
    assert not requested.done()
    assert not scope.cancel_requested.done()


@pytest.mark.asyncio
async def test_cancel_after_cancelled_exit_keeps_first_reason() -> None:
    """cancel() after a cancelled scope exited keeps the reason it exited with."""
    scope = cs.cancellable()

    async def body() -> None:
        scope.cancel("original")
        await asyncio.sleep(0)

    with pytest.raises(cs.CancelledFailure):
        await scope.run(body)
    scope.cancel("afterwards")
    assert scope.cancel_reason == "original"
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_outer_request_does_not_set_inner_cancel_called() -> None:
    """A request arriving from an outer scope does not set the inner scope's cancel_called."""
    seen: list[tuple[bool, str | None]] = []
    try:
        async with cs.cancellable() as outer, cs.cancellable() as inner:
            outer.cancel("outer")
            try:
                await asyncio.sleep(0)
            finally:
                seen.append((inner.cancel_called, inner.cancel_reason))
    except cs.CancelledFailure:
        seen.append((outer.cancel_called, outer.cancel_reason))
    assert seen == [(False, None), (True, "outer")]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_deadline_is_a_request_with_reason() -> None:
    """A passing deadline is a request with reason 'deadline exceeded'; cancel_called turns True."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    shielded = asyncio.Event()
    observed = asyncio.Event()

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope:
                async with cs.non_cancellable():
                    shielded.set()
                    await observed.wait()
                record.append("left shield")
                await asyncio.sleep(0)
                record.append("not reached")
        except cs.TimeoutFailure as failure:
            record.append(f"timeout {failure.reason} at {loop.time():g}")

    scope = cs.with_timeout(5)
    task = asyncio.create_task(host(scope))
    await shielded.wait()
    await asyncio.sleep(4)
    record.append(f"t=4 {scope.cancel_called} {scope.cancel_reason}")
    await asyncio.sleep(2)
    record.append(f"t=6 {scope.cancel_called} {scope.cancel_reason}")
    observed.set()
    await task
    assert record == [
        "t=4 False None",
        "t=6 True deadline exceeded",
        "left shield",
        "timeout deadline exceeded at 6",
    ]


# --------------------------------------------------------------------------- reach


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_request_reaches_nested_scopes() -> None:
    """A request on S reaches scopes nested in S; S, the outermost, reports it."""
    record: list[str] = []
    try:
        async with (
            cs.cancellable(name="outer") as outer,
            cs.cancellable(name="middle") as middle,
            cs.cancellable(name="inner") as inner,
        ):
            outer.cancel("stop")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                record.append("inner body cancelled")
                raise
    except cs.CancelledFailure as failure:
        record.append(f"failure from {failure.scope is outer}")
    assert record == ["inner body cancelled", "failure from True"]
    for scope in (middle, inner):
        request = scope.cancel_requested.result()
        assert request.scope is outer
        assert request.reason == "stop"
        assert scope.cancelled_caught is False
        assert scope.cancel_called is False
    assert outer.cancelled_caught is True


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_request_reaches_children_and_their_scopes() -> None:
    """A request on S reaches S's children, scopes inside them, and their own children."""
    record: list[str] = []
    started = asyncio.Event()
    child_scopes: list[cs.CancellationScope] = []

    async def child() -> None:
        async with cs.cancellable(name="in child") as own:
            child_scopes.append(own)
            own.spawn(forever_noting_cancel, record, "grandchild cancelled")
            started.set()
            try:
                await forever()
            except asyncio.CancelledError:
                record.append("child cancelled")
                raise

    try:
        async with cs.cancellable(name="top") as top:
            handle = top.spawn(child)
            await started.wait()
            top.cancel("all of it")
            await forever()
    except cs.CancelledFailure as failure:
        record.append(f"top failure {failure.reason}")
    assert sorted(record[:2]) == ["child cancelled", "grandchild cancelled"]
    assert record[2:] == ["top failure all of it"]
    assert handle.done()
    [own] = child_scopes
    assert own.cancel_requested.result().scope is top


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_request_from_outside_stops_at_non_cancellable() -> None:
    """An outside request reaches a shield's future, not its body, nested scopes or children."""
    record: list[str] = []
    shielded = asyncio.Event()
    release = asyncio.Event()

    async def shielded_child() -> str:
        await release.wait()
        record.append("shielded child finished")
        return "child result"

    async def host() -> None:
        try:
            async with cs.cancellable(name="outer") as outer:
                async with cs.non_cancellable(name="shield") as shield:
                    async with cs.cancellable(name="below") as below:
                        handle = shield.spawn(shielded_child)
                        scopes.extend([outer, shield, below])
                        shielded.set()
                        await release.wait()
                        await asyncio.sleep(0)
                        record.append("shielded body finished")
                    record.append(f"child -> {await handle}")
                record.append("left shield")
                await asyncio.sleep(0)
                record.append("not reached")
        except cs.CancelledFailure as failure:
            record.append(f"failure from {failure.scope is scopes[0]}")

    scopes: list[cs.CancellationScope] = []
    task = asyncio.create_task(host())
    await shielded.wait()
    outer, shield, below = scopes
    outer.cancel("stop")
    await asyncio.sleep(0)
    assert shield.cancel_requested.done()
    assert shield.cancel_requested.result().scope is outer
    assert not below.cancel_requested.done()
    assert shield.cancel_called is False
    release.set()
    await task
    assert record == [
        "shielded child finished",
        "shielded body finished",
        "child -> child result",
        "left shield",
        "failure from True",
    ]
    assert not below.cancel_requested.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_shield_cancel_reaches_its_own_tree() -> None:
    """cancel() on a non-cancellable scope reaches its nested scopes and children."""
    record: list[str] = []
    started = asyncio.Event()
    try:
        async with cs.non_cancellable(name="shield") as shield:
            handle = shield.spawn(forever_noting_cancel, record, "child cancelled", started)
            async with cs.cancellable(name="inner") as inner:
                await started.wait()
                shield.cancel("own")
                try:
                    await forever()
                except asyncio.CancelledError:
                    record.append("inner body cancelled")
                    raise
    except cs.CancelledFailure as failure:
        record.append(f"shield failure {failure.reason} {failure.scope is shield}")
    assert sorted(record[:2]) == ["child cancelled", "inner body cancelled"]
    assert record[2:] == ["shield failure own True"]
    assert inner.cancel_requested.result().scope is shield
    assert handle.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_request_on_inner_does_not_reach_outer() -> None:
    """A request on an inner scope does not reach the scope around it."""
    record: list[str] = []
    async with cs.cancellable(name="outer") as outer:
        try:
            async with cs.cancellable(name="inner") as inner:
                inner.cancel("inner only")
                await asyncio.sleep(0)
        except cs.CancelledFailure as failure:
            record.append(f"inner failure {failure.scope is inner}")
        await asyncio.sleep(0)
        record.append("outer goes on")
    assert record == ["inner failure True", "outer goes on"]
    assert not outer.cancel_requested.done()
    assert outer.cancel_called is False
    assert outer.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_request_does_not_reach_plain_tasks() -> None:
    """A task made with plain asyncio.create_task inside S is not reached by S's request."""
    record: list[str] = []
    release = asyncio.Event()

    async def plain() -> str:
        await release.wait()
        await asyncio.sleep(0)
        return "plain finished"

    tasks: list[asyncio.Task[str]] = []
    try:
        async with cs.cancellable() as scope:
            tasks.append(asyncio.create_task(plain()))
            await asyncio.sleep(0)
            scope.cancel()
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append("scope cancelled")
    release.set()
    record.append(await tasks[0])
    assert record == ["scope cancelled", "plain finished"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_request_does_not_reach_sibling_task_scopes() -> None:
    """A request on one task's scope does not reach another task's unrelated scope."""
    record: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()
    other_scope: list[cs.CancellationScope] = []

    async def other() -> None:
        async with cs.cancellable() as scope:
            other_scope.append(scope)
            entered.set()
            await release.wait()
            await asyncio.sleep(0)
            record.append("other finished")

    task = asyncio.create_task(other())
    await entered.wait()
    try:
        async with cs.cancellable() as mine:
            mine.cancel()
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append("mine cancelled")
    release.set()
    await task
    assert record == ["mine cancelled", "other finished"]
    assert not other_scope[0].cancel_requested.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancellable_inside_shield_not_effectively_cancelled() -> None:
    """A cancellable scope inside a shield inside a cancelled scope is not effectively cancelled."""
    record: list[str] = []
    try:
        async with cs.cancellable() as outer:
            outer.cancel()
            async with cs.non_cancellable(), cs.cancellable() as inner:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                record.append("inner ran")
            record.append("left shield")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append("outer cancelled")
    assert record == ["inner ran", "left shield", "outer cancelled"]
    assert not inner.cancel_requested.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_scope_entered_below_cancelled_parent_is_cancelled() -> None:
    """A cancellable scope entered inside an already-cancelled scope is cancelled at once."""
    record: list[str] = []
    try:
        async with cs.cancellable(name="outer") as outer:
            outer.cancel("before")
            async with cs.cancellable(name="late") as late:
                record.append(f"requested at entry: {late.cancel_requested.done()}")
                await asyncio.sleep(0)
                record.append("not reached")
    except cs.CancelledFailure as failure:
        record.append(f"failure from outer: {failure.scope is outer}")
    assert record == ["requested at entry: True", "failure from outer: True"]
    assert late.cancel_requested.result().scope is outer
    assert late.cancel_requested.result().reason == "before"


# --------------------------------------------------------------------------- cancel_requested


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_requested_resolves_with_failure() -> None:
    """cancel_requested resolves with a CancelledFailure naming the origin scope and reason."""
    record: list[str] = []
    try:
        async with cs.cancellable(name="s") as scope:
            future = scope.cancel_requested
            assert isinstance(future, asyncio.Future)
            record.append(f"before: {future.done()}")
            scope.cancel("because")
            record.append(f"after cancel: {future.done()}")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append("exited")
    assert record == ["before: False", "after cancel: True", "exited"]
    assert not future.cancelled()
    assert future.exception() is None
    result = future.result()
    assert isinstance(result, cs.CancelledFailure)
    assert result.reason == "because"
    assert result.scope is scope


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_requested_resolves_for_shield_from_outside() -> None:
    """A shield's cancel_requested resolves on an outside request; its body winds down itself."""
    record: list[str] = []

    try:
        async with cs.cancellable(name="outer") as outer:
            async with cs.non_cancellable(name="shield") as shield:
                asyncio.get_running_loop().call_soon(outer.cancel, "outside")
                failure = await shield.cancel_requested
                record.append(f"noticed {failure.reason} from outer: {failure.scope is outer}")
                await asyncio.sleep(0)
                record.append("shield body wound down")
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        record.append(f"outer failure from outer: {failure.scope is outer}")
    assert record == [
        "noticed outside from outer: True",
        "shield body wound down",
        "outer failure from outer: True",
    ]
    assert shield.cancel_called is False
    assert shield.cancelled_caught is False


@pytest.mark.asyncio
async def test_cancel_requested_is_lazy_and_readable_before_entry() -> None:
    """cancel_requested can be read before entry; it is the same future and resolves later."""
    scope = cs.cancellable()
    future = scope.cancel_requested
    assert scope.cancel_requested is future
    assert not future.done()
    seen: list[bool] = []
    try:
        async with scope:
            seen.append(scope.cancel_requested is future)
            seen.append(future.done())
            scope.cancel("later")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        seen.append(future.done())
    assert seen == [True, False, True]
    assert future.result().reason == "later"
    assert future.result().scope is scope


@pytest.mark.asyncio
async def test_cancel_requested_after_pre_cancel_resolves_by_entry() -> None:
    """A pre-cancelled scope's cancel_requested is resolved once the scope is entered."""
    scope = cs.cancellable()
    future = scope.cancel_requested
    scope.cancel("pre")
    seen: list[bool] = []
    try:
        async with scope:
            seen.append(future.done())
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        seen.append(future.done())
    assert seen == [True, True]
    assert future.result().reason == "pre"


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("cancellable", [True, False])
async def test_cancel_requested_resolves_at_entry_below_cancelled_parent(
    cancellable: bool,
) -> None:
    """A scope entered below an already-cancelled parent has cancel_requested resolved at entry."""
    record: list[str] = []
    try:
        async with cs.cancellable(name="parent") as parent:
            parent.cancel("earlier")
            async with cs.CancellationScope(cancellable=cancellable) as child:
                record.append(f"resolved at entry: {child.cancel_requested.done()}")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append("parent reported")
    assert record == ["resolved at entry: True", "parent reported"]
    result = child.cancel_requested.result()
    assert result.scope is parent
    assert result.reason == "earlier"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_requested_pending_forever_without_request() -> None:
    """cancel_requested stays pending if no request reaches the scope, during and after it."""
    async with cs.cancellable() as scope:
        future = scope.cancel_requested
        for _ in range(3):
            await asyncio.sleep(0)
        assert not future.done()
    for _ in range(3):
        await asyncio.sleep(0)
    assert not future.done()
    assert not scope.cancel_requested.done()


@pytest.mark.asyncio
async def test_cancel_requested_survives_a_cancelled_awaiter() -> None:
    """cancel_requested stays pending (never cancelled) when one of its awaiters is cancelled."""
    record: list[str] = []
    scope = cs.cancellable(name="watched")
    future = scope.cancel_requested

    async def watcher(name: str) -> None:
        try:
            failure = await future
        except asyncio.CancelledError:
            record.append(f"{name} cancelled")
            raise
        record.append(f"{name} saw {failure.reason}")

    first = asyncio.create_task(watcher("first"))
    second = asyncio.create_task(watcher("second"))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    record.append(f"future cancelled: {future.cancelled()}")
    try:
        async with scope:
            scope.cancel("now")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        pass
    await asyncio.gather(first, second, return_exceptions=True)
    assert record == ["first cancelled", "future cancelled: False", "second saw now"]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_cancel_requested_for_deadline() -> None:
    """A deadline resolves cancel_requested with reason 'deadline exceeded' at the deadline."""
    loop = asyncio.get_running_loop()
    record: list[str] = []
    try:
        async with cs.with_timeout(3) as scope:
            failure = await scope.cancel_requested
            record.append(
                f"{failure.reason} at {loop.time():g} from self: {failure.scope is scope}"
            )
            await asyncio.sleep(0)
    except cs.TimeoutFailure:
        record.append("timed out")
    assert record == ["deadline exceeded at 3 from self: True", "timed out"]
    assert isinstance(scope.cancel_requested.result(), cs.CancelledFailure)
    assert scope.deadline == 3
    assert scope.deadline < math.inf


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_requested_first_request_wins() -> None:
    """cancel_requested keeps the first request that reached the scope."""
    reported: list[cs.CancellationScope | None] = []
    try:
        async with cs.cancellable(name="outer") as outer, cs.cancellable(name="inner") as inner:
            outer.cancel("outer first")
            inner.cancel("inner second")
            await asyncio.sleep(0)
    except cs.CancelledFailure as failure:
        reported.append(failure.scope)
    assert reported == [outer]
    result = inner.cancel_requested.result()
    assert result.scope is outer
    assert result.reason == "outer first"
    assert inner.cancel_reason == "inner second"


@pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="before 3.12 wait_for cancels the future it waits on (documented in semantics.md)",
)
@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_cancel_requested_survives_wait_for_timeout() -> None:
    """Waiting on cancel_requested with asyncio.wait_for that times out leaves it pending."""
    scope = cs.cancellable()
    future = scope.cancel_requested
    record: list[str] = []
    try:
        await asyncio.wait_for(future, 1)
    except asyncio.TimeoutError:
        record.append("timed out")
    record.append(f"cancelled: {future.cancelled()} same: {scope.cancel_requested is future}")
    try:
        async with scope:
            scope.cancel("later")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append(f"resolved: {future.done() and not future.cancelled()}")
    assert record == ["timed out", "cancelled: False same: True", "resolved: True"]
