"""Graceful shutdown on signals: `run` and `shutdown_on_signals`.

The first shutdown signal cancels a root scope (reason ``"received SIGINT"``),
so every ``finally`` and `non_cancellable` cleanup runs and shields hold. A
second signal, or the grace period running out, escalates to a native
``task.cancel()`` of the host task, which interrupts shields too; from then on
a further signal ends the process at once with ``os._exit``. The process exit
code is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).

Signals are handled with ``loop.add_signal_handler``, as a loop callback, so
cancelscope's own bookkeeping is never interrupted half-way (see
docs/semantics.md, "cancel() from the loop's own thread"). Only the last
stage, the hard exit, is a plain ``signal.signal`` handler: it must work even
when the loop is stuck in synchronous code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from types import FrameType, TracebackType
from typing import Any, TypeVar, cast

from . import _scope
from ._exceptions import CancelledFailure
from ._scope import CancellationScope

T = TypeVar("T")

_logger = logging.getLogger("cancelscope")

_DEFAULT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
# Signals a process can never catch.
_UNCATCHABLE = frozenset(
    getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)
)

_PyHandler = Callable[[int, FrameType | None], Any] | int | None

# Which shutdown is active per loop and signal, innermost last, so that a nested
# shutdown_on_signals hands the signal back to the enclosing one when it exits.
_active: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[signal.Signals, list[_SignalShutdown]]
] = weakref.WeakKeyDictionary()


def _check_signals(signals: object) -> tuple[signal.Signals, ...]:
    # Typed `object`: callers may pass anything at runtime.
    if isinstance(signals, (int, str, bytes)) or not isinstance(signals, Iterable):
        raise TypeError(
            f"shutdown signals must be an iterable of signal numbers, not {signals!r}; "
            "write (signal.SIGTERM,) for a single signal"
        )
    checked: list[signal.Signals] = []
    items = cast("Iterable[object]", signals)
    for obj in items:
        if isinstance(obj, bool) or not isinstance(obj, int):
            raise TypeError(f"a shutdown signal must be a signal number, not {obj!r}")
        try:
            sig = signal.Signals(obj)
        except ValueError:
            raise ValueError(f"{obj!r} is not a signal number on this platform") from None
        if sig in _UNCATCHABLE:
            raise ValueError(f"{sig.name} cannot be caught; choose e.g. SIGINT or SIGTERM")
        if sig not in checked:
            checked.append(sig)
    return tuple(checked)


def _check_grace(grace: object) -> float | None:
    if grace is None:
        return None
    if isinstance(grace, bool) or not isinstance(grace, (int, float)):
        raise TypeError(f"grace must be a number of seconds or None, not {grace!r}")
    if math.isnan(grace) or grace < 0:
        raise ValueError(f"grace must be >= 0 seconds (or None for no limit), not {grace!r}")
    return None if math.isinf(grace) else float(grace)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        # Best effort just before os._exit (a flush interrupted mid-write raises).
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


class _SignalShutdown:
    """The machinery behind both public forms (one instance per ``async with``)."""

    __slots__ = (
        "_escalated",
        "_fallback",
        "_grace",
        "_loop",
        "_raise_exit",
        "_received",
        "_restore",
        "_scope",
        "_signals",
        "_task",
        "_timer",
    )

    def __init__(
        self,
        signals: Iterable[int],
        grace: float | None,
        name: str | None,
        *,
        raise_exit: bool,
    ) -> None:
        self._signals = _check_signals(signals)
        self._grace = _check_grace(grace)
        self._scope = CancellationScope(name=name)
        # Whether __aexit__ raises SystemExit itself (the async-with form) or
        # leaves that to `run`, which first closes its loop.
        self._raise_exit = raise_exit
        # The signal that started the shutdown; only the loop's thread sets it.
        self._received: signal.Signals | None = None
        # True once the host task was cancelled natively (stage 2).
        self._escalated = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        # Per installed signal: how to put back what was there before.
        self._restore: list[tuple[signal.Signals, _PyHandler, asyncio.Handle | None]] = []
        # True where the loop has no add_signal_handler (Windows): plain handlers.
        self._fallback = False

    @property
    def exit_code(self) -> int | None:
        """``128 + signal number`` once a shutdown signal arrived, else None."""
        return None if self._received is None else 128 + self._received

    # ------------------------------------------------------------------ entry and exit

    def _check_thread(self) -> None:
        if self._signals and threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "signal handlers can only be installed in the main thread; run this in the "
                "main thread, or pass no signals (shutdown_signals=()) to run without them"
            )

    async def __aenter__(self) -> CancellationScope:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a running loop always has a task here
            raise RuntimeError("shutdown_on_signals must be entered inside an asyncio task")
        self._check_thread()
        if self._task is not None:
            raise RuntimeError("this shutdown_on_signals was already entered; create a new one")
        self._loop, self._task = loop, task
        try:
            for sig in self._signals:
                self._install(loop, sig)
            await self._scope.__aenter__()
        except BaseException:
            self._uninstall()
            raise
        return self._scope

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        outcome: BaseException | None
        try:
            try:
                outcome = None if await self._scope.__aexit__(exc_type, exc, tb) else exc
            except BaseException as err:
                outcome = err
        finally:
            self._uninstall()
        if self._received is None or not self._ours(outcome):
            if outcome is None:
                return True
            if outcome is exc:
                return False
            raise outcome
        if self._raise_exit:
            raise SystemExit(self.exit_code) from outcome
        return True

    def _ours(self, outcome: BaseException | None) -> bool:
        """Whether ``outcome`` is the shutdown ending the body (not some other error)."""
        if outcome is None:
            return True  # the body finished on its own after the signal
        if isinstance(outcome, CancelledFailure):
            return outcome.scope is self._scope
        if isinstance(outcome, asyncio.CancelledError) and self._escalated:
            task = self._task
            assert task is not None
            # Withdraw our native cancel; one made by someone else stays theirs.
            return sys.version_info < (3, 11) or task.uncancel() == 0
        return False

    # ------------------------------------------------------------------ handlers

    def _install(self, loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> None:
        previous = signal.getsignal(sig)
        if previous == signal.SIG_IGN:
            # Ignored on purpose (a shell's background job, nohup): keep it so, as
            # Python itself does for an inherited ignored SIGINT.
            return
        handles: dict[int, asyncio.Handle] | None = getattr(loop, "_signal_handlers", None)
        stack = _active.setdefault(loop, {}).setdefault(sig, [])
        # An earlier add_signal_handler on this loop (asyncio's own loop keeps
        # them in _signal_handlers; uvloop hides them) is put back at exit.
        foreign = None if stack or handles is None else handles.get(sig)
        try:
            loop.add_signal_handler(sig, self._on_signal, sig)
        except NotImplementedError:
            # No add_signal_handler (Windows' loops): a plain handler that hands
            # the signal to the loop, as asyncio.Runner does for Ctrl-C.
            self._fallback = True
            signal.signal(sig, self._on_signal_fallback)
        stack.append(self)
        self._restore.append((sig, previous, foreign))

    def _on_signal_fallback(self, signum: int, frame: FrameType | None) -> None:
        loop = self._loop
        assert loop is not None
        loop.call_soon_threadsafe(self._on_signal, signal.Signals(signum))

    def _uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = self._loop
        restore, self._restore = self._restore, []
        for sig, previous, foreign in reversed(restore):
            stack = _active.get(loop, {}).get(sig, []) if loop is not None else []
            if self in stack:
                stack.remove(self)
            if loop is not None and not self._escalated and not self._fallback:
                loop.remove_signal_handler(sig)
            if stack:
                # An enclosing shutdown on this loop takes the signal back.
                stack[-1]._reinstall(sig)
            elif foreign is not None and loop is not None and not loop.is_closed():
                loop.add_signal_handler(sig, foreign._callback, *foreign._args)  # type: ignore[attr-defined]
            elif previous is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, previous)

    def _reinstall(self, sig: signal.Signals) -> None:
        loop = self._loop
        assert loop is not None
        if self._escalated:
            signal.signal(sig, self._hard_exit)
        elif self._fallback:
            signal.signal(sig, self._on_signal_fallback)
        else:
            loop.add_signal_handler(sig, self._on_signal, sig)

    # ------------------------------------------------------------------ the stages

    def _on_signal(self, sig: signal.Signals) -> None:
        """A shutdown signal arrived (a loop callback)."""
        if self._received is None:
            self._received = sig
            self._scope.cancel(f"received {sig.name}")
            loop = self._loop
            if self._grace is not None and loop is not None:
                self._timer = loop.call_later(
                    self._grace, self._escalate, f"the grace period of {self._grace:g}s ran out"
                )
        else:
            self._escalate(f"second shutdown signal ({sig.name})")

    def _escalate(self, why: str) -> None:
        """Stage 2: cancel the host task natively, so shields no longer hold."""
        if self._escalated:
            return
        self._escalated = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop, task = self._loop, self._task
        assert loop is not None
        assert task is not None
        _logger.warning(
            "cancelscope: %s during shutdown; cancelling %r and the tasks below its scope "
            "natively (shields no longer hold); another signal exits at once",
            why,
            task.get_name(),
        )
        # From now on a signal ends the process even if the loop is stuck.
        for sig, _previous, _foreign in self._restore:
            if not self._fallback:
                loop.remove_signal_handler(sig)
            signal.signal(sig, self._hard_exit)
        # The host and every task running below the scope (the child tasks of
        # its scopes, and theirs): a shielded cleanup in a child would
        # otherwise keep the host's exit waiting past the grace period.
        message = f"cancelscope: {why}"
        for other in _tasks_below(self._scope, loop, task):
            other.cancel(message)

    def _hard_exit(self, signum: int, frame: FrameType | None) -> None:
        """Stage 3 (a plain signal handler): end the process now."""
        with contextlib.suppress(OSError):  # stderr may be closed
            os.write(2, f"cancelscope: {signal.Signals(signum).name} again; exiting now\n".encode())
        _flush_stdio()
        os._exit(self.exit_code or 128 + signum)


def _tasks_below(
    scope: CancellationScope, loop: asyncio.AbstractEventLoop, host: asyncio.Task[Any]
) -> list[asyncio.Task[Any]]:
    """``host`` and the started tasks whose current scope is inside ``scope``, not done.

    A child that has not started yet is left out: it holds no cleanup yet, and
    its first step meets the scope's own cancellation.
    """
    found = [host] if not host.done() else []
    for task in asyncio.all_tasks(loop):
        if task is host:
            continue
        state = _scope._get_state(task)
        current = state.scope if state is not None else None
        while current is not None:
            if current is scope:
                found.append(task)
                break
            current = current._parent
    return found


def shutdown_on_signals(
    signals: Iterable[int] = _DEFAULT_SIGNALS,
    *,
    grace: float | None = None,
    name: str | None = "main",
) -> AbstractAsyncContextManager[CancellationScope]:
    """A cancellable scope that shuts down gracefully on SIGINT/SIGTERM (``async with``).

    The first of ``signals`` cancels the scope with the reason ``"received SIGINT"``
    (``SIGTERM``...), so every ``finally`` and `non_cancellable` cleanup inside runs.
    A second signal, or ``grace`` seconds after the first, cancels the task natively
    (shields no longer hold); a further signal exits the process at once. When the
    block ends after a signal it raises ``SystemExit(128 + signal number)`` (130 for
    SIGINT, 143 for SIGTERM); an error raised during the shutdown propagates instead.
    The previous signal handlers are restored at exit. Needs the main thread; see
    `run` for the whole-program form.
    """
    return _SignalShutdown(signals, grace, name, raise_exit=True)


def run(
    main: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    shutdown_signals: Iterable[int] = _DEFAULT_SIGNALS,
    grace: float | None = None,
    debug: bool | None = None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run ``main(*args)`` in a new event loop, shutting down gracefully on signals.

    Like `asyncio.run`, but ``main`` runs inside a root cancellable scope (named
    ``'main'``, `CancellationScope.current()` inside) that the first of
    ``shutdown_signals`` cancels, so shields and ``finally`` blocks run; see
    `shutdown_on_signals` for the escalation. Returns ``main``'s result, or raises
    its exception; after a shutdown signal raises ``SystemExit(128 + signal
    number)`` once the loop is closed and the signal handlers are restored.
    Pass ``shutdown_signals=()`` to handle no signal (outside the main thread).
    """
    fn: object = main
    if not callable(fn):
        if asyncio.iscoroutine(fn):
            fn.close()
        raise TypeError(
            f"run() needs an async function, not {type(fn).__name__}; "
            "pass the function and its arguments: cs.run(main, *args)"
        )
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("cs.run() cannot be called from a running event loop; use "
                           "`async with cs.shutdown_on_signals():` there instead")
    shutdown = _SignalShutdown(shutdown_signals, grace, "main", raise_exit=False)
    shutdown._check_thread()
    holder: list[T] = []

    async def root() -> None:
        async with shutdown:
            holder.append(await main(*args))

    _run_loop(root, debug, loop_factory)
    code = shutdown.exit_code
    if code is not None:
        raise SystemExit(code)
    return holder[0]


def _run_loop(
    root: Callable[[], Coroutine[Any, Any, None]],
    debug: bool | None,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None,
) -> None:
    """`asyncio.run` without its own SIGINT handling (which would fight ours)."""
    loop = asyncio.new_event_loop() if loop_factory is None else loop_factory()
    try:
        if loop_factory is None:
            asyncio.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        loop.run_until_complete(root())
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            if loop_factory is None:
                asyncio.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left and wait for it, as `asyncio.run` does."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception during cs.run() shutdown",
                    "exception": task.exception(),
                    "task": task,
                }
            )
