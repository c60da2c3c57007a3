"""Scopes and tokens: token=, scope.token, scope.on_cancel and current_token()."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import ExceptionGroup, forever, forever_noting_cancel

GUARD = 30.0


def _callback_count(token: cs.CancelToken) -> int:
    callbacks = token._callbacks
    return 0 if callbacks is None else len(callbacks)


# --------------------------------------------------------------------------- token=


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_linked_token_cancels_the_scope_with_its_reason() -> None:
    """CancellationScope(token=t): t.cancel(reason) cancels the scope, reason carried over."""
    token = cs.CancelToken()
    record: list[str] = []
    scope = cs.CancellationScope(token=token, name="linked")

    async def body() -> None:
        async with scope:
            asyncio.get_running_loop().call_soon(token.cancel, "external")
            await forever_noting_cancel(record, "body cancelled")

    with pytest.raises(cs.CancelledFailure) as info:
        await body()
    assert record == ["body cancelled"]
    assert (info.value.reason, info.value.scope) == ("external", scope)
    assert scope.cancel_called
    assert scope.cancel_reason == "external"
    assert type(info.value) is cs.CancelledFailure


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_linked_token_fired_from_a_thread() -> None:
    """A linked token fired from another thread cancels the scope in its loop."""
    token = cs.CancelToken()
    entered = asyncio.Event()

    async def host() -> str:
        try:
            async with cs.CancellationScope(token=token):
                entered.set()
                await forever()
        except cs.CancelledFailure as failure:
            return f"failure {failure.reason}"
        return "not cancelled"

    task = asyncio.create_task(host())
    await entered.wait()
    thread = threading.Thread(target=token.cancel, args=("from thread",))
    thread.start()
    thread.join(GUARD)
    assert await asyncio.wait_for(task, GUARD) == "failure from thread"


@pytest.mark.asyncio
async def test_token_fired_before_construction_precancels() -> None:
    """A token already fired pre-cancels the scope: the first await is cancelled."""
    token = cs.CancelToken()
    token.cancel("too late")
    scope = cs.CancellationScope(token=token)
    assert scope.cancel_called
    assert scope.cancel_reason == "too late"
    with pytest.raises(cs.CancelledFailure, match="too late"):
        async with scope:
            await asyncio.sleep(0)
    assert scope.cancelled_caught


@pytest.mark.asyncio
async def test_token_fired_before_entry_precancels() -> None:
    """A token fired between construction and entry pre-cancels the scope."""
    token = cs.CancelToken()
    scope = cs.CancellationScope(token=token)
    token.cancel("before entry")
    async with cs.move_on_after(None) as outer:  # any enclosing scope: not reached
        with pytest.raises(cs.CancelledFailure, match="before entry"):
            async with scope:
                await asyncio.sleep(0)
    assert not outer.cancel_called


@pytest.mark.asyncio
async def test_timeout_token_reports_timeout_failure() -> None:
    """A scope linked to a timeout token that fired reports TimeoutFailure."""
    with pytest.raises(cs.TimeoutFailure):
        async with cs.CancellationScope(token=cs.CancelToken.after(0)):
            await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_link_is_removed_at_exit_and_scope_is_freed() -> None:
    """At exit the scope unregisters from its token; the token does not keep it alive."""
    token = cs.CancelToken()
    async with cs.CancellationScope(token=token) as scope:
        assert _callback_count(token) == 1
    assert _callback_count(token) == 0
    ref = weakref.ref(scope)
    del scope
    gc.collect()
    assert ref() is None
    token.cancel()  # nothing left to cancel


@pytest.mark.asyncio
async def test_scope_never_entered_is_freed_and_ignores_its_token() -> None:
    """A linked scope that is dropped unentered is freed; the token firing later is harmless."""
    token = cs.CancelToken()
    scope = cs.CancellationScope(token=token)
    ref = weakref.ref(scope)
    del scope
    gc.collect()
    assert ref() is None
    assert _callback_count(token) == 0
    token.cancel()


def test_token_must_be_a_cancel_token() -> None:
    """token= with anything but a CancelToken raises TypeError."""
    with pytest.raises(TypeError, match="token must be a CancelToken"):
        cs.CancellationScope(token="t")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_scope_token_chains_scopes() -> None:
    """CancellationScope(token=a.token) is cancelled when scope a is, with a's reason."""
    record: list[str] = []
    async with cs.move_on_after(None) as a:
        b_scope = cs.CancellationScope(token=a.token, name="b")
        try:
            async with b_scope:
                a.cancel("a stops")
                await forever_noting_cancel(record, "b body cancelled")
        except cs.CancelledFailure as failure:
            record.append(f"b failure {failure.reason}")
    assert record == ["b body cancelled"]
    assert b_scope.cancel_reason == "a stops"


# --------------------------------------------------------------------------- scope.token


@pytest.mark.asyncio
async def test_scope_token_fires_synchronously_on_cancel() -> None:
    """scope.cancel() in the loop fires scope.token at once, with the scope's failure."""
    async with cs.move_on_after(None, name="s") as scope:
        token = scope.token
        assert scope.token is token
        assert not token.cancelled
        scope.cancel("why")
        assert (token.cancelled, token.reason) == (True, "why")
        with pytest.raises(cs.CancelledFailure) as info:
            token.raise_if_cancelled()
        assert info.value.scope is scope
        assert str(info.value) == "scope 's' was cancelled: why"


@pytest.mark.asyncio
async def test_scope_token_read_after_the_request_is_fired() -> None:
    """scope.token first read after a request reached the scope is already fired."""
    scope = cs.move_on_after(None)
    async with scope:
        scope.cancel("early")
        assert scope.token.reason == "early"
    assert scope.token.cancelled


@pytest.mark.asyncio
async def test_scope_token_fires_for_outer_requests_and_stops_at_shields() -> None:
    """An outer request fires the tokens of nested scopes and of a shield, not below it."""
    async with (
        cs.move_on_after(None) as outer,
        cs.cancellable() as inner,
        cs.non_cancellable() as shield,
        cs.cancellable() as below,
    ):
        tokens = [inner.token, shield.token, below.token]
        outer.cancel("outer")
        assert [t.cancelled for t in tokens] == [True, True, False]
        with pytest.raises(cs.CancelledFailure) as info:
            inner.token.raise_if_cancelled()
        assert (info.value.scope, info.value.reason) == (outer, "outer")


# --------------------------------------------------------------------------- on_cancel


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_on_cancel_callbacks_run_in_order_with_remover() -> None:
    """on_cancel callbacks run once when a request reaches the scope; a removed one does not."""
    record: list[str] = []
    async with cs.move_on_after(None) as outer, cs.non_cancellable() as shield:
        shield.on_cancel(lambda: record.append("one"))
        remove = shield.on_cancel(lambda: record.append("removed"))
        shield.on_cancel(lambda: record.append("two"))
        remove()
        outer.cancel()
        outer.cancel()
        record.append("shield body goes on")
        await asyncio.sleep(0)
    assert record == ["one", "two", "shield body goes on"]


@pytest.mark.asyncio
async def test_on_cancel_failure_is_reported_and_delivery_goes_on() -> None:
    """A failing on_cancel callback goes to the loop's exception handler; delivery still happens."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    record: list[str] = []

    def boom() -> None:
        raise RuntimeError("callback broke")

    async with cs.move_on_after(None) as scope:
        scope.on_cancel(boom)
        scope.on_cancel(lambda: record.append("second callback"))
        loop.call_soon(scope.cancel)
        await forever_noting_cancel(record, "body cancelled")
    assert scope.cancelled_caught
    assert record == ["second callback", "body cancelled"]
    assert [type(c["exception"]) for c in contexts] == [RuntimeError]


@pytest.mark.asyncio
async def test_on_cancel_keyboard_interrupt_runs_the_rest_then_propagates() -> None:
    """A KeyboardInterrupt in a callback: the other callbacks and tokens run, then it goes on."""
    record: list[str] = []

    def interrupt() -> None:
        record.append("outer interrupts")
        raise KeyboardInterrupt

    async with cs.move_on_after(None) as outer:
        outer.on_cancel(interrupt)
        outer.on_cancel(lambda: record.append("outer second"))
        async with cs.move_on_after(None) as inner:
            inner.on_cancel(lambda: record.append("inner"))
            with pytest.raises(KeyboardInterrupt):
                outer.cancel("stop")
            assert record == ["outer interrupts", "outer second", "inner"]
            assert inner.cancel_requested.done()
            await forever_noting_cancel(record, "body cancelled")
    assert outer.cancelled_caught
    assert record[-1] == "body cancelled"


def test_token_keyboard_interrupt_runs_the_other_callbacks() -> None:
    """CancelToken.cancel(): a SystemExit in one callback does not skip the next ones."""
    token = cs.CancelToken()
    record: list[str] = []

    def leave() -> None:
        record.append("first")
        raise SystemExit(3)

    token.add_callback(leave)
    token.add_callback(lambda: record.append("second"))
    with pytest.raises(SystemExit):
        token.cancel("bye")
    assert record == ["first", "second"]
    assert token.cancelled
    assert token.reason == "bye"


@pytest.mark.asyncio
async def test_on_cancel_after_the_request_runs_at_once() -> None:
    """on_cancel on a scope already reached runs the callback immediately."""
    record: list[str] = []
    async with cs.move_on_after(None) as scope:
        scope.cancel()
        scope.on_cancel(lambda: record.append("now"))
        assert record == ["now"]


@pytest.mark.asyncio
async def test_on_cancel_after_a_quiet_exit_never_runs() -> None:
    """on_cancel on a scope that exited without a request registers nothing."""
    async with cs.cancellable() as scope:
        pass
    remove = scope.on_cancel(lambda: pytest.fail("must not run"))
    remove()
    scope.cancel()
    with pytest.raises(TypeError, match="needs a callable"):
        scope.on_cancel(3)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_on_cancel_for_a_failing_child() -> None:
    """A failing child's cancellation of its scope runs the scope's on_cancel callbacks."""
    record: list[str] = []

    async def fail() -> None:
        raise ValueError("child broke")

    async def body() -> None:
        async with cs.cancellable() as scope:
            scope.on_cancel(lambda: record.append(f"on_cancel: {scope.cancel_reason}"))
            scope.spawn(fail, name="worker")
            await forever()

    with pytest.raises(ExceptionGroup):
        await body()
    assert record == ["on_cancel: child task 'worker' failed with ValueError('child broke')"]


# --------------------------------------------------------------------------- current_token()


@pytest.mark.asyncio
async def test_current_token_in_tasks() -> None:
    """current_token(): None outside scopes, the innermost scope's token inside."""
    assert cs.current_token() is None
    async with cs.cancellable() as outer:
        assert cs.current_token() is outer.token
        async with cs.cancellable() as inner:
            assert cs.current_token() is inner.token
        assert cs.current_token() is outer.token
    assert cs.current_token() is None


@pytest.mark.asyncio
async def test_current_token_in_a_child_fires_on_handle_cancel() -> None:
    """In a child task current_token() fires when its handle is cancelled."""
    started = asyncio.Event()
    seen: list[str | None] = []

    async def child() -> None:
        token = cs.current_token()
        assert token is not None
        token.add_callback(lambda: seen.append(token.reason))
        await forever(started)

    async with cs.cancellable() as scope:
        handle = scope.spawn(child)
        await started.wait()
        handle.cancel("just this one")
    assert seen == ["just this one"]
    assert not scope.cancel_called


@pytest.mark.asyncio
async def test_child_token_failure_names_the_owning_scope() -> None:
    """A child's token fired by handle.cancel() raises a failure whose .scope is the owner."""
    tokens: list[cs.CancelToken] = []
    started = asyncio.Event()

    async def child() -> None:
        token = cs.current_token()
        assert token is not None
        tokens.append(token)
        await forever(started)

    async with cs.cancellable(name="owner") as scope:
        handle = scope.spawn(child, name="worker")
        await started.wait()
        handle.cancel("only you")
    with pytest.raises(cs.CancelledFailure) as info:
        tokens[0].raise_if_cancelled()
    assert (info.value.scope, info.value.reason) == (scope, "only you")
    assert "child task 'worker'" in str(info.value)


def test_token_fired_outside_any_loop_precancels_a_scope_made_in_a_closed_loop() -> None:
    """A scope is bound to a loop only at entry: one made while a loop ran, whose token
    fires after that loop closed, is pre-cancelled in the loop that enters it."""
    token = cs.CancelToken()

    async def make() -> cs.CancellationScope:
        return cs.CancellationScope(token=token, name="made")

    scope = asyncio.run(make())
    token.cancel("fired with no loop")
    assert scope.cancel_called

    async def enter() -> None:
        async with scope:
            await asyncio.sleep(0)

    with pytest.raises(cs.CancelledFailure, match="fired with no loop"):
        asyncio.run(enter())
    assert scope.cancelled_caught


@pytest.mark.asyncio
async def test_token_fired_from_a_thread_before_entry_precancels_at_once() -> None:
    """A linked token fired from another thread before entry records the request in that
    thread, as cancel() before entry does: no hand-over to the loop the scope was made in
    (a scope is bound to a loop only when it is entered)."""
    token = cs.CancelToken()
    scope = cs.CancellationScope(token=token, name="early")
    thread = threading.Thread(target=lambda: token.cancel("from a thread"))
    thread.start()
    thread.join(GUARD)  # the loop does not run meanwhile
    assert not thread.is_alive()
    assert scope.cancel_called
    with pytest.raises(cs.CancelledFailure, match="from a thread"):
        async with scope:
            await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_on_cancel_system_exit_at_entry_leaves_the_tree_as_it_was() -> None:
    """A SystemExit from on_cancel when a scope is entered below a cancelled parent: the
    entry raises it, the scope counts as exited, and the parent is current again."""

    def leave() -> None:
        raise SystemExit(3)

    outer = cs.cancellable(name="outer")
    inner = cs.cancellable(name="inner")
    inner.on_cancel(leave)
    seen: list[object] = []

    async def run() -> None:
        async with outer:
            outer.cancel("stop")
            try:
                async with inner:
                    pytest.fail("the body must not run")
            finally:
                seen.append(cs.CancellationScope.current())

    with pytest.raises(SystemExit):
        await run()
    assert seen == [outer]
    assert not inner.active
    assert not outer.active
    assert cs.CancellationScope.current() is None


@pytest.mark.asyncio
async def test_on_cancel_system_exit_while_children_are_stopped_waits_for_them() -> None:
    """A SystemExit from on_cancel when a failing body stops the children: the exit still
    waits for every child (SPEC 5), then raises it."""
    loop = asyncio.get_running_loop()
    release = asyncio.Event()
    child_done = asyncio.Event()

    async def child() -> None:
        async with cs.non_cancellable():
            await release.wait()
        child_done.set()

    def leave() -> None:
        loop.call_soon(release.set)  # the child can finish once the exit waits for it
        raise SystemExit(3)

    scope = cs.cancellable(name="S")

    async def run() -> None:
        async with scope:
            scope.on_cancel(leave)
            scope.spawn(child)
            await asyncio.sleep(0)
            raise ValueError("body fails")

    with pytest.raises(SystemExit) as info:
        await run()
    assert child_done.is_set()
    assert not scope.active
    assert cs.CancellationScope.current() is None
    assert isinstance(info.value.__context__, ValueError)


@pytest.mark.asyncio
async def test_current_token_in_a_loop_callback_is_none() -> None:
    """A loop callback scheduled from inside a scope runs in a copy of the task's context
    but in no scope: current_token() is None there, as CancellationScope.current() is."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[tuple[object, object]] = loop.create_future()
    async with cs.cancellable():
        loop.call_soon(
            lambda: seen.set_result((cs.CancellationScope.current(), cs.current_token()))
        )
        assert await seen == (None, None)


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_current_token_in_asyncio_to_thread() -> None:
    """In a thread started by asyncio.to_thread, current_token() is the caller's scope token."""

    def work() -> cs.CancelToken | None:
        return cs.current_token()

    async with cs.cancellable() as scope:
        assert await asyncio.to_thread(work) is scope.token
        async with cs.cancellable() as inner:
            assert await asyncio.to_thread(work) is inner.token
    assert await asyncio.to_thread(work) is None


def test_current_token_in_a_plain_thread_is_none() -> None:
    """Outside any loop and any scope, current_token() is None."""
    assert cs.current_token() is None


@pytest.mark.asyncio
async def test_token_created_in_a_thread_during_a_request_still_fires() -> None:
    """scope.token made in another thread while a request is mid-walk fires (the loop rechecks).

    The interleaving is forced: the thread creates the token after `_reach` looked for one and
    before the request marked the scope, which a cancellable scope records only afterwards.
    """
    async with cs.cancellable(name="raced") as scope:
        made: list[cs.CancelToken] = []
        thread = threading.Thread(target=lambda: made.append(scope.token))
        thread.start()
        thread.join(GUARD)  # blocks the loop: the thread's recheck waits in its queue
        assert not made[0].cancelled
        (token,) = made
        # What the loop thread finishes after the thread's read: the scope becomes cancelled
        # without _reach having seen the token.
        req = cs._scope._Request(scope, "raced request")
        cs._scope._extra(scope).own_req = req
        scope._cancelled_by = req
        await asyncio.sleep(0)  # the recheck handed to the loop runs
        assert token.cancelled
        assert token.reason == "raced request"
        cs._scope._extra(scope).own_req = scope._cancelled_by = None  # leave it never cancelled
