"""`cs.run` and `cs.shutdown_on_signals`: graceful shutdown on real signals.

The end-to-end tests start a real Python subprocess, wait for the lines it prints and send
it real signals; the in-process ones signal the test process itself with SIGUSR1/SIGUSR2
(handled by the loop, so nothing else in the session sees them).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

import cancelscope as cs

from ._child import Child

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

PRELUDE = """\
import asyncio, signal, sys
import cancelscope as cs

def say(*parts):
    print(*parts, flush=True)

"""


def child(body: str) -> Child:
    """A subprocess running PRELUDE + ``body``."""
    return Child("-c", PRELUDE + textwrap.dedent(body))


# --------------------------------------------------------------------------- end to end

WAIT_THEN_CLEAN_UP = """
async def main():
    try:
        asyncio.get_running_loop().call_soon(say, "ready")  # once main waits
        await asyncio.Event().wait()
    except asyncio.CancelledError as exc:
        say("cancelled:", exc)
        raise
    finally:
        async with cs.non_cancellable() as shield:
            await asyncio.sleep(0)
            say("shield held; cancel requested:", shield.cancel_requested.done())
"""


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_first_signal_cancels_main_gracefully(sig: signal.Signals, code: int) -> None:
    """The first signal cancels main's scope naming the signal; shields hold; exit 128+N."""
    with child(WAIT_THEN_CLEAN_UP + "cs.run(main)\nsay('not reached')") as proc:
        proc.expect("ready")
        proc.send(sig)
        assert proc.wait() == code
        assert proc.lines == [
            "ready",
            f"cancelled: cancelled by scope 'main': received {sig.name}",
            "shield held; cancel requested: True",
        ]
        assert proc.stderr() == ""


def test_async_with_form_under_asyncio_run() -> None:
    """`async with shutdown_on_signals()` under plain asyncio.run exits 143 on SIGTERM."""
    body = WAIT_THEN_CLEAN_UP + """
async def outer():
    async with cs.shutdown_on_signals() as scope:
        say("scope:", scope.name, scope is cs.CancellationScope.current())
        await main()

asyncio.run(outer())
"""
    with child(body) as proc:
        proc.expect("ready")
        proc.send(signal.SIGTERM)
        assert proc.wait() == 143
        assert proc.lines[0] == "scope: main True"
        assert proc.lines[2:] == [
            "cancelled: cancelled by scope 'main': received SIGTERM",
            "shield held; cancel requested: True",
        ]
        assert proc.stderr() == ""


STUCK_IN_SHIELD = """
async def main():
    try:
        asyncio.get_running_loop().call_soon(say, "ready")  # once main waits
        await asyncio.Event().wait()
    finally:
        async with cs.non_cancellable():
            say("cleaning up")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError as exc:
                say("shield interrupted:", exc)
                raise
"""


def test_second_signal_escalates_to_native_cancel() -> None:
    """A second signal cancels main natively, interrupting a shield; the exit code stays."""
    with child(STUCK_IN_SHIELD + "cs.run(main)") as proc:
        proc.expect("ready")
        proc.send(signal.SIGINT)
        proc.expect("cleaning up")
        proc.send(signal.SIGTERM)
        assert proc.wait() == 130
        assert proc.lines[-1] == (
            "shield interrupted: cancelscope: second shutdown signal (SIGTERM)"
        )
        assert "another signal exits at once" in proc.stderr()


def test_grace_period_escalates() -> None:
    """When the grace period runs out, main is cancelled natively without a second signal."""
    with child(STUCK_IN_SHIELD + "cs.run(main, grace=0.01)") as proc:
        proc.expect("ready")
        proc.send(signal.SIGTERM)
        assert proc.wait() == 143
        assert proc.lines[-1] == (
            "shield interrupted: cancelscope: the grace period of 0.01s ran out"
        )


CHILDREN_STUCK_IN_SHIELDS = """
async def stuck(label, ready):
    try:
        ready.set()
        await asyncio.Event().wait()
    finally:
        async with cs.non_cancellable():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError as exc:
                say(label, "interrupted:", exc)
                raise

async def parent_of(label, ready):
    async with cs.cancellable() as scope:
        scope.spawn(stuck, label, ready)
        await asyncio.Event().wait()

async def main():
    ready = [asyncio.Event() for _ in range(2)]
    async with cs.cancellable() as scope:
        scope.spawn(stuck, "child", ready[0])
        async with cs.cancellable() as inner:  # a grandchild, below a nested scope
            inner.spawn(parent_of, "grandchild", ready[1])
            for event in ready:
                await event.wait()
            say("ready")
            await asyncio.Event().wait()
"""


def test_escalation_reaches_the_child_tasks_below_the_scope() -> None:
    """Escalation cancels natively every task running below the root scope, not only main:
    a child or grandchild stuck in a shielded cleanup cannot outlast the grace period."""
    with child(CHILDREN_STUCK_IN_SHIELDS + "cs.run(main, grace=0.01)") as proc:
        proc.expect("ready")
        proc.send(signal.SIGTERM)
        assert proc.wait() == 143
        interrupted = sorted(line for line in proc.lines if "interrupted" in line)
        assert interrupted == [
            "child interrupted: cancelscope: the grace period of 0.01s ran out",
            "grandchild interrupted: cancelscope: the grace period of 0.01s ran out",
        ]


def test_third_signal_exits_at_once() -> None:
    """After escalation a further signal ends the process even while the loop is blocked."""
    body = """
import time

async def main():
    try:
        asyncio.get_running_loop().call_soon(say, "ready")  # once main waits
        await asyncio.Event().wait()
    finally:
        async with cs.non_cancellable():
            say("cleaning up")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                say("stuck")
                time.sleep(60)  # the loop is blocked: only a plain handler can run
    say("not reached")

cs.run(main)
"""
    with child(body) as proc:
        proc.expect("ready")
        proc.send(signal.SIGINT)
        proc.expect("cleaning up")
        proc.send(signal.SIGINT)
        proc.expect("stuck")
        proc.send(signal.SIGINT)
        assert proc.wait() == 130
        assert proc.lines == ["ready", "cleaning up", "stuck"]
        assert proc.stderr().endswith("cancelscope: SIGINT again; exiting now\n")


def test_error_during_shutdown_propagates() -> None:
    """An exception raised by the cleanup wins over the exit code: it is shown, exit 1."""
    body = """
async def main():
    try:
        asyncio.get_running_loop().call_soon(say, "ready")  # once main waits
        await asyncio.Event().wait()
    finally:
        raise OSError("cleanup failed")

cs.run(main)
"""
    with child(body) as proc:
        proc.expect("ready")
        proc.send(signal.SIGINT)
        assert proc.wait() == 1
        assert "OSError: cleanup failed" in proc.stderr()


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        ("asyncio.run(main())", "shield interrupted"),
        ("cs.run(main)", "shield held; noticed: received SIGINT"),
    ],
    ids=["asyncio.run", "cs.run"],
)
def test_ctrl_c_in_a_shield(runner: str, expected: str) -> None:
    """Ctrl-C under asyncio.run interrupts a shield; under cs.run the shield holds."""
    body = """
async def main():
    async with cs.non_cancellable() as shield:
        try:
            asyncio.get_running_loop().call_soon(say, "ready")  # once main waits
            failure = await shield.cancel_requested
            say("shield held; noticed:", failure.reason)
        except asyncio.CancelledError:
            say("shield interrupted")
            raise

"""
    with child(body + runner) as proc:
        proc.expect("ready")
        proc.send(signal.SIGINT)
        assert proc.wait() in (130, -signal.SIGINT)
        assert proc.lines == ["ready", expected]


# --------------------------------------------------------------------------- in process


def kill_self_soon(sig: signal.Signals) -> None:
    """Send ``sig`` to this process from the loop (the handler runs as a loop callback)."""
    os.kill(os.getpid(), sig)


async def wait_for_signal(sig: signal.Signals, record: list[str]) -> str:
    """Signal this process with ``sig`` and wait to be cancelled; note the message."""
    scope = cs.CancellationScope.current()
    assert scope is not None
    record.append(f"scope {scope.name}")
    kill_self_soon(sig)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError as exc:
        record.append(str(exc))
        raise
    return "not reached"


def test_run_returns_main_result_and_restores_handlers() -> None:
    """Without a signal run returns main's result; handlers are exactly as before afterwards."""
    seen: list[object] = []

    def custom(signum: int, frame: FrameType | None) -> None:
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGUSR1, custom)
    try:

        async def main(x: int) -> int:
            seen.append(signal.getsignal(signal.SIGUSR1))
            return x * 2

        assert cs.run(main, 21, shutdown_signals=(signal.SIGUSR1,)) == 42
        assert seen
        assert seen[0] is not custom
        assert signal.getsignal(signal.SIGUSR1) is custom
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_run_leaves_an_ignored_signal_ignored() -> None:
    """A signal ignored on purpose (nohup, a background job) stays ignored during run()."""
    seen: list[object] = []

    async def main() -> None:
        seen.append(signal.getsignal(signal.SIGUSR1))

    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        cs.run(main, shutdown_signals=[signal.SIGUSR1])
        assert seen == [signal.SIG_IGN]
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_run_raises_system_exit_after_signal() -> None:
    """In process: the signal's exit code comes as SystemExit once the loop is closed."""
    record: list[str] = []
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit) as info:
        cs.run(wait_for_signal, signal.SIGUSR1, record, shutdown_signals=[signal.SIGUSR1])
    assert info.value.code == 128 + signal.SIGUSR1
    assert record == ["scope main", "cancelled by scope 'main': received SIGUSR1"]
    assert signal.getsignal(signal.SIGUSR1) is before
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # no loop left running


def test_run_cancelled_from_inside() -> None:
    """main cancelling its own root scope ends run() with that scope's CancelledFailure."""

    async def main() -> None:
        scope = cs.CancellationScope.current()
        assert scope is not None
        scope.cancel("done here")
        await asyncio.sleep(1)

    with pytest.raises(cs.CancelledFailure, match="scope 'main' was cancelled: done here"):
        cs.run(main)


def test_run_propagates_main_exception() -> None:
    """An exception from main propagates unchanged, as under asyncio.run."""

    async def main() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        cs.run(main)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_run_with_uvloop() -> None:
    """loop_factory picks the loop (here uvloop); the shutdown works the same."""
    uvloop = pytest.importorskip("uvloop")
    record: list[str] = []
    with pytest.raises(SystemExit) as info:
        cs.run(
            wait_for_signal,
            signal.SIGUSR2,
            record,
            shutdown_signals=[signal.SIGUSR2],
            loop_factory=uvloop.new_event_loop,
        )
    assert info.value.code == 128 + signal.SIGUSR2
    assert record[-1] == "cancelled by scope 'main': received SIGUSR2"


class _NoSignalHandlersLoop(asyncio.SelectorEventLoop):
    """A loop without add_signal_handler, like Windows' loops."""

    # The stubs type this with a TypeVarTuple; the signature does not matter here.
    def add_signal_handler(  # type: ignore[override]
        self, sig: int, callback: Callable[..., object], *args: Any
    ) -> None:
        raise NotImplementedError


def test_fallback_without_add_signal_handler() -> None:
    """Where the loop has no add_signal_handler, a plain handler hands the signal to the loop."""
    record: list[str] = []
    before = signal.getsignal(signal.SIGUSR1)
    with pytest.raises(SystemExit):
        cs.run(
            wait_for_signal,
            signal.SIGUSR1,
            record,
            shutdown_signals=[signal.SIGUSR1],
            loop_factory=_NoSignalHandlersLoop,
        )
    assert record[-1] == "cancelled by scope 'main': received SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


async def nested_shutdowns(record: list[str], codes: list[object]) -> None:
    """An inner shutdown_on_signals inside an outer one, each ended by SIGUSR1."""
    async with cs.shutdown_on_signals([signal.SIGUSR1], name="outer"):
        try:
            async with cs.shutdown_on_signals([signal.SIGUSR1], name="inner"):
                await wait_for_signal(signal.SIGUSR1, record)
        except SystemExit as exc:
            codes.append(exc.code)
        await wait_for_signal(signal.SIGUSR1, record)


@pytest.mark.asyncio
async def test_nested_shutdown_hands_the_signal_back() -> None:
    """An inner shutdown_on_signals takes the signal; at exit the outer one has it again."""
    record: list[str] = []
    codes: list[object] = []
    with pytest.raises(SystemExit) as outer_exit:
        await nested_shutdowns(record, codes)
    assert codes == [128 + signal.SIGUSR1]
    assert outer_exit.value.code == 128 + signal.SIGUSR1
    assert record == [
        "scope inner",
        "cancelled by scope 'inner': received SIGUSR1",
        "scope outer",
        "cancelled by scope 'outer': received SIGUSR1",
    ]


@pytest.mark.asyncio
async def test_restores_foreign_loop_handler() -> None:
    """A handler someone added with loop.add_signal_handler is back after the block."""
    loop = asyncio.get_running_loop()
    got = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR2, got.set)
    try:
        async with cs.shutdown_on_signals([signal.SIGUSR2]):
            pass
        kill_self_soon(signal.SIGUSR2)
        await got.wait()
        assert got.is_set()
    finally:
        loop.remove_signal_handler(signal.SIGUSR2)


async def swallow_the_signal(scopes: list[cs.CancellationScope]) -> None:
    """Catch the cancellation a SIGUSR1 causes and return normally from the block."""
    async with cs.shutdown_on_signals([signal.SIGUSR1]) as scope:
        scopes.append(scope)
        with contextlib.suppress(asyncio.CancelledError):
            await wait_for_signal(signal.SIGUSR1, [])


@pytest.mark.asyncio
async def test_body_finishing_after_signal_still_exits() -> None:
    """A body that catches the cancellation and returns still ends with the signal's code."""
    scopes: list[cs.CancellationScope] = []
    with pytest.raises(SystemExit) as info:
        await swallow_the_signal(scopes)
    assert info.value.code == 128 + signal.SIGUSR1
    assert scopes[0].cancel_reason == "received SIGUSR1"


async def raise_in_block(exc: BaseException) -> None:
    """Raise ``exc`` inside a shutdown_on_signals block (no signal comes)."""
    async with cs.shutdown_on_signals([signal.SIGUSR1]):
        raise exc


async def cancel_block_by_hand(scopes: list[cs.CancellationScope]) -> None:
    """Cancel a shutdown_on_signals block's scope by hand (no signal comes)."""
    async with cs.shutdown_on_signals([signal.SIGUSR1]) as scope:
        scopes.append(scope)
        scope.cancel("by hand")
        await asyncio.sleep(1)


@pytest.mark.asyncio
async def test_no_signal_is_a_plain_scope() -> None:
    """Without a signal the block behaves as a cancellable scope: its errors pass unchanged."""
    with pytest.raises(ValueError, match="inner"):
        await raise_in_block(ValueError("inner"))
    # Not a signal: the scope's own cancellation surfaces as for any scope.
    scopes: list[cs.CancellationScope] = []
    with pytest.raises(cs.CancelledFailure, match="by hand"):
        await cancel_block_by_hand(scopes)
    assert scopes[0].cancelled_caught


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shutdown_signals": signal.SIGINT}, TypeError, "iterable of signal numbers"),
        ({"shutdown_signals": ["SIGINT"]}, TypeError, "must be a signal number"),
        ({"shutdown_signals": [10_000]}, ValueError, "not a signal number"),
        ({"shutdown_signals": [signal.SIGKILL]}, ValueError, "SIGKILL cannot be caught"),
        ({"grace": -1}, ValueError, "grace must be >= 0"),
        ({"grace": float("nan")}, ValueError, "grace must be >= 0"),
        ({"grace": "10"}, TypeError, "grace must be a number"),
    ],
)
def test_run_refuses_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    """Bad signals or grace raise at once, before any loop or handler exists."""

    async def main() -> None:
        raise AssertionError("not run")

    with pytest.raises(error, match=match):
        cs.run(main, **kwargs)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_run_refuses_a_coroutine_object() -> None:
    """run() takes the function, not a coroutine (the coroutine is closed, no warning)."""

    async def main() -> None:
        pass

    coro = main()
    with pytest.raises(TypeError, match=r"cs.run\(main, \*args\)"):
        cs.run(coro)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_run_refuses_a_running_loop() -> None:
    """run() inside a running loop points to the async-with form."""

    async def main() -> None:
        pass

    with pytest.raises(RuntimeError, match="shutdown_on_signals"):
        cs.run(main)


def test_run_outside_main_thread() -> None:
    """Outside the main thread signals are refused clearly; shutdown_signals=() runs."""
    results: list[object] = []

    async def main() -> str:
        return "ran"

    def target() -> None:
        try:
            cs.run(main)
        except RuntimeError as exc:
            results.append(str(exc))
        results.append(cs.run(main, shutdown_signals=()))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    assert len(results) == 2
    assert "main thread" in str(results[0])
    assert results[1] == "ran"
