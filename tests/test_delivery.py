"""SPEC 4: level-triggered delivery, shields, the cancel message, and no busy waiting."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import anyio
import pytest

import cancelscope as cs

from ._helpers import TaskGroup, cancelling, forever, forever_noting_cancel, requires_311


class _CountingDeque(collections.deque[Any]):
    """The loop's ready queue, counting every callback scheduled on it."""

    def __init__(self, items: collections.deque[Any]) -> None:
        super().__init__(items)
        self.scheduled = 0

    def append(self, item: Any) -> None:
        self.scheduled += 1
        super().append(item)


def _require_ready_queue() -> None:
    """Skip the test (before it starts any task) on loops whose ready queue is hidden."""
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    if not isinstance(ready, collections.deque):
        pytest.skip("this loop has no observable ready queue (uvloop)")


@contextlib.contextmanager
def _count_callbacks() -> Iterator[_CountingDeque]:
    """Count the callbacks the running loop schedules while the block runs.

    Every callback asyncio runs (a task step, a future's done-callback, a
    call_soon) passes through the loop's ready queue, so the count is exact.
    """
    loop = asyncio.get_running_loop()
    ready = loop._ready  # type: ignore[attr-defined]
    counting = _CountingDeque(ready)
    loop._ready = counting  # type: ignore[attr-defined]
    try:
        yield counting
    finally:
        loop._ready = collections.deque(counting)  # type: ignore[attr-defined]


async def _idle_iterations(n: int) -> int:
    """Let the loop run n iterations; return how many callbacks it scheduled meanwhile.

    The test task's own n steps account for exactly n: anything above that is
    work done on somebody else's behalf.
    """
    with _count_callbacks() as counting:
        for _ in range(n):
            await asyncio.sleep(0)
    return counting.scheduled


async def _idle_callbacks_while_winding_down(
    scope: cs.CancellationScope,
    host: asyncio.Task[None],
    winding: asyncio.Event,
    release: asyncio.Event,
    *,
    turns_before_cancel: int = 2,
) -> int:
    """Cancel ``scope`` and count the loop's callbacks while its host waits on a slow wind-down.

    Lets the host task run ``turns_before_cancel`` steps, cancels the scope, waits for
    ``winding`` and three more turns, counts ten idle iterations, then sets ``release`` and
    awaits the host.  Returns the count: exactly 10 means nothing spun.
    """
    for _ in range(turns_before_cancel):
        await asyncio.sleep(0)
    scope.cancel()
    await winding.wait()
    for _ in range(3):
        await asyncio.sleep(0)
    spent = await _idle_iterations(10)
    release.set()
    await host
    return spent


# --------------------------------------------------------------------------- level-triggered


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_catching_does_not_end_cancellation() -> None:
    """Inside a cancelled scope every suspension point raises CancelledError again."""
    record: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with cs.cancellable() as scope:
            scope.cancel()
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                record.append("sleep(0)")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                record.append("Event.wait")
            try:
                await loop.create_future()
            except asyncio.CancelledError:
                record.append("future")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                record.append("sleep(3600)")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.CancelledFailure:
        record.append("failure")
    assert record == ["sleep(0)", "Event.wait", "future", "sleep(3600)", "failure"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_every_suspension_point_raises() -> None:
    """A body catching CancelledError in a loop gets one at every one of its awaits."""
    caught = 0
    try:
        async with cs.cancellable() as scope:
            scope.cancel()
            for _ in range(20):
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    caught += 1
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        caught += 100
    assert caught == 120


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_from_another_task_redelivers() -> None:
    """A request from another task keeps interrupting the host until it leaves the scope."""
    record: list[str] = []
    entered = asyncio.Event()

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope:
                entered.set()
                for _ in range(3):
                    try:
                        await forever()
                    except asyncio.CancelledError:
                        record.append("caught")
                await forever()
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    await entered.wait()
    scope.cancel("go")
    await task
    assert record == ["caught", "caught", "caught", "failure go"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_swallowing_inner_scope_returns_to_cancelled_outer() -> None:
    """An inner scope whose body swallows the outer request exits; the next await raises again."""
    record: list[str] = []
    try:
        async with cs.cancellable() as outer:
            async with cs.cancellable():
                outer.cancel()
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    record.append("inner swallowed")
            record.append("back in outer")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.CancelledFailure:
        record.append("outer failure")
    assert record == ["inner swallowed", "back in outer", "outer failure"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_no_delivery_after_leaving_cancelled_scope() -> None:
    """Once the task has left every cancelled scope, its awaits are no longer interrupted."""
    record: list[str] = []
    async with cs.cancellable() as outer:
        try:
            async with cs.cancellable() as inner:
                inner.cancel()
                await asyncio.sleep(0)
        except cs.CancelledFailure:
            record.append("inner failure")
        await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.sleep(0), 10)
        record.append("outer goes on")
    await asyncio.sleep(0)
    record.append("after")
    assert record == ["inner failure", "outer goes on", "after"]
    assert outer.cancel_called is False


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_level_triggered_in_child_task() -> None:
    """A spawned child of a cancelled scope also gets CancelledError at every await."""
    record: list[str] = []
    started = asyncio.Event()

    async def child() -> None:
        started.set()
        for _ in range(3):
            try:
                await forever()
            except asyncio.CancelledError:
                record.append("child caught")
        await forever()

    try:
        async with cs.cancellable() as scope:
            handle = scope.spawn(child)
            await started.wait()
            scope.cancel()
            await forever()
    except cs.CancelledFailure:
        record.append("failure")
    assert record == ["child caught", "child caught", "child caught", "failure"]
    assert handle.done()


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_delivered_at_next_suspension_point_not_before() -> None:
    """A request made while the host runs arrives at its next suspension point, not earlier."""
    record: list[str] = []
    try:
        async with cs.cancellable() as scope:
            scope.cancel()
            record.append("still running")
            record.append("no await yet")
            await asyncio.sleep(0)
            record.append("not reached")
    except cs.CancelledFailure:
        record.append("failure")
    assert record == ["still running", "no await yet", "failure"]


# --------------------------------------------------------------------------- shields


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_shield_body_runs_then_cancelled_right_after() -> None:
    """A shield's body is not interrupted; the cancellation arrives right after leaving it."""
    record: list[str] = []
    shielded = asyncio.Event()
    release = asyncio.Event()

    async def host(outer: cs.CancellationScope) -> None:
        try:
            async with outer:
                async with cs.non_cancellable():
                    shielded.set()
                    await release.wait()
                    for _ in range(3):
                        await asyncio.sleep(0)
                    record.append("shield body finished")
                record.append("left shield")
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    record.append("cancelled at first await after shield")
                    raise
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    outer = cs.cancellable()
    task = asyncio.create_task(host(outer))
    await shielded.wait()
    outer.cancel("stop")
    for _ in range(3):
        await asyncio.sleep(0)
    record.append("released")
    release.set()
    await task
    assert record == [
        "released",
        "shield body finished",
        "left shield",
        "cancelled at first await after shield",
        "failure stop",
    ]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_shield_entered_after_cancel_is_not_interrupted() -> None:
    """A shield entered inside an already-cancelled scope runs its awaits uninterrupted."""
    record: list[str] = []
    try:
        async with cs.cancellable() as outer:
            outer.cancel()
            async with cs.non_cancellable():
                for _ in range(3):
                    await asyncio.sleep(0)
                await asyncio.wait_for(asyncio.sleep(0), 10)
                record.append("shield ran")
            await asyncio.sleep(0)
    except cs.CancelledFailure:
        record.append("failure")
    assert record == ["shield ran", "failure"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancel_on_non_cancellable_cancels_its_own_body() -> None:
    """cancel() on a non-cancellable scope interrupts that scope's own body (trio-style)."""
    record: list[str] = []
    try:
        async with cs.non_cancellable(name="shield") as shield:
            shield.cancel("own")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                record.append("body cancelled")
                raise
    except cs.CancelledFailure as failure:
        record.append(f"failure {failure.reason} {failure.scope is shield}")
    assert record == ["body cancelled", "failure own True"]
    assert shield.cancelled_caught is True


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_native_cancel_interrupts_non_cancellable() -> None:
    """task.cancel() still interrupts a non_cancellable body and passes through it (documented)."""
    record: list[str] = []
    shielded = asyncio.Event()
    scopes: list[cs.CancellationScope] = []

    async def host() -> None:
        async with cs.non_cancellable() as shield:
            scopes.append(shield)
            shielded.set()
            try:
                await forever()
            except asyncio.CancelledError as err:
                record.append(f"shield body got {err.args}")
                raise

    task = asyncio.create_task(host())
    await shielded.wait()
    task.cancel("native")
    try:
        await task
    except asyncio.CancelledError:
        record.append("task cancelled")
    assert record == ["shield body got ('native',)", "task cancelled"]
    assert task.cancelled()
    assert scopes[0].cancelled_caught is False


# --------------------------------------------------------------------------- the message


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_error_message_names_scope_and_reason() -> None:
    """The delivered CancelledError's message names the cancelling scope and the reason."""
    messages: list[str] = []
    with contextlib.suppress(cs.CancelledFailure):
        async with cs.cancellable(name="worker-pool") as scope:
            scope.cancel("shutting down")
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError as err:
                messages.append(str(err))
                raise
    [message] = messages
    assert "worker-pool" in message
    assert "shutting down" in message


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_cancelled_error_message_names_origin_scope() -> None:
    """In a nested scope the message names the scope where the request originated."""
    messages: list[str] = []
    with contextlib.suppress(cs.CancelledFailure):
        async with cs.cancellable(name="origin") as outer, cs.cancellable(name="bystander"):
            outer.cancel("reason-x")
            try:
                await forever()
            except asyncio.CancelledError as err:
                messages.append(str(err))
                raise
    [message] = messages
    assert "origin" in message
    assert "reason-x" in message
    assert "bystander" not in message


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_cancelled_error_message_for_deadline() -> None:
    """A deadline's CancelledError names the scope and says the deadline was exceeded."""
    messages: list[str] = []
    with contextlib.suppress(cs.TimeoutFailure):
        async with cs.with_timeout(1, name="fetch"):
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError as err:
                messages.append(str(err))
                raise
    [message] = messages
    assert "fetch" in message
    assert "deadline exceeded" in message


# --------------------------------------------------------------------------- no busy waiting


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_counting_helper_sees_only_own_steps() -> None:
    """Sanity check of the callback counter: an idle loop schedules only the test's own steps."""
    _require_ready_queue()
    assert await _idle_iterations(10) == 10


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_no_busy_waiting_in_shield() -> None:
    """A cancelled task waiting inside a shield costs no callbacks at all."""
    _require_ready_queue()
    shielded = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def host(outer: cs.CancellationScope) -> None:
        try:
            async with outer:
                async with cs.non_cancellable():
                    shielded.set()
                    await release.wait()
                await asyncio.sleep(0)
        except cs.CancelledFailure:
            record.append("failure")

    outer = cs.cancellable()
    task = asyncio.create_task(host(outer))
    await shielded.wait()
    outer.cancel()
    await asyncio.sleep(0)
    spent = await _idle_iterations(10)
    release.set()
    await task
    assert spent == 10
    assert record == ["failure"]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_no_busy_waiting_while_child_winds_down() -> None:
    """While a cancelled child winds down slowly, the host waiting at the exit does not spin."""
    _require_ready_queue()
    winding = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def child() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            async with cs.non_cancellable():
                winding.set()
                await release.wait()
            record.append("child wound down")
            raise

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope:
                scope.spawn(child)
                await forever()
        except cs.CancelledFailure:
            record.append("host failure")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    spent = await _idle_callbacks_while_winding_down(
        scope, task, winding, release, turns_before_cancel=1
    )
    assert spent == 10
    assert record == ["child wound down", "host failure"]


async def _wind_down_slowly(
    winding: asyncio.Event, release: asyncio.Event, record: list[str]
) -> None:
    """Wait forever; once cancelled, set ``winding`` and finish only after ``release``."""
    try:
        await forever()
    except asyncio.CancelledError:
        winding.set()
        await release.wait()
        record.append("worker wound down")
        raise


WorkerAwaiter = Callable[[Coroutine[Any, Any, None]], Awaitable[object]]


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize(
    "await_worker",
    [
        pytest.param(lambda work: asyncio.create_task(work), id="plain-task"),
        pytest.param(lambda work: asyncio.gather(work), id="gather"),
    ],
)
async def test_no_busy_waiting_awaiting_work_winding_down(await_worker: WorkerAwaiter) -> None:
    """A cancelled host awaiting work that winds down slowly does not spin.

    The work is a plain task (anyio#1111) or asyncio.gather of it.
    """
    _require_ready_queue()
    winding = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope:
                await await_worker(_wind_down_slowly(winding, release, record))
        except cs.CancelledFailure:
            record.append("host failure")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    spent = await _idle_callbacks_while_winding_down(scope, task, winding, release)
    assert spent == 10
    assert record == ["worker wound down", "host failure"]


@requires_311
@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("body_waits", [True, False], ids=["body-waits", "body-ended"])
async def test_no_busy_waiting_in_taskgroup_exit(body_waits: bool) -> None:
    """A host inside asyncio.TaskGroup's exit, waiting for a child winding down, does not spin.

    Whether the first delivery reaches the body (which then goes on into the exit) or,
    the body having ended, goes straight into the exit where the host already waits.
    """
    _require_ready_queue()
    winding = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope, TaskGroup() as tg:
                tg.create_task(_wind_down_slowly(winding, release, record))
                if body_waits:
                    await forever()
        except cs.CancelledFailure:
            record.append("host failure")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    spent = await _idle_callbacks_while_winding_down(scope, task, winding, release)
    assert record == ["worker wound down", "host failure"]
    assert spent == 10
    assert cancelling(task) == 0


@requires_311
@pytest.mark.asyncio
async def test_finished_taskgroup_exit_is_not_kept_alive() -> None:
    """The task-group exit a delivery went into is not held once its scope has exited."""
    entered = asyncio.Event()
    exits: list[weakref.ref[object]] = []
    record: list[str] = []

    async def host(scope: cs.CancellationScope) -> None:
        async with scope, TaskGroup() as tg:
            tg.create_task(forever())
            entered.set()
        record.append("not reached")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    await entered.wait()  # the host went on into the group's exit, and waits there
    coro: Any = task.get_coro()
    while coro is not None and coro.cr_code is not TaskGroup.__aexit__.__code__:
        coro = coro.cr_await
    assert coro is not None, "the host should be waiting in TaskGroup.__aexit__"
    exits.append(weakref.ref(coro))
    del coro
    scope.cancel("stop")
    with pytest.raises(cs.CancelledFailure):
        await task
    gc.collect()
    assert record == []
    assert exits[0]() is None


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_no_busy_waiting_in_anyio_task_group_exit() -> None:
    """A host inside an anyio task group's exit, waiting for a child winding down, does not spin."""
    _require_ready_queue()
    winding = asyncio.Event()
    release = asyncio.Event()
    record: list[str] = []

    async def worker() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            winding.set()
            with anyio.CancelScope(shield=True):
                await release.wait()
            record.append("worker wound down")
            raise

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope, anyio.create_task_group() as tg:
                tg.start_soon(worker)
                await forever()
        except cs.CancelledFailure:
            record.append("host failure")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    spent = await _idle_callbacks_while_winding_down(scope, task, winding, release)
    assert record == ["worker wound down", "host failure"]
    assert spent == 10


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_gather_work_gets_one_shot_cancellation() -> None:
    """Work run by asyncio.gather gets asyncio's one-shot cancellation (documented reach)."""
    record: list[str] = []
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await forever()
        except asyncio.CancelledError:
            record.append("work cancelled once")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        record.append("work cleaned up uninterrupted")
        return "work result"

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope:
                await asyncio.gather(work())
        except cs.CancelledFailure:
            record.append("host failure")

    scope = cs.cancellable()
    task = asyncio.create_task(host(scope))
    await started.wait()
    scope.cancel()
    await task
    assert record == ["work cancelled once", "work cleaned up uninterrupted", "host failure"]


# A guard that turns a hang into a failure; on the virtual clock it costs no real time.
HANG_GUARD = 3600


async def _guarded(coro: Coroutine[Any, Any, None], record: list[str]) -> None:
    try:
        await asyncio.wait_for(coro, HANG_GUARD)
    except asyncio.TimeoutError:
        record.append("hung: the guard fired")


async def _asyncio_task_group_of_one(record: list[str]) -> None:
    """Run an asyncio.TaskGroup with one worker that notes its cancellation."""
    async with TaskGroup() as tg:
        tg.create_task(forever_noting_cancel(record, "worker cancelled"))


async def _anyio_task_group_of_one(record: list[str]) -> None:
    """Run an anyio task group with one worker that notes its cancellation."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(forever_noting_cancel, record, "worker cancelled")


@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
@pytest.mark.parametrize(
    "task_group_of_one",
    [
        pytest.param(_asyncio_task_group_of_one, marks=requires_311, id="asyncio.TaskGroup"),
        pytest.param(_anyio_task_group_of_one, id="anyio"),
    ],
)
async def test_task_group_exit_cancelled_after_body_swallowed_one(
    task_group_of_one: Callable[[list[str]], Awaitable[None]],
) -> None:
    """A task group entered in a cancelled scope after the body swallowed a delivery is cancelled.

    Both an asyncio.TaskGroup and an anyio task group.
    """
    record: list[str] = []

    async def host() -> None:
        try:
            async with cs.cancellable() as scope:
                scope.cancel("stop")
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    record.append("body swallowed one")
                await task_group_of_one(record)
                record.append("task group exited normally")
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    await _guarded(host(), record)
    assert record == ["body swallowed one", "worker cancelled", "failure stop"]


@requires_311
@pytest.mark.asyncio
@pytest.mark.virtual_clock
@pytest.mark.all_loops
async def test_taskgroup_exit_cancelled_after_swallow_inside_its_body() -> None:
    """A delivery swallowed inside a TaskGroup body does not exempt the TaskGroup's exit."""
    record: list[str] = []

    async def host(scope: cs.CancellationScope) -> None:
        try:
            async with scope, TaskGroup() as tg:
                tg.create_task(forever_noting_cancel(record, "worker cancelled"))
                try:
                    await forever()
                except asyncio.CancelledError:
                    record.append("body swallowed one")
        except cs.CancelledFailure as failure:
            record.append(f"failure {failure.reason}")

    scope = cs.cancellable()
    task = asyncio.create_task(_guarded(host(scope), record))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    scope.cancel("stop")
    await task
    assert record == ["body swallowed one", "worker cancelled", "failure stop"]
