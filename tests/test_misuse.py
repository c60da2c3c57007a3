"""SPEC §9, bad input and misuse: the right error at once, and nothing left behind.

"Nothing left behind" means: no new task (``asyncio.all_tasks()`` unchanged), no timer still
scheduled on the loop, no "coroutine was never awaited" warning, and ``current()`` unchanged.
"""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import cancelscope as cs

from ._helpers import current, live_timers, no_unawaited_coroutine_warning, run_on_private_loop


async def _child() -> str:
    await asyncio.sleep(0)
    return "child"


async def _child_with_arg(value: int) -> int:
    await asyncio.sleep(0)
    return value


@contextmanager
def _nothing_left_behind() -> Iterator[None]:
    """No task, no timer and no un-awaited coroutine survive the block; current() unchanged."""
    tasks_before = asyncio.all_tasks()
    timers_before = live_timers()
    scope_before = current()
    with no_unawaited_coroutine_warning():
        yield
    assert asyncio.all_tasks() == tasks_before
    assert live_timers() == timers_before
    assert current() is scope_before


# --- spawn: TypeError ------------------------------------------------------------------------


async def _agen() -> AsyncIterator[int]:
    yield 1


def _returns_int() -> int:
    return 1


def _generator() -> Iterator[int]:
    yield 1


def _returns_future() -> asyncio.Future[int]:
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.set_result(1)
    return future


_NOT_SPAWNABLE: list[Any] = [
    pytest.param(lambda: (42, ()), id="int"),
    pytest.param(lambda: (None, ()), id="None"),
    pytest.param(lambda: ("_child", ()), id="str"),
    pytest.param(lambda: (_agen, ()), id="async-generator-function"),
    pytest.param(lambda: (_generator, ()), id="generator-function"),
    pytest.param(lambda: (_generator(), ()), id="generator-object"),
    pytest.param(lambda: (_returns_int, ()), id="function-returning-int"),
    pytest.param(lambda: (_returns_future, ()), id="function-returning-future"),
    pytest.param(lambda: (_returns_future(), ()), id="future-object"),
    pytest.param(lambda: (_child(), (1,)), id="coroutine-object-with-args"),
]


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("make", _NOT_SPAWNABLE)
async def test_spawn_rejects_what_is_not_a_coroutine_function_or_object(
    make: Callable[[], tuple[Any, tuple[Any, ...]]],
) -> None:
    """spawn() raises TypeError at once for anything else, and leaves nothing behind."""
    async with cs.cancellable(name="owner") as scope:
        with _nothing_left_behind():
            fn, args = make()
            with pytest.raises(TypeError, match=r"(?i)coroutine"):
                scope.spawn(fn, *args)
            del fn, args
        # The scope is unharmed: it still spawns and exits normally.
        handle = scope.spawn(_child)
    assert handle.result() == "child"
    assert not scope.cancel_called


@pytest.mark.asyncio
async def test_spawn_with_wrong_arguments_raises_type_error_and_leaves_nothing() -> None:
    """spawn(fn, *bad_args) raises TypeError at once and starts nothing."""
    async with cs.cancellable() as scope:
        with _nothing_left_behind(), pytest.raises(TypeError):
            scope.spawn(_child_with_arg, 1, 2)
    assert not scope.cancel_called


# --- spawn: RuntimeError outside the scope's lifetime ----------------------------------------


def _by_function() -> tuple[Any, tuple[Any, ...]]:
    return _child, ()


def _by_coroutine() -> tuple[Any, tuple[Any, ...]]:
    return _child(), ()


_SPAWN_FORMS = [
    pytest.param(_by_function, id="function"),
    pytest.param(_by_coroutine, id="coroutine-object"),
]


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("make", _SPAWN_FORMS)
async def test_spawn_before_entry_raises_and_leaves_nothing(
    make: Callable[[], tuple[Any, tuple[Any, ...]]],
) -> None:
    """Spawning into a scope never entered raises RuntimeError; no task, no warning."""
    scope = cs.cancellable(name="not-yet")
    with _nothing_left_behind():
        fn, args = make()
        with pytest.raises(RuntimeError):
            scope.spawn(fn, *args)
        del fn, args
    # The refused spawn did not use the scope up.
    async with scope:
        handle = scope.spawn(_child)
    assert handle.result() == "child"


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("make", _SPAWN_FORMS)
async def test_spawn_after_exit_raises_and_leaves_nothing(
    make: Callable[[], tuple[Any, tuple[Any, ...]]],
) -> None:
    """Spawning into a finished scope raises RuntimeError; no task, no warning."""
    async with cs.cancellable(name="finished") as scope:
        pass
    with _nothing_left_behind():
        fn, args = make()
        with pytest.raises(RuntimeError):
            scope.spawn(fn, *args)
        del fn, args


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_spawn_from_a_child_after_the_scope_finished_raises() -> None:
    """A handle on a finished scope kept by an outside task cannot spawn into it."""
    finished = cs.cancellable(name="finished")
    async with finished:
        pass

    async def latecomer() -> None:
        finished.spawn(_child)

    with _nothing_left_behind(), pytest.raises(RuntimeError):
        await asyncio.create_task(latecomer())


# --- run and the fn forms --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_rejects_a_non_callable_at_the_call() -> None:
    """scope.run(non_callable) raises TypeError at the call, before any await."""
    scope = cs.cancellable(name="runner")
    with _nothing_left_behind():
        with pytest.raises(TypeError):
            scope.run(42)  # type: ignore[arg-type,unused-coroutine]
        coro = _child()
        try:
            with pytest.raises(TypeError):
                scope.run(coro)  # type: ignore[arg-type,unused-coroutine]
        finally:
            coro.close()
    assert not scope.active
    # The refused call did not use the scope up.
    assert await scope.run(_child) == "child"


@pytest.mark.asyncio
async def test_run_rejects_a_function_returning_a_non_awaitable() -> None:
    """scope.run(fn) with fn returning a non-awaitable raises TypeError; nothing is left."""
    scope = cs.cancellable(name="runner")
    with _nothing_left_behind(), pytest.raises(TypeError):
        await scope.run(_returns_int)  # type: ignore[arg-type]
    assert not scope.active


_FN_FORMS: list[Any] = [
    pytest.param(lambda fn: cs.cancellable(fn), id="cancellable"),
    pytest.param(lambda fn: cs.non_cancellable(fn), id="non_cancellable"),
    pytest.param(lambda fn: cs.with_timeout(10, fn), id="with_timeout"),
    pytest.param(lambda fn: cs.with_deadline(10, fn), id="with_deadline"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("form", _FN_FORMS)
async def test_fn_forms_reject_a_non_callable(form: Callable[[Any], Any]) -> None:
    """cancellable(42) and friends raise TypeError and leave nothing behind."""
    with _nothing_left_behind(), pytest.raises(TypeError):
        await form(42)


@pytest.mark.asyncio
async def test_running_an_active_scope_raises() -> None:
    """scope.run() on the scope the caller is inside raises RuntimeError without calling fn."""
    calls: list[str] = []

    async def fn() -> None:
        calls.append("called")

    async with cs.cancellable(name="active") as scope:
        with _nothing_left_behind(), pytest.raises(RuntimeError):
            await scope.run(fn)
        assert scope.active
    assert calls == []


# --- ValueError at construction --------------------------------------------------------------


_NAN_CONSTRUCTORS: list[Any] = [
    pytest.param(lambda: cs.CancellationScope(timeout=math.nan), id="timeout=nan"),
    pytest.param(lambda: cs.CancellationScope(deadline=math.nan), id="deadline=nan"),
    pytest.param(lambda: cs.with_timeout(math.nan), id="with_timeout"),
    pytest.param(lambda: cs.with_deadline(math.nan), id="with_deadline"),
    pytest.param(lambda: cs.move_on_after(math.nan), id="move_on_after"),
    pytest.param(lambda: cs.move_on_at(math.nan), id="move_on_at"),
]


@pytest.mark.parametrize("construct", _NAN_CONSTRUCTORS)
def test_nan_timeout_or_deadline_raises_value_error_at_construction(
    construct: Callable[[], object],
) -> None:
    """A NaN timeout or deadline raises ValueError at construction, no loop needed."""
    with pytest.raises(ValueError, match=r"(?i)nan|not a number"):
        construct()


@pytest.mark.parametrize(
    "seconds",
    [0, 1000, -1, 1.5, 0.0, -0.0, math.inf, -math.inf, math.nan, None, True, 10**400, "1",
     complex(1, 0), 2**53 + 1],
    ids=repr,
)
def test_with_timeout_checks_its_timeout_as_the_constructor_does(seconds: Any) -> None:
    """with_timeout(s) is CancellationScope(timeout=s): same errors, same scope.

    (It checks and fills the scope in its own, shorter code: the two must not drift.)
    """

    def outcome(make: Callable[[], cs.CancellationScope]) -> tuple[object, ...]:
        try:
            scope = make()
        except Exception as exc:  # the error is the outcome compared
            return ("raised", type(exc), str(exc))
        state = (scope.deadline, scope.cancellable, scope.name, repr(scope))
        return ("made", state, scope._timeout, type(scope._timeout), scope._raises)

    by_factory = outcome(lambda: cs.with_timeout(seconds, name="n"))
    assert by_factory == outcome(lambda: cs.CancellationScope(timeout=seconds, name="n"))
    if seconds is None or seconds == math.inf:
        assert by_factory[2] is None  # no timeout at all
    elif isinstance(seconds, (int, float)) and seconds == seconds and seconds < 10**300:
        assert by_factory[2] == float(seconds)
        assert by_factory[3] is float


@pytest.mark.parametrize("args", [(False,), (True, 5.0), (True, None, None, "x", True, None)])
def test_positional_constructor_arguments_raise_type_error(args: tuple[Any, ...]) -> None:
    """CancellationScope takes keywords only (SPEC 1): a positional argument is a TypeError."""
    construct: Any = cs.CancellationScope
    with pytest.raises(TypeError, match=r"keyword arguments only"):
        construct(*args)


@pytest.mark.parametrize(
    ("timeout", "deadline"),
    [(1.0, 2.0), (0.0, 0.0), (-1.0, 100.0)],
)
def test_timeout_and_deadline_together_raise_value_error(timeout: float, deadline: float) -> None:
    """Passing both timeout and deadline raises ValueError naming both."""
    with pytest.raises(ValueError) as info:
        cs.CancellationScope(timeout=timeout, deadline=deadline)
    message = str(info.value).lower()
    assert "timeout" in message
    assert "deadline" in message


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "form",
    [
        pytest.param(lambda: cs.with_timeout(math.nan, _child), id="with_timeout"),
        pytest.param(lambda: cs.with_deadline(math.nan, _child), id="with_deadline"),
    ],
)
async def test_nan_in_the_fn_forms_raises_value_error(
    form: Callable[[], Coroutine[Any, Any, str]],
) -> None:
    """with_timeout(nan, fn) and with_deadline(nan, fn) raise ValueError; fn never runs."""
    with _nothing_left_behind(), pytest.raises(ValueError, match=r"(?i)nan|not a number"):
        await form()


# --- failed entry and exit change nothing ----------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_reentering_a_timeout_scope_schedules_no_timer() -> None:
    """A refused re-entry of a with_timeout scope leaves no timer and keeps its deadline."""
    async with cs.with_timeout(50, name="timed") as scope:
        assert scope.deadline == 50
        with _nothing_left_behind(), pytest.raises(RuntimeError):
            await scope.__aenter__()
        assert scope.deadline == 50
        assert current() is scope
    with _nothing_left_behind(), pytest.raises(RuntimeError):
        await scope.__aenter__()
    assert current() is None


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_refused_exits_leave_the_timer_in_place() -> None:
    """A refused out-of-order exit does not cancel the scope's timer: it still fires."""
    loop = asyncio.get_running_loop()
    outer = cs.with_timeout(7, name="outer")
    inner = cs.cancellable(name="inner")
    await outer.__aenter__()
    await inner.__aenter__()
    with pytest.raises(RuntimeError):
        await outer.__aexit__(None, None, None)
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await asyncio.sleep(3600)
    assert loop.time() == 7
    assert not await inner.__aexit__(type(cancelled.value), cancelled.value, None)
    with pytest.raises(cs.TimeoutFailure):
        await outer.__aexit__(type(cancelled.value), cancelled.value, None)
    assert current() is None
    assert live_timers() == set()


# --- another event loop ----------------------------------------------------------------------


def _run_in_other_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run fn() to completion on a fresh event loop in a fresh thread (errors re-raised here)."""
    escaped = run_on_private_loop(fn)
    if escaped:
        raise escaped[0]


@pytest.mark.asyncio
async def test_spawning_from_another_event_loop_raises() -> None:
    """spawn() into a scope active on another loop raises RuntimeError; nothing left there."""
    outcome: list[str] = []

    async def other_loop(scope: cs.CancellationScope) -> None:
        tasks_before = asyncio.all_tasks()
        try:
            scope.spawn(_child)
        except RuntimeError:
            outcome.append("RuntimeError")
        else:
            outcome.append("spawned")
        gc.collect()
        outcome.append("clean" if asyncio.all_tasks() == tasks_before else "task left")

    async with cs.cancellable(name="home") as scope:
        # Blocking this loop while the other one runs is the point: nothing here may move.
        _run_in_other_loop(lambda: other_loop(scope))
        assert current() is scope
    assert outcome == ["RuntimeError", "clean"]


@pytest.mark.asyncio
async def test_entering_a_scope_bound_to_another_loop_raises() -> None:
    """A scope whose cancel_requested belongs to another loop cannot be entered here."""
    scope = cs.cancellable(name="elsewhere")
    _ = scope.cancel_requested  # created lazily on this loop
    outcome: list[str] = []

    async def other_loop() -> None:
        try:
            async with scope:
                outcome.append("entered")
        except RuntimeError:
            outcome.append("RuntimeError")
        outcome.append("current is None" if current() is None else "half-entered")
        async with cs.cancellable(name="there") as there:
            for enter in ("with", "async with"):
                try:
                    if enter == "with":
                        with scope:
                            outcome.append("entered")
                    else:
                        async with scope:
                            outcome.append("entered")
                except RuntimeError:
                    outcome.append(f"{enter}: RuntimeError")
                outcome.append(f"current is there: {current() is there}")

    _run_in_other_loop(other_loop)
    assert outcome == [
        "RuntimeError",
        "current is None",
        "with: RuntimeError",
        "current is there: True",
        "async with: RuntimeError",
        "current is there: True",
    ]
    assert not scope.active
    assert scope.parent is None
    # Nothing was left behind: the scope still enters, in its own loop.
    async with cs.cancellable(name="home") as home:
        async with scope:
            assert current() is scope
            assert scope.parent is home
        assert current() is home


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_refused_entry_outside_a_task_schedules_no_timer() -> None:
    """Entering a with_timeout scope from a loop callback raises and leaves no timer."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    timers_before = live_timers()
    scope = cs.with_timeout(30, name="callback")

    def callback() -> None:
        try:
            scope.__enter__()
        except RuntimeError:
            done.set_result("RuntimeError")
        else:
            done.set_result("entered")

    loop.call_soon(callback)
    assert await done == "RuntimeError"
    assert live_timers() == timers_before
    assert not scope.active


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_sync_exit_of_an_async_entered_scope_with_children_is_refused() -> None:
    """Plain __exit__ on a scope entered with ``async with`` cannot skip waiting for children.

    SPEC 5: no child outlives its scope, whatever happens; SPEC 9: misuse raises at once.
    """
    release = asyncio.Event()
    started = asyncio.Event()

    async def child() -> str:
        started.set()
        await release.wait()
        return "finished"

    scope = cs.cancellable(name="async-entered")
    await scope.__aenter__()
    handle = scope.spawn(child)
    await started.wait()
    with pytest.raises(RuntimeError):
        scope.__exit__(None, None, None)
    assert scope.active
    assert current() is scope
    assert not handle.done()
    release.set()
    await scope.__aexit__(None, None, None)
    assert handle.result() == "finished"
    assert current() is None


def test_awaiting_a_handle_from_another_loop_raises() -> None:
    """Awaiting a TaskHandle from another event loop raises RuntimeError and leaves the child be."""
    release: list[asyncio.Event] = []
    handles: list[cs.TaskHandle[str]] = []
    errors: list[str] = []

    async def child() -> str:
        await release[0].wait()
        return "done"

    async def other_loop() -> None:
        try:
            await handles[0]
        except RuntimeError as exc:
            errors.append(str(exc))

    async def main() -> str:
        release.append(asyncio.Event())
        async with cs.cancellable() as scope:
            handles.append(scope.spawn(child))
            await asyncio.to_thread(asyncio.run, other_loop())
            release[0].set()
        return await handles[0]

    assert asyncio.run(main()) == "done"
    assert len(errors) == 1
    assert "another event loop" in errors[0]
