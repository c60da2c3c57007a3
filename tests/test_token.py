"""CancelToken: state, callbacks, waiting from tasks and threads, any(), after(), pickling."""

from __future__ import annotations

import asyncio
import copy
import gc
import math
import pickle
import sys
import threading
import time
import weakref
from typing import Any

import pytest

import cancelscope as cs
from cancelscope import _token

# A safety net against a broken implementation hanging the suite; never reached when it works.
GUARD = 30.0


def _in_thread(fn: Any) -> None:
    """Run ``fn()`` in a fresh thread and wait for it (re-raising what it raised)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(GUARD)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


def _callback_count(token: cs.CancelToken) -> int:
    callbacks = token._callbacks
    return 0 if callbacks is None else len(callbacks)


def _cancel_with_a_failing_callback(token: cs.CancelToken) -> list[str]:
    """Cancel ``token``, whose first callback raises ValueError("boom"); return what the
    callback registered after it recorded."""
    record: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    token.add_callback(boom)
    token.add_callback(lambda: record.append("after"))
    token.cancel()
    return record


# --------------------------------------------------------------------------- state


def test_cancel_sets_state_and_first_reason_wins() -> None:
    """cancel() is idempotent: cancelled turns True, the first reason stays."""
    token = cs.CancelToken()
    assert (token.cancelled, token.reason) == (False, None)
    token.cancel("first")
    token.cancel("second")
    assert (token.cancelled, token.reason) == (True, "first")
    assert "cancelled reason='first'" in repr(token)


def test_first_reason_wins_even_none() -> None:
    """A first cancel() without reason keeps reason None."""
    token = cs.CancelToken()
    token.cancel()
    token.cancel("later")
    assert token.reason is None


def test_raise_if_cancelled() -> None:
    """raise_if_cancelled() does nothing before cancel(), raises CancelledFailure after."""
    token = cs.CancelToken()
    token.raise_if_cancelled()
    token.cancel("stop")
    with pytest.raises(cs.CancelledFailure, match="cancel token was cancelled: stop") as info:
        token.raise_if_cancelled()
    assert type(info.value) is cs.CancelledFailure
    assert (info.value.reason, info.value.scope) == ("stop", None)


def test_token_cannot_be_copied_or_pickled() -> None:
    """A token is one signal: copy, deepcopy and pickle refuse it."""
    token = cs.CancelToken()
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.copy(token)
    with pytest.raises(TypeError, match="cannot be copied"):
        copy.deepcopy(token)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(token)


# --------------------------------------------------------------------------- callbacks


def test_callbacks_run_in_order_and_remover_works() -> None:
    """Callbacks run once, in registration order; a removed one does not run."""
    token = cs.CancelToken()
    record: list[str] = []
    token.add_callback(lambda: record.append("a"))
    remove_b = token.add_callback(lambda: record.append("b"))
    token.add_callback(lambda: record.append("c"))
    remove_b()
    remove_b()  # twice: nothing
    token.cancel()
    token.cancel()
    assert record == ["a", "c"]
    assert token._callbacks is None


def test_callback_added_after_cancel_runs_at_once() -> None:
    """add_callback() on a fired token runs the callback immediately; its remover is inert."""
    token = cs.CancelToken()
    token.cancel()
    record: list[str] = []
    remove = token.add_callback(lambda: record.append("now"))
    assert record == ["now"]
    remove()


def test_add_callback_refuses_non_callable() -> None:
    """add_callback() with a non-callable raises TypeError."""
    with pytest.raises(TypeError, match="needs a callable"):
        cs.CancelToken().add_callback(42)  # type: ignore[arg-type]


def test_callbacks_run_in_the_cancelling_thread() -> None:
    """cancel() from another thread runs the callbacks in that thread."""
    token = cs.CancelToken()
    seen: list[int] = []
    token.add_callback(lambda: seen.append(threading.get_ident()))
    ident: list[int] = []

    def cancel() -> None:
        ident.append(threading.get_ident())
        token.cancel("thread")

    _in_thread(cancel)
    assert seen == ident
    assert seen != [threading.get_ident()]


def test_failing_callback_outside_a_loop_goes_to_unraisablehook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside a loop, a failing callback is reported to sys.unraisablehook; the rest run."""
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    token = cs.CancelToken()
    assert _cancel_with_a_failing_callback(token) == ["after"]
    assert [type(r.exc_value) for r in reported] == [ValueError]
    assert "exception in a callback" in reported[0].err_msg
    assert reported[0].object is token


@pytest.mark.asyncio
async def test_failing_callback_in_a_loop_goes_to_exception_handler() -> None:
    """In a loop's thread, a failing callback goes to the loop's exception handler."""
    loop = asyncio.get_running_loop()
    contexts: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: contexts.append(context))
    token = cs.CancelToken()
    assert _cancel_with_a_failing_callback(token) == ["after"]
    assert [type(c["exception"]) for c in contexts] == [ValueError]
    assert contexts[0]["token"] is token


# --------------------------------------------------------------------------- waiting


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_wait_is_woken_from_another_thread() -> None:
    """await token.wait() returns once another thread cancels the token."""
    token = cs.CancelToken()
    waiting = asyncio.Event()

    async def waiter() -> str:
        waiting.set()
        await token.wait()
        return f"woken {token.reason}"

    task = asyncio.create_task(waiter())
    await waiting.wait()
    await asyncio.sleep(0)  # the waiter is suspended in wait()
    assert _callback_count(token) == 1
    _in_thread(lambda: token.cancel("thread"))
    assert await asyncio.wait_for(task, GUARD) == "woken thread"


@pytest.mark.asyncio
async def test_wait_returns_at_once_when_cancelled() -> None:
    """await token.wait() on a fired token returns without registering anything."""
    token = cs.CancelToken()
    token.cancel()
    await token.wait()
    assert token._callbacks is None


@pytest.mark.asyncio
async def test_cancelled_waiter_leaves_no_callback() -> None:
    """Cancelling a task in token.wait() unregisters its wake-up callback."""
    token = cs.CancelToken()
    task = asyncio.create_task(token.wait())
    await asyncio.sleep(0)
    assert _callback_count(token) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _callback_count(token) == 0
    assert not token.cancelled


def test_wait_from_loops_in_other_threads() -> None:
    """Tasks on two loops in two threads both wake when the token fires."""
    token = cs.CancelToken()
    ready = threading.Barrier(3)
    results: list[str] = []

    def run_loop(name: str) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            waiter = asyncio.ensure_future(token.wait())
            await asyncio.sleep(0)
            await loop.run_in_executor(None, ready.wait, GUARD)
            await asyncio.wait_for(waiter, GUARD)
            results.append(name)

        asyncio.run(main())

    threads = [threading.Thread(target=run_loop, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    ready.wait(GUARD)
    token.cancel()
    for thread in threads:
        thread.join(GUARD)
    assert sorted(results) == ["one", "two"]


def test_wait_blocking() -> None:
    """wait_blocking() times out with False, and returns True once another thread cancels."""
    token = cs.CancelToken()
    assert token.wait_blocking(0) is False
    started = threading.Event()
    outcome: list[bool] = []

    def blocked() -> None:
        started.set()
        outcome.append(token.wait_blocking(GUARD))

    thread = threading.Thread(target=blocked)
    thread.start()
    assert started.wait(GUARD)
    token.cancel()
    thread.join(GUARD)
    assert outcome == [True]
    assert token.wait_blocking(0) is True


# --------------------------------------------------------------------------- any()


def test_any_fires_with_the_first_sources_reason_and_unregisters() -> None:
    """CancelToken.any() fires when a source does, with its reason, and leaves no callbacks."""
    a, b = cs.CancelToken(), cs.CancelToken()
    combined = cs.CancelToken.any(a, b)
    assert (_callback_count(a), _callback_count(b)) == (1, 1)
    b.cancel("from b")
    a.cancel("from a")
    assert (combined.cancelled, combined.reason) == (True, "from b")
    assert _callback_count(a) == 0


def test_any_of_a_cancelled_token_is_cancelled() -> None:
    """any() with an already fired source is fired at once, with the first fired one's reason."""
    a, b, c = cs.CancelToken(), cs.CancelToken(), cs.CancelToken()
    c.cancel("c")
    b.cancel("b")
    combined = cs.CancelToken.any(a, b, c)
    assert combined.reason == "b"
    assert _callback_count(a) == 0


def test_any_of_nothing_never_fires_and_bad_input_is_refused() -> None:
    """any() with no tokens never fires; a non-token raises TypeError."""
    assert not cs.CancelToken.any().cancelled
    with pytest.raises(TypeError, match="takes CancelToken objects"):
        cs.CancelToken.any(cs.CancelToken(), "nope")  # type: ignore[arg-type]


def test_any_nested_carries_the_failure() -> None:
    """A token derived twice raises the original failure (here a timeout's)."""
    source = cs.CancelToken.after(0)
    derived = cs.CancelToken.any(cs.CancelToken.any(source))
    with pytest.raises(cs.TimeoutFailure):
        derived.raise_if_cancelled()


def test_unobserved_any_is_freed_and_unregisters() -> None:
    """A dropped any() result with no callbacks is freed and unregisters from its source."""
    source = cs.CancelToken()
    combined = cs.CancelToken.any(source)
    ref = weakref.ref(combined)
    del combined
    gc.collect()
    assert ref() is None
    assert _callback_count(source) == 0


def test_observed_any_is_kept_alive_by_its_sources() -> None:
    """A dropped any() result with a callback stays alive and still fires it."""
    source = cs.CancelToken()
    record: list[str | None] = []
    combined = cs.CancelToken.any(source)
    combined.add_callback(lambda: record.append("fired"))
    del combined
    gc.collect()
    source.cancel("go")
    assert record == ["fired"]


def test_any_loses_its_strong_hold_when_its_callbacks_go() -> None:
    """Once its last callback is removed, an any() result is held weakly again."""
    source = cs.CancelToken()
    combined = cs.CancelToken.any(source)
    remove = combined.add_callback(lambda: None)
    remove()
    ref = weakref.ref(combined)
    del combined, remove
    gc.collect()
    assert ref() is None
    assert _callback_count(source) == 0


# --------------------------------------------------------------------------- after()


def test_after_fires_by_itself_with_a_timeout_failure() -> None:
    """CancelToken.after() fires on its own; raise_if_cancelled() raises TimeoutFailure."""
    token = cs.CancelToken.after(0.001)
    assert token.wait_blocking(GUARD)
    assert token.reason == "deadline exceeded"
    with pytest.raises(cs.TimeoutFailure) as info:
        token.raise_if_cancelled()
    assert isinstance(info.value, TimeoutError)
    assert math.isfinite(info.value.deadline)


def test_after_zero_is_already_fired_and_none_never() -> None:
    """after(0) and negative values are fired at once; None and inf never time out."""
    assert cs.CancelToken.after(0).cancelled
    assert cs.CancelToken.after(-1, reason="late").reason == "late"
    for never in (None, math.inf):
        token = cs.CancelToken.after(never)
        assert not token.cancelled
        assert token._timer is None


def test_after_refuses_bad_values() -> None:
    """after() refuses NaN (ValueError) and non-numbers (TypeError)."""
    with pytest.raises(ValueError, match="NaN"):
        cs.CancelToken.after(math.nan)
    with pytest.raises(TypeError, match="must be a number"):
        cs.CancelToken.after("1")  # type: ignore[arg-type]


def test_after_cancelled_early_drops_its_timer() -> None:
    """A timeout token cancelled early releases its timer entry (and keeps its own reason)."""
    token = cs.CancelToken.after(3600)
    entry = token._timer
    assert entry is not None
    assert entry[2:] == [token, "deadline exceeded"]
    token.cancel("early")
    assert entry[2:] == [None, "deadline exceeded"]
    assert token._timer is None
    with pytest.raises(cs.CancelledFailure) as info:
        token.raise_if_cancelled()
    assert info.value.reason == "early"


def test_after_with_a_huge_delay_keeps_the_timer_thread_alive() -> None:
    """A timeout beyond what Condition.wait accepts neither fails nor stops other timers."""
    huge = cs.CancelToken.after(1e300)
    assert cs.CancelToken.after(0.001).wait_blocking(GUARD)
    assert not huge.cancelled
    huge.cancel()


def test_failing_callback_outside_a_loop_with_the_default_hook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With Python's own unraisablehook (which takes only its own argument type), the
    report is written to stderr as that hook would, and the firing goes on."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    token = cs.CancelToken()
    assert _cancel_with_a_failing_callback(token) == ["after"]
    err = capsys.readouterr().err
    assert f"exception in a callback of {token!r}" in err
    assert "ValueError: boom" in err


def test_a_system_exit_in_a_timer_callback_does_not_stop_the_other_timers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SystemExit from a callback of a timeout token is reported, and the timer thread
    goes on firing the other timeout tokens."""
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    later = cs.CancelToken()
    _token._timers.add(later, time.monotonic() + 0.05, "later")
    first = cs.CancelToken()

    def leave() -> None:
        raise SystemExit(3)

    first.add_callback(leave)
    _token._timers.add(first, time.monotonic(), "first")  # due before `later`
    assert first.wait_blocking(GUARD)
    assert later.wait_blocking(GUARD)
    assert later.reason == "later"
    assert [type(r.exc_value) for r in reported] == [SystemExit]
    assert reported[0].object is first


def test_any_fired_while_it_attaches_to_a_later_source_leaves_nothing_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A source of CancelToken.any() firing (from another thread) while any() attaches to
    the next source: the result unregisters from that source too."""
    request = cs.CancelToken()
    app = cs.CancelToken()  # long-lived
    register = cs.CancelToken._register

    def racing_register(self: cs.CancelToken, callback: Any, front: bool = False) -> object:
        if self is app:
            # What another thread does between any()'s attach to request and to app.
            request.cancel("request over")
        return register(self, callback, front)

    monkeypatch.setattr(cs.CancelToken, "_register", racing_register)
    combined = cs.CancelToken.any(request, app)
    assert combined.cancelled
    assert combined.reason == "request over"
    assert _callback_count(app) == 0
