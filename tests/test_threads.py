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
from cancelscope import _scope

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


# A cancel() from another thread at the moment the loop's thread enters the scope. The
# canceller finds the scope not entered and records its request for the entry to find;
# the two orders it can meet the entry in are forced below, each exactly.


@pytest.mark.parametrize("form", ["async with", "with"])
def test_a_request_recorded_while_the_entry_is_under_way_is_found_by_the_entry(
    monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """The other thread records its request after the entry first looked for one."""
    scope = cs.CancellationScope()
    new_state = _scope._new_state

    def new_state_then_cancel(task: asyncio.Task[Any], loop: Any) -> Any:
        # Inside the entry (a task's first entry makes its state), before it marks the
        # scope entered: the other thread runs its whole cancel() here.
        ts = new_state(task, loop)
        thread = threading.Thread(target=scope.cancel, args=("raced",))
        thread.start()
        thread.join(GUARD)
        return ts

    monkeypatch.setattr(_scope, "_new_state", new_state_then_cancel)
    record: list[str] = []

    async def host() -> None:
        try:
            if form == "with":
                with scope:
                    await forever()
            else:
                async with scope:
                    await forever()
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    asyncio.run(asyncio.wait_for(host(), GUARD))
    assert record == ["failure raced"]


@pytest.mark.parametrize("via", ["cancel", "token"])
def test_a_request_recorded_just_after_the_entry_is_handed_to_the_loop(
    monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """The other thread found the scope not entered, then the entry ran before it went on.

    Its request reaches the body anyway: it sees the scope entered after recording the
    request and hands it to the loop, which applies it (it must not apply it from its
    own thread). ``token``: a token linked outside any loop, fired from the thread.
    """
    token = cs.CancelToken()
    scope = cs.CancellationScope(token=token) if via == "token" else cs.CancellationScope()
    looked = threading.Event()  # the canceller has found the scope not entered
    entered = threading.Event()
    unentered = cs.CancellationScope._cancel_unentered

    def stalled(self: cs.CancellationScope, req: Any) -> None:
        looked.set()
        assert entered.wait(GUARD)
        unentered(self, req)

    monkeypatch.setattr(cs.CancellationScope, "_cancel_unentered", stalled)
    thread = threading.Thread(
        target=token.cancel if via == "token" else scope.cancel, args=("raced",)
    )
    record: list[str] = []

    async def host() -> None:
        thread.start()
        assert looked.wait(GUARD)  # (blocks the loop: nothing else is to run)
        try:
            async with scope:
                entered.set()
                await forever()
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason} in {threading.current_thread().name}")

    asyncio.run(asyncio.wait_for(host(), GUARD))
    thread.join(GUARD)
    assert record == [f"failure raced in {threading.current_thread().name}"]
