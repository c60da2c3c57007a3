"""The scope-tree dump (`format_tree`, `dump_tree`) and `cancelscope.testing.hosted_scope`."""

from __future__ import annotations

import asyncio
import io

import pytest

import cancelscope as cs
from cancelscope.testing import hosted_scope

from ._helpers import ExceptionGroup


async def _parked(ready: asyncio.Event, release: asyncio.Event) -> None:
    async with cs.non_cancellable(name="cleanup"):
        ready.set()
        await release.wait()


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_tree_shows_scopes_children_and_states() -> None:
    """Scopes nest under their task, children under their scope, each with its state."""
    ready, release = asyncio.Event(), asyncio.Event()
    async with cs.cancellable(name="outer") as outer:
        outer.spawn(_parked, ready, release, name="worker")
        plain = asyncio.create_task(asyncio.sleep(50), name="plain")
        await ready.wait()
        async with cs.with_timeout(5, name="inner"):
            await asyncio.sleep(1.5)
            outer.cancel("enough")
            text = cs.format_tree()
            release.set()
            async with cs.non_cancellable():
                await asyncio.sleep(0)
        plain.cancel()
    this = asyncio.current_task()
    assert this is not None
    lines = text.splitlines()
    assert lines[0] == "cancelscope tree of Looptime_UnixSelectorEventLoop (3 pending tasks)"
    assert lines[1:] == [
        f"├── task {this.get_name()!r} (test_tree_shows_scopes_children_and_states) running "
        "(this is the task calling dump_tree)",
        "│   └── scope 'outer' entered cancel_called reason='enough' children=1",
        "│       ├── scope 'inner' entered deadline=+3.5s cancelled by scope 'outer'",
        lines[4],
        "│           └── scope 'cleanup' entered non-cancellable cancel requested from outside "
        "(shielded)",
        lines[6],
    ]
    assert lines[4].startswith("│       └── child task 'worker' (_parked) at test_dump.py:")
    assert lines[4].endswith(" in _parked (in asyncio's wait), waiting on a future")
    assert lines[6].startswith("└── task 'plain' (sleep) at tasks.py:")
    assert lines[6].endswith(" in sleep, waiting on a future")


@pytest.mark.asyncio
async def test_tree_shows_what_a_task_awaits_and_unstarted_children() -> None:
    """A task awaiting another says so; a child not started yet is listed under its scope."""
    release = asyncio.Event()
    out = io.StringIO()

    async def inspector() -> None:
        cs.dump_tree(file=out)
        release.set()

    async with cs.cancellable(name="s") as scope:
        scope.spawn(asyncio.sleep, 0, name="late")
        before_start = cs.format_tree()
        await asyncio.create_task(inspector())
        await release.wait()
    text = out.getvalue()
    assert "waiting on task 'Task-" in text
    assert "child task 'late' not started yet" in before_start
    assert "_child_main" not in before_start


def test_tree_needs_a_loop() -> None:
    """Without a running loop and without loop=, format_tree says what to pass."""
    with pytest.raises(RuntimeError, match=r"pass the loop: format_tree\(loop\)"):
        cs.format_tree()


def test_tree_of_a_loop_that_is_not_running() -> None:
    """A loop passed explicitly can be dumped from outside it."""
    loop = asyncio.new_event_loop()
    try:
        assert cs.format_tree(loop) == (
            f"cancelscope tree of {type(loop).__name__} (0 pending tasks)"
        )
    finally:
        loop.close()


def test_public_names() -> None:
    """The dump functions are public and report the package as their module."""
    assert cs.dump_tree.__module__ == "cancelscope"
    assert cs.format_tree.__module__ == "cancelscope"
    assert hosted_scope.__module__ == "cancelscope.testing"


@pytest.mark.asyncio
async def test_hosted_scope_left_from_another_task() -> None:
    """A hosted scope entered in one task is left in another; its children are cancelled."""
    record: list[str] = []

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            record.append("child cancelled")

    hosted = hosted_scope(name="fixture")

    async def setup() -> cs.CancellationScope:
        return await hosted.__aenter__()

    scope = await asyncio.create_task(setup())
    handle = scope.spawn(child)
    was_active = scope.active
    await asyncio.create_task(hosted.__aexit__(None, None, None))
    assert record == ["child cancelled"]
    assert was_active
    assert not scope.active
    assert handle.cancelled()


@pytest.mark.asyncio
async def test_hosted_scope_reports_a_child_failure() -> None:
    """A child's failure cancels the hosted scope and is raised when it is left."""

    async def boom() -> None:
        raise ValueError("boom")

    async def use() -> None:
        async with hosted_scope() as scope:
            scope.spawn(boom)
            await scope.cancel_requested

    with pytest.raises(ExceptionGroup) as info:
        await use()
    assert [type(e) for e in info.value.exceptions] == [ValueError]


@pytest.mark.asyncio
@pytest.mark.virtual_clock
async def test_hosted_scope_timeout() -> None:
    """A hosted scope's own timeout surfaces as TimeoutFailure when it is left."""
    async def use() -> None:
        async with hosted_scope(timeout=2, name="t") as scope:
            await scope.cancel_requested

    with pytest.raises(cs.TimeoutFailure):
        await use()
    assert asyncio.get_running_loop().time() == 2


@pytest.mark.asyncio
async def test_hosted_scope_enters_once() -> None:
    """Entering one hosted_scope twice is refused and leaves the first one working."""
    hosted = hosted_scope()
    async with hosted:
        with pytest.raises(RuntimeError, match="only once"):
            await hosted.__aenter__()
