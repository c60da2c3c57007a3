"""to_thread(): blocking code in a thread that sees the token, waited for on cancellation."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Awaitable

import pytest

import cancelscope as cs

from ._helpers import forever

GUARD = 30.0


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_returns_result_and_raises_errors() -> None:
    """to_thread returns fn(*args) and raises its exception, in a worker thread."""
    main = threading.get_ident()

    def add(a: int, b: int) -> tuple[int, bool]:
        return a + b, threading.get_ident() != main

    def fail() -> None:
        raise KeyError("nope")

    assert await cs.to_thread(add, 2, 3) == (5, True)
    with pytest.raises(KeyError, match="nope"):
        await cs.to_thread(fail)


@pytest.mark.asyncio
async def test_token_outside_any_scope() -> None:
    """Outside any scope the thread still gets a token of its own, not cancelled."""

    def work() -> bool:
        token = cs.current_token()
        assert token is not None
        return token.cancelled

    assert await cs.to_thread(work) is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_scope_waits_for_the_thread_to_honour_the_token() -> None:
    """Cancelling the scope fires the thread's token; the caller waits until the thread returns."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    record: list[str] = []

    def work() -> str:
        token = cs.current_token()
        assert token is not None
        loop.call_soon_threadsafe(started.set)
        assert token.wait_blocking(GUARD)
        record.append(f"thread saw: {token.reason}")
        token.raise_if_cancelled()
        return "unreachable"

    scope = cs.cancellable(name="work")

    async def body() -> None:
        async with scope:
            scope.spawn(cs.to_thread, work)
            await started.wait()
            scope.cancel("stop it")
            await forever()

    with pytest.raises(cs.CancelledFailure, match="stop it") as info:
        await body()
    record.append("scope exited")
    assert record == ["thread saw: stop it", "scope exited"]
    assert info.value.scope is scope


@pytest.mark.asyncio
async def test_host_body_in_to_thread_is_cancelled_after_the_thread() -> None:
    """The scope's host awaiting to_thread gets the CancelledError only once the thread ended."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    record: list[str] = []

    def work() -> None:
        token = cs.current_token()
        assert token is not None
        loop.call_soon_threadsafe(started.set)
        token.wait_blocking(GUARD)
        record.append("thread done")
        token.raise_if_cancelled()

    async with cs.move_on_after(None) as scope:
        async def cancel_when_started() -> None:
            await started.wait()
            scope.cancel("enough")

        scope.spawn(cancel_when_started)
        try:
            await cs.to_thread(work)
        except asyncio.CancelledError:
            record.append("host cancelled")
            raise
    assert scope.cancelled_caught
    assert record == ["thread done", "host cancelled"]


@pytest.mark.asyncio
async def test_native_cancel_fires_the_token_and_waits() -> None:
    """task.cancel() on the caller fires the thread's token too; the caller waits for it."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    record: list[str] = []

    def work() -> None:
        token = cs.current_token()
        assert token is not None
        loop.call_soon_threadsafe(started.set)
        token.wait_blocking(GUARD)
        record.append(f"thread: {token.reason}")

    task = asyncio.create_task(cs.to_thread(work))
    await started.wait()
    task.cancel()
    task.cancel()  # twice: still one CancelledError, after the thread
    with pytest.raises(asyncio.CancelledError):
        await task
    assert record == ["thread: the task awaiting to_thread() was cancelled"]


@pytest.mark.asyncio
async def test_abandon_after_zero_leaves_the_thread_and_says_so() -> None:
    """abandon_after=0: the caller does not wait; the CancelledError's note says so."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()
    finished = threading.Event()

    def stubborn() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(GUARD)  # ignores the token
        finished.set()

    try:
        with pytest.raises(cs.CancelledFailure) as info:
            await _cancelled_while_in(started, cs.to_thread(stubborn, abandon_after=0))
        cause = info.value.__cause__
        assert isinstance(cause, asyncio.CancelledError)
        notes = getattr(cause, "__notes__", [])
        assert len(notes) == 1
        assert "stubborn did not finish within abandon_after=0s" in notes[0]
        assert "abandoned" in notes[0]
        assert not finished.is_set()
    finally:
        release.set()
    assert finished.wait(GUARD)


async def _cancel_when(event: asyncio.Event, scope: cs.CancellationScope) -> None:
    await event.wait()
    scope.cancel("abandon test")


async def _cancelled_while_in(started: asyncio.Event, aw: Awaitable[object]) -> None:
    """Await ``aw`` in a scope that is cancelled once ``started`` is set."""
    async with cs.cancellable() as scope:
        scope.spawn(_cancel_when, started, scope)
        await aw


@pytest.mark.asyncio
async def test_abandon_after_bounds_the_wait() -> None:
    """A positive abandon_after gives up on a thread that ignores the token (no timing asserted).

    (looptime does not fast-forward while executor threads run, so this uses the real clock.)
    """
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()

    def stubborn() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(GUARD)

    try:
        with pytest.raises(cs.CancelledFailure) as info:
            await _cancelled_while_in(started, cs.to_thread(stubborn, abandon_after=0.01))
        notes = getattr(info.value.__cause__, "__notes__", [])
        assert ["abandon_after=0.01s" in note for note in notes] == [True]
    finally:
        release.set()


@pytest.mark.asyncio
async def test_a_real_error_from_the_thread_wins_over_the_cancellation() -> None:
    """If the thread fails with a non-cancellation error after the token fired, it is raised."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def work() -> None:
        token = cs.current_token()
        assert token is not None
        loop.call_soon_threadsafe(started.set)
        token.wait_blocking(GUARD)
        raise OSError("cleanup failed")

    with pytest.raises(OSError, match="cleanup failed"):
        await _cancelled_while_in(started, cs.to_thread(work))


@pytest.mark.asyncio
async def test_bad_arguments_start_nothing() -> None:
    """A non-callable or a bad abandon_after raises at once and calls nothing."""
    called: list[str] = []

    def work() -> None:
        called.append("called")

    with pytest.raises(TypeError, match="needs a callable"):
        await cs.to_thread(42)  # type: ignore[arg-type]
    for bad in (-1, math.nan):
        with pytest.raises(ValueError, match="abandon_after must be >= 0"):
            await cs.to_thread(work, abandon_after=bad)
    with pytest.raises(TypeError, match="abandon_after must be a number"):
        await cs.to_thread(work, abandon_after="1")  # type: ignore[arg-type]
    assert called == []


@pytest.mark.asyncio
async def test_calls_register_nothing_on_the_scope() -> None:
    """Calls leave no callback on the scope's token, so loops of calls leave nothing behind."""
    async with cs.cancellable() as scope:
        for n in range(3):
            assert await cs.to_thread(int, n) == n
        callbacks = scope.token._callbacks
        assert callbacks is not None
        assert len(callbacks) == 0


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_thread_in_a_shield_runs_to_its_end() -> None:
    """In a shield reached by an outer request, the thread's token stays quiet and it finishes."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()

    def flush() -> str:
        token = cs.current_token()
        assert token is not None
        loop.call_soon_threadsafe(started.set)
        assert release.wait(GUARD)
        return f"flushed, token cancelled: {token.cancelled}"

    results: list[str] = []
    async with cs.move_on_after(None) as outer:

        async def cancel_outer() -> None:
            await started.wait()
            outer.cancel("shutdown")
            release.set()

        outer.spawn(cancel_outer)
        async with cs.non_cancellable() as shield:
            results.append(await cs.to_thread(flush))
            results.append(f"shield token: {shield.token.cancelled}")
        await forever()
    assert outer.cancelled_caught
    assert results == ["flushed, token cancelled: False", "shield token: True"]


@pytest.mark.asyncio
async def test_already_cancelled_scope_starts_no_thread() -> None:
    """to_thread in a scope already cancelled raises at once; the function never runs."""
    called: list[str] = []
    async with cs.move_on_after(0) as scope:
        await cs.to_thread(called.append, "ran")
    assert scope.cancelled_caught
    assert called == []


# --------------------------------------------------------------------------- SQLite

_ENDLESS = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
)


def _run_query(conn: sqlite3.Connection, sql: str) -> list[tuple[int]]:
    """The docs' pattern: an interrupted query caused by our cancellation honours the token."""
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        token = cs.current_token()
        if token is not None:
            token.raise_if_cancelled()
        raise


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_on_cancel_interrupts_a_running_sqlite_query() -> None:
    """scope.on_cancel(conn.interrupt) stops an endless recursive-CTE query in its thread."""
    loop = asyncio.get_running_loop()
    running = asyncio.Event()
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    give_up = time.monotonic() + GUARD

    def progress() -> int:
        if not running.is_set():
            loop.call_soon_threadsafe(running.set)
        # The safety net: abort (and fail the test) rather than hang if interrupt never comes.
        return 1 if time.monotonic() > give_up else 0

    conn.set_progress_handler(progress, 10_000)
    try:
        async with cs.move_on_after(None, name="query") as scope:
            scope.on_cancel(conn.interrupt)
            scope.spawn(_cancel_when, running, scope)
            await cs.to_thread(_run_query, conn, _ENDLESS)
        assert scope.cancelled_caught
        assert time.monotonic() < give_up
        # The connection is still usable afterwards.
        assert conn.execute("SELECT 42").fetchall() == [(42,)]
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_sqlite_query_not_cancelled_completes() -> None:
    """Without cancellation the query runs to completion through to_thread."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    try:
        async with cs.cancellable() as scope:
            scope.on_cancel(conn.interrupt)
            rows = await cs.to_thread(
                _run_query,
                conn,
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000) "
                "SELECT count(*) FROM c",
            )
        assert rows == [(1000,)]
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_to_thread_inside_gather_is_cancelled_with_its_siblings() -> None:
    """A failing sibling in gather() cancels a to_thread call, which waits for its thread."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    record: list[str] = []

    def work() -> None:
        token = cs.current_token()
        assert token is not None
        loop.call_soon_threadsafe(started.set)
        token.wait_blocking(GUARD)
        record.append("thread stopped")
        token.raise_if_cancelled()

    async def fail_when_started() -> None:
        await started.wait()
        raise ValueError("sibling failed")

    with pytest.raises(ValueError, match="sibling failed"):
        await cs.gather(cs.to_thread(work), fail_when_started())
    assert record == ["thread stopped"]


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["same scope", "inner scope", "spawned child"])
async def test_an_on_cancel_callback_of_any_enclosing_scope_finds_the_thread_token_fired(
    where: str,
) -> None:
    """The thread's token fires before any on_cancel callback runs, of its scope or one around it.

    A callback that wakes the thread (``on_cancel(conn.interrupt)``) must find the thread's
    token fired, also when to_thread runs in a scope nested in the one with the callback.
    """
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    release = threading.Event()
    tokens: list[cs.CancelToken | None] = []
    seen: list[bool] = []

    def blocking() -> None:
        tokens.append(cs.current_token())
        loop.call_soon_threadsafe(started.set)
        release.wait(GUARD)

    def interrupt() -> None:  # what conn.interrupt() stands for: it wakes the thread
        token = tokens[0]
        assert token is not None
        seen.append(token.cancelled)
        release.set()

    async def cancel_once_started(scope: cs.CancellationScope) -> None:
        await started.wait()
        scope.cancel("stop")

    async with cs.move_on_after(None, name="outer") as outer:
        outer.on_cancel(interrupt)
        outer.spawn(cancel_once_started, outer)
        if where == "same scope":
            await cs.to_thread(blocking)
        elif where == "inner scope":
            async with cs.cancellable(name="inner"):
                await cs.to_thread(blocking)
        else:
            outer.spawn(cs.to_thread, blocking)
    assert seen == [True]
    assert outer.cancel_called
