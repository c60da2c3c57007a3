"""SPEC 3: cancel() (and TaskHandle.cancel()) called from another thread or a signal handler.

The thread is started by the test and driven by threading.Events. Where the test must know
the thread has made its call before the loop goes on, it blocks the loop on the thread's
"done" event: nothing else can run meanwhile, so the order is exact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import forever, forever_noting_cancel

# A safety net against a broken implementation hanging the suite; never reached when it works.
GUARD = 30.0


class _Worker:
    """A thread that makes one call when told to, and says when it is done."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action = action
        self.go = threading.Event()
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="canceller", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        if not self.go.wait(GUARD):
            return
        try:
            self._action()
        except BaseException as exc:  # reported by finish()
            self.errors.append(exc)
        finally:
            self.done.set()

    def call_and_wait(self) -> None:
        """Let the thread make its call, blocking the loop until it has."""
        self.go.set()
        assert self.done.wait(GUARD), "the thread did not make its call"

    def finish(self) -> None:
        self.go.set()
        self.thread.join(GUARD)
        assert not self.thread.is_alive()
        assert self.errors == []


async def _host_until_cancelled(scope: cs.CancellationScope, worker: _Worker) -> list[str]:
    """Enter scope, let the worker make its call and wait; return what the scope's exit said."""
    record: list[str] = []
    try:
        async with scope:
            worker.go.set()
            await forever()
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    return record


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_from_thread_takes_effect_next_iteration() -> None:
    """scope.cancel() from another thread takes effect on the loop's next iteration."""
    record: list[str] = []
    entered = asyncio.Event()
    scope = cs.cancellable(name="threaded")

    async def host() -> None:
        try:
            async with scope:
                entered.set()
                try:
                    await forever()
                except asyncio.CancelledError:
                    record.append("host cancelled")
                    raise
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    task = asyncio.create_task(host())
    await entered.wait()
    worker = _Worker(lambda: scope.cancel("from thread"))
    worker.call_and_wait()
    record.append(f"before next iteration: {scope.cancel_called} {scope.cancel_reason}")
    await asyncio.sleep(0)
    record.append(f"after next iteration: {scope.cancel_called} {scope.cancel_reason}")
    await task
    worker.finish()
    assert record == [
        "before next iteration: False None",
        "after next iteration: True from thread",
        "host cancelled",
        "failure from thread",
    ]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_from_thread_wakes_idle_loop() -> None:
    """A cancel() from a thread wakes a loop that has nothing else to do."""
    scope = cs.cancellable()
    worker = _Worker(lambda: scope.cancel("wake up"))
    record = await asyncio.wait_for(_host_until_cancelled(scope, worker), GUARD)
    worker.finish()
    assert record == ["failure wake up"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_from_two_threads_first_reason_wins() -> None:
    """Cancels from two threads, one after the other: the first one's reason wins."""
    scope = cs.cancellable()
    record: list[str] = []
    try:
        async with scope:
            first = _Worker(lambda: scope.cancel("first"))
            second = _Worker(lambda: scope.cancel("second"))
            first.call_and_wait()
            second.call_and_wait()
            await forever()
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    first.finish()
    second.finish()
    assert record == ["failure first"]
    assert scope.cancel_reason == "first"


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_handle_cancel_from_thread() -> None:
    """TaskHandle.cancel() from another thread cancels that child alone."""
    record: list[str] = []
    started = asyncio.Event()
    async with cs.cancellable() as scope:
        handle = scope.spawn(forever_noting_cancel, record, "child cancelled", started)
        await started.wait()
        worker = _Worker(lambda: handle.cancel("from thread"))
        worker.call_and_wait()
        try:
            await handle
        except cs.CancelledFailure as failure:
            record.append(f"handle failure {failure.reason}")
        await asyncio.sleep(0)
        record.append("scope goes on")
    worker.finish()
    assert record == ["child cancelled", "handle failure from thread", "scope goes on"]
    assert scope.cancel_called is False
    assert scope.cancelled_caught is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_before_entry_from_thread() -> None:
    """A cancel() from a thread before entry pre-cancels the scope."""
    record: list[str] = []
    scope = cs.cancellable()
    worker = _Worker(lambda: scope.cancel("early"))
    worker.call_and_wait()
    worker.finish()
    await asyncio.sleep(0)
    try:
        async with scope:
            record.append("body")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason}")
    assert record == ["body", "failure early"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_after_exit_from_thread_does_nothing() -> None:
    """A cancel() from a thread after the scope exited does nothing."""
    async with cs.cancellable() as scope:
        await asyncio.sleep(0)
    worker = _Worker(lambda: scope.cancel("late"))
    worker.call_and_wait()
    worker.finish()
    for _ in range(3):
        await asyncio.sleep(0)
    assert scope.cancel_called is False
    assert scope.cancel_reason is None
    assert not scope.cancel_requested.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_from_thread_reaches_shield_future_only() -> None:
    """A thread's request on an outer scope resolves a shield's future but not its body."""
    record: list[str] = []
    shielded = asyncio.Event()
    outer = cs.cancellable()

    async def host() -> None:
        try:
            async with outer:
                async with cs.non_cancellable() as shield:
                    shielded.set()
                    failure = await shield.cancel_requested
                    record.append(f"shield noticed {failure.reason}")
                    await asyncio.sleep(0)
                    record.append("shield body wound down")
                await asyncio.sleep(0)
        except cs.CancelledFailure as failure:
            record.append(f"outer failure {failure.reason}")

    task = asyncio.create_task(host())
    await shielded.wait()
    worker = _Worker(lambda: outer.cancel("thread"))
    worker.call_and_wait()
    await task
    worker.finish()
    assert record == ["shield noticed thread", "shield body wound down", "outer failure thread"]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="needs POSIX signals")
@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_from_signal_handler_wakes_idle_loop() -> None:
    """cancel() from a plain signal handler (sent by a thread) cancels a scope on an idle loop."""
    scope = cs.cancellable()
    worker = _Worker(lambda: os.kill(os.getpid(), signal.SIGUSR2))

    def handler(signum: int, frame: object) -> None:
        scope.cancel(f"signal {signum}")

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        record = await asyncio.wait_for(_host_until_cancelled(scope, worker), GUARD)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    worker.finish()
    assert record == [f"failure signal {int(signal.SIGUSR2)}"]


def test_threads_racing_on_a_scope_not_entered_yet_lose_nothing() -> None:
    """cancel() in one thread and cancel_requested in another, at once, before entry.

    Both write fields of the scope's _Extra, which the first of them makes: if both made
    one, the later would replace the earlier, and a request or the future would be lost.
    The switch interval is cut so that the threads interleave inside that step.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(300):  # without the lock, about one run in two fails
            scope = cs.CancellationScope()
            start = threading.Barrier(2)
            futures: list[asyncio.Future[cs.CancelledFailure]] = []

            async def bind(
                scope: cs.CancellationScope = scope,
                futures: list[asyncio.Future[cs.CancelledFailure]] = futures,
            ) -> None:
                futures.append(scope.cancel_requested)

            def reader(start: threading.Barrier = start, bind: Callable[[], Any] = bind) -> None:
                start.wait()
                asyncio.run(bind())

            def canceller(
                start: threading.Barrier = start, scope: cs.CancellationScope = scope
            ) -> None:
                start.wait()
                scope.cancel("raced")

            threads = [threading.Thread(target=reader), threading.Thread(target=canceller)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert scope.cancel_reason == "raced"
            assert scope._x is not None
            assert scope._x.requested_fut is futures[0]
    finally:
        sys.setswitchinterval(interval)
