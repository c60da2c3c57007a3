"""The cancelscope pytest plugin: a scope fixture, an async timeout, leak detection.

Loaded on install (the ``pytest11`` entry point ``cancelscope``; disable with
``-p no:cancelscope``) and idle until asked: nothing happens to a test that
neither requests the ``cancel_scope`` fixture, nor is marked
``cancel_timeout``, nor runs with a timeout default or leak detection turned
on. docs/testing.md describes it for users.

Async tests are run by pytest-asyncio or anyio's plugin, which call
``item.obj`` inside the event loop (pytest-asyncio in a task of its own for
the test, anyio in its runner task). The features that must live in the
test's task (the fixture's scope, the timeout) wrap ``item.obj`` for the call
only, so they work under either plugin. Leak detection brackets the test's
function-scoped fixtures with a fixture of its own, set up right after the
loop exists and torn down before it closes.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import math
import re
import sys
import traceback
import warnings
import weakref
from asyncio import CancelledError
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from types import FrameType
from typing import Any, Final, final

import pytest

from ._dump import format_tree, task_stack
from ._scope import _HAS_COUNTS, CancellationScope
from .testing import wind_down

__all__ = ["LeakWarning", "cancel_scope"]

_LEAK_MODES: Final = ("off", "warn", "error")
_GUARD: Final = "_cancelscope_leak_guard"
_RUNNER = re.compile(r"_(\w+)_scoped_runner")


class LeakWarning(pytest.PytestWarning):
    """Issued after a test that left tasks or timers behind (``--cancelscope-leaks=warn``)."""


LeakWarning.__module__ = "cancelscope.pytest_plugin"


# --------------------------------------------------------------------------- configuration


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cancelscope")
    group.addoption(
        "--cancelscope-timeout",
        dest="cancelscope_timeout",
        default=None,
        metavar="SECONDS",
        help="default cancel_timeout for async tests (loop time; 0 disables). "
        "Overrides the cancelscope_timeout ini setting.",
    )
    group.addoption(
        "--cancelscope-leaks",
        dest="cancelscope_leaks",
        default=None,
        choices=_LEAK_MODES,
        help="report tasks and timers an async test left behind: off (default), warn, error. "
        "Overrides the cancelscope_leaks ini setting.",
    )
    parser.addini(
        "cancelscope_timeout",
        "default cancel_timeout in seconds for async tests (0 or empty: none)",
        default="",
    )
    parser.addini("cancelscope_leaks", "leak detection for async tests: off, warn, error",
                  default="off")
    parser.addini(
        "cancelscope_grace",
        "seconds cancelled work may take to finish (cancel_scope children, timed-out tests, "
        "leaked tasks) before it is reported and cancelled with task.cancel()",
        default="1.0",
    )


def _seconds(value: object, where: str, *, allow_none: bool) -> float | None:
    if value is None or value == "":
        if allow_none:
            return None
        raise pytest.UsageError(f"{where} needs a number of seconds")
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"{where} must be a number of seconds, not {value!r}"
        ) from None
    if math.isnan(seconds) or seconds < 0:
        raise pytest.UsageError(f"{where} must be a number of seconds >= 0, not {value!r}")
    return seconds or None  # 0 disables


@final
class _Settings:
    __slots__ = ("grace", "leaks", "timeout")

    def __init__(self, config: pytest.Config) -> None:
        cli = config.getoption("cancelscope_timeout")
        self.timeout = _seconds(
            cli if cli is not None else config.getini("cancelscope_timeout"),
            "--cancelscope-timeout" if cli is not None else "the cancelscope_timeout ini setting",
            allow_none=True,
        )
        leaks = config.getoption("cancelscope_leaks") or str(config.getini("cancelscope_leaks"))
        leaks = leaks.strip().lower() or "off"
        if leaks not in _LEAK_MODES:
            raise pytest.UsageError(
                f"cancelscope_leaks must be one of {', '.join(_LEAK_MODES)}, not {leaks!r}"
            )
        self.leaks = leaks
        grace = _seconds(config.getini("cancelscope_grace"), "cancelscope_grace",
                         allow_none=False)
        self.grace = 0.0 if grace is None else grace


_SETTINGS: Final = pytest.StashKey[_Settings]()
_SCOPE: Final = pytest.StashKey[CancellationScope]()
_WATCH: Final = pytest.StashKey["_LeakWatch"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cancel_timeout(seconds): fail an async test that runs longer than `seconds` of loop "
        "time, reporting every pending task and the cancelscope tree, then cancel it "
        "(cancelscope; None disables a default)",
    )
    config.stash[_SETTINGS] = _Settings(config)


def _is_async_test(item: pytest.Item) -> bool:
    if not isinstance(item, pytest.Function):
        return False
    # Hypothesis tests are run example by example through an inner function
    # the plugins replace: not supported.
    return inspect.iscoroutinefunction(item.obj) and not hasattr(item.obj, "hypothesis")


def _timeout_of(item: pytest.Item) -> float | None:
    marker = item.get_closest_marker("cancel_timeout")
    if marker is None:
        return item.config.stash[_SETTINGS].timeout
    if len(marker.args) != 1 or marker.kwargs:
        raise pytest.UsageError(
            f"{item.nodeid}: use @pytest.mark.cancel_timeout(seconds), with one number "
            "(or None to turn a default off)"
        )
    return _seconds(marker.args[0], f"{item.nodeid}: cancel_timeout", allow_none=True)


def _backend_ok(item: pytest.Function) -> bool:
    """False for anyio's non-asyncio backends (trio), where cancelscope does not apply."""
    backend = item.funcargs.get("anyio_backend")
    if backend is None:
        return True
    from_tuple: Any = backend
    name = backend if isinstance(backend, str) else from_tuple[0]
    return bool(name == "asyncio")


# --------------------------------------------------------------------------- the fixture


def _item_of(request: pytest.FixtureRequest) -> pytest.Item:
    # pytest leaves FixtureRequest.node unannotated.
    node: object = request.node  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    if not isinstance(node, pytest.Item):  # pragma: no cover - function-scoped fixtures only
        raise TypeError(f"expected a test item, got {node!r}")
    return node


@pytest.fixture
def cancel_scope(request: pytest.FixtureRequest) -> CancellationScope:
    """An open `CancellationScope` around the test's body, entered in the test's own task.

    Children spawned into it are cancelled when the test body ends and
    awaited; one still running ``cancelscope_grace`` seconds later fails the
    test, naming it. A child's failure cancels the test and fails it. Async
    fixtures cannot spawn into it (they run before the scope opens): use
    `cancelscope.testing.hosted_scope` there.
    """
    item = _item_of(request)
    if not isinstance(item, pytest.Function) or not _is_async_test(item):
        raise pytest.UsageError(
            f"the cancel_scope fixture needs an async test run by pytest-asyncio or anyio; "
            f"{item.nodeid} is not one"
        )
    if not _backend_ok(item):
        raise pytest.UsageError(
            f"the cancel_scope fixture needs the asyncio backend; {item.nodeid} runs on "
            f"{item.funcargs.get('anyio_backend')!r}"
        )
    scope = CancellationScope(name=f"cancel_scope of {item.name}")
    item.stash[_SCOPE] = scope
    return scope


# --------------------------------------------------------------------------- the test call


@final
class _Run:
    """One wrapped test call: its scope, its timeout, and what the timeout found."""

    def __init__(self, item: pytest.Function, timeout: float | None, grace: float) -> None:
        self.item = item
        self.timeout = timeout
        self.grace = grace
        self.scope = item.stash.get(_SCOPE, None)
        self.timeout_scope: CancellationScope | None = None
        self.task: asyncio.Task[Any] | None = None
        self.before: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.report: str | None = None
        self.forced = False
        self.refused: list[str] = []

    def _fire(self) -> None:
        """The timeout: write the report while every task still sits where it was stuck."""
        task = self.task
        assert task is not None
        assert self.timeout_scope is not None
        loop = task.get_loop()
        tasks = sorted(asyncio.all_tasks(loop), key=lambda t: t is not task)
        stacks = "\n\n".join(task_stack(t) for t in tasks)
        self.report = (
            f"{self.item.nodeid} did not finish within its cancel_timeout of "
            f"{self.timeout:g}s (event-loop time) and was cancelled.\n\n"
            f"Tasks pending when the timeout fired ({len(tasks)}):\n\n{stacks}\n\n"
            f"{format_tree(loop)}"
        )
        self.timeout_scope.cancel(f"cancel_timeout of {self.timeout:g}s exceeded")
        self.timer = loop.call_later(self.grace, self._force)

    def _force(self) -> None:
        """Cleanup outlived the grace period: cancel natively (through shields)."""
        self.timer = None
        task = self.task
        assert task is not None
        self.forced = True
        task.cancel("cancelscope: cancel_timeout cleanup outlived the grace period")
        for other in asyncio.all_tasks(task.get_loop()) - self.before:
            if other is not task:
                other.cancel("cancelscope: cancel_timeout cleanup outlived the grace period")

    async def __call__(
        self, fn: Callable[..., Coroutine[Any, Any, Any]], kwargs: dict[str, Any]
    ) -> None:
        loop = asyncio.get_running_loop()
        task = self.task = asyncio.current_task()
        assert task is not None
        outer: AbstractAsyncContextManager[Any] = nullcontext()
        if self.timeout is not None:
            self.before = asyncio.all_tasks(loop)
            outer = self.timeout_scope = CancellationScope(
                name="cancel_timeout", raise_on_cancel=False
            )
            self.timer = loop.call_later(self.timeout, self._fire)
        inner: AbstractAsyncContextManager[Any] = (
            self.scope if self.scope is not None else nullcontext()
        )
        failure: BaseException | None = None
        try:
            async with outer, inner:
                try:
                    await fn(**kwargs)
                finally:
                    if self.scope is not None:
                        refusing = await wind_down(self.scope, "the test ended", self.grace)
                        self._refused(refusing)
        except CancelledError as exc:
            if not (self.forced and self.report is not None):
                raise
            if _HAS_COUNTS:
                task.uncancel()
            failure = exc
        except BaseException as exc:
            if self.report is None:
                raise
            failure = exc
        finally:
            timer, self.timer = self.timer, None
            if timer is not None:
                timer.cancel()
        if self.report is not None:
            text = self.report
            if self.forced:
                text += (
                    f"\n\nThe cleanup did not finish within cancelscope_grace "
                    f"({self.grace:g}s) after the cancellation: the test's tasks were then "
                    "cancelled with task.cancel()."
                )
            if failure is not None and not isinstance(failure, CancelledError):
                text += f"\n\nAfter the cancellation the test raised {failure!r}."
            pytest.fail(text, pytrace=False)
        if self.refused:
            pytest.fail("\n\n".join(self.refused), pytrace=False)

    def _refused(self, tasks: list[asyncio.Task[Any]]) -> None:
        if not tasks:
            return
        names = ", ".join(repr(t.get_name()) for t in tasks)
        stacks = "\n\n".join(task_stack(t) for t in tasks)
        self.refused.append(
            f"{self.item.nodeid}: child task(s) {names} of the cancel_scope fixture were "
            f"still running {self.grace:g}s (cancelscope_grace) after the scope was "
            f"cancelled at the end of the test; they were then cancelled with "
            f"task.cancel().\n\n{stacks}"
        )
        for task in tasks:
            task.cancel("cancelscope: still running after the cancel_scope grace period")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    if not isinstance(item, pytest.Function):
        return (yield)
    scope = item.stash.get(_SCOPE, None)
    timeout = _timeout_of(item) if _is_async_test(item) else None
    if (scope is None and timeout is None) or not _backend_ok(item):
        return (yield)
    grace = item.config.stash[_SETTINGS].grace
    run = _Run(item, timeout, grace)
    original = item.obj

    @functools.wraps(original)
    async def wrapped(**kwargs: Any) -> None:
        await run(original, kwargs)

    item.obj = wrapped
    try:
        return (yield)
    finally:
        item.obj = original


# --------------------------------------------------------------------------- leaks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.stash[_SETTINGS].leaks == "off":
        return
    for item in items:
        if not isinstance(item, pytest.Function) or not _is_async_test(item):
            continue
        names = item.fixturenames
        if _GUARD in names:
            continue
        # After the fixtures of wider scope (pytest orders them first), so
        # their tasks are not the test's; before the function-scoped ones,
        # so the guard's teardown runs after theirs.
        defs = item._fixtureinfo.name2fixturedefs
        at = len(names)
        for i, name in enumerate(names):
            fixturedefs = defs.get(name)
            if fixturedefs and fixturedefs[-1].scope == "function":
                at = i
                break
        names.insert(at, _GUARD)


def _where(frame: FrameType | None) -> traceback.StackSummary:
    """Where a task or timer was made: the frames of the code that made it (cheap).

    Innermost first, asyncio's own frames skipped, up to the first frame of
    the machinery running the test (the event loop, pytest, the plugins).
    """
    summary = traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=32, lookup_lines=False
    )
    keep: list[traceback.FrameSummary] = []
    for entry in summary:
        if _internal(entry.filename):
            if keep:
                break
            continue
        keep.append(entry)
    keep.reverse()
    return traceback.StackSummary.from_list(keep[-10:])


_MACHINERY = ("/asyncio/", "/_pytest/", "/pluggy/", "/pytest_asyncio/", "/anyio/", "/uvloop/",
              "/looptime/")


def _internal(filename: str) -> bool:
    name = filename.replace("\\", "/")
    return name == __file__ or any(part in name for part in _MACHINERY)


@final
class _LeakWatch:
    """Records the tasks and timers made on one loop during one test, and finds leftovers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, nodeid: str, grace: float) -> None:
        self.loop = loop
        self.nodeid = nodeid
        self.grace = grace
        self.tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], traceback.StackSummary] = (
            weakref.WeakKeyDictionary()
        )
        self.timers: weakref.WeakKeyDictionary[asyncio.TimerHandle, traceback.StackSummary] = (
            weakref.WeakKeyDictionary()
        )
        # Tasks that outlive tests on purpose (anyio's runner task).
        self.excluded: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.previous = loop.get_task_factory()
        loop.set_task_factory(self._factory)
        self.call_at: Callable[..., asyncio.TimerHandle] | None = None
        try:
            original = loop.call_at
            loop.call_at = self._call_at  # type: ignore[method-assign,assignment]
            self.call_at = original
        except AttributeError:  # pragma: no cover - uvloop: timers are not tracked
            pass

    def _factory(
        self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
    ) -> asyncio.Future[Any]:
        previous = self.previous
        if previous is not None:
            task: Any = previous(loop, coro, **kwargs)
        else:
            task = asyncio.Task(coro, loop=loop, **kwargs)
        if isinstance(task, asyncio.Task):
            self.tasks[task] = _where(sys._getframe(1))
        return task  # type: ignore[no-any-return]

    def _call_at(self, when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.call_at is not None
        handle = self.call_at(when, callback, *args, **kwargs)
        self.timers[handle] = _where(sys._getframe(1))
        return handle

    def stop(self) -> None:
        loop = self.loop
        if loop.get_task_factory() == self._factory:
            loop.set_task_factory(self.previous)
        if self.call_at is not None:
            del loop.call_at

    def finish(self) -> str | None:
        """Stop watching; report, then cancel, what the test left behind (None: nothing)."""
        self.stop()
        loop = self.loop
        if loop.is_closed() or loop.is_running():  # pragma: no cover - nothing to run
            return None
        leaked = [t for t in list(self.tasks) if not t.done() and t not in self.excluded]
        parts: list[str] = []
        for task in leaked:
            created = "".join(self.tasks[task].format()).rstrip()
            parts.append(f"{task_stack(task)}\n  created at:\n{_indent(created)}")
        stubborn: list[asyncio.Task[Any]] = []
        if leaked:
            for task in leaked:
                task.cancel(f"cancelscope: leaked by {self.nodeid}")
            _, pending = loop.run_until_complete(asyncio.wait(leaked, timeout=self.grace or None))
            stubborn = list(pending)
            for task in leaked:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: the report names the task
        # After the leaked tasks unwound: their own sleeps and timeouts are gone.
        timers = [
            h for h in list(self.timers)
            if not h.cancelled() and getattr(h, "_scheduled", True)
        ]
        for handle in timers:
            made = "".join(self.timers[handle].format()).rstrip()
            parts.append(f"timer {handle!r}\n  scheduled at:\n{_indent(made)}")
            handle.cancel()
        if not parts:
            return None
        what: list[str] = []
        if leaked:
            what.append(f"{len(leaked)} task(s) still pending")
        if timers:
            what.append(f"{len(timers)} timer(s) still scheduled")
        text = (
            f"{self.nodeid} left {' and '.join(what)} after it ended; they were cancelled.\n\n"
            + "\n\n".join(parts)
        )
        if stubborn:
            names = ", ".join(repr(t.get_name()) for t in stubborn)
            text += (
                f"\n\nStill running {self.grace:g}s (cancelscope_grace) after the "
                f"cancellation: {names}."
            )
        return text


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _guard_loop(
    request: pytest.FixtureRequest,
) -> tuple[asyncio.AbstractEventLoop | None, AbstractContextManager[Any] | None, Any]:
    """The test's loop, a lease keeping it open until the guard ends, and anyio's runner."""
    for name in request.fixturenames:
        if _RUNNER.fullmatch(name):  # pytest-asyncio's runner fixture
            runner = request.getfixturevalue(name)
            return runner.get_loop(), None, None
    if "anyio_backend" in request.fixturenames:
        anyio_plugin: Any = importlib.import_module("anyio.pytest_plugin")
        backend = request.getfixturevalue("anyio_backend")
        name, options = anyio_plugin.extract_backend_and_options(backend)
        if name != "asyncio":
            return None, None, None
        lease: AbstractContextManager[Any] = anyio_plugin.get_runner(name, options)
        anyio_runner: Any = lease.__enter__()
        return anyio_runner.get_loop(), lease, anyio_runner
    return None, None, None


@pytest.fixture(name=_GUARD)
def _leak_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Inserted by the plugin when leak detection is on: watches one test's loop."""
    settings = request.config.stash[_SETTINGS]
    loop, lease, anyio_runner = _guard_loop(request)
    if loop is None:
        yield
        return
    item = _item_of(request)
    watch = _LeakWatch(loop, item.nodeid, settings.grace)
    item.stash[_WATCH] = watch
    try:
        yield
    finally:
        try:
            # anyio runs every test and fixture in one long-lived task.
            runner_task = getattr(anyio_runner, "_runner_task", None)
            if runner_task is not None:
                watch.excluded.add(runner_task)
            report = watch.finish()
        finally:
            del item.stash[_WATCH]
            if lease is not None:
                lease.__exit__(None, None, None)
    if report is not None:
        if settings.leaks == "error":
            pytest.fail(report, pytrace=False)
        warnings.warn(LeakWarning(report), stacklevel=1)
