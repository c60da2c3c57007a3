"""Helpers for tests (and fixtures) that hold cancellation scopes.

`hosted_scope` opens a scope in a task of its own, so it can be entered in one
task and left in another: an async fixture's setup and teardown run in
different tasks under pytest-asyncio (pytest-asyncio#1191), and a plain
``async with CancellationScope()`` around a fixture's ``yield`` then fails
with "must exit in the task that entered it".
"""

from __future__ import annotations

import asyncio
from asyncio import CancelledError
from types import TracebackType
from typing import Any, final

from ._scope import CancellationScope

__all__ = ["hosted_scope"]


async def wind_down(scope: CancellationScope, reason: str, grace: float) -> list[asyncio.Task[Any]]:
    """Cancel ``scope`` (in its host task, inside it) and wait up to ``grace`` for its children.

    Returns the tasks of the children still running after ``grace``. The body
    of ``scope`` is cancelled too, so the caller must return from the body
    without awaiting afterwards: the scope then exits normally (SPEC 7.5)
    once its children are done.
    """
    scope.cancel(reason)
    x = scope._x
    children = x.children if x is not None else None
    if not children:
        return []
    # The host is inside a cancelled scope now: wait in a shield, which a
    # deadline of its own ends silently.
    async with CancellationScope(cancellable=False, timeout=grace, raise_on_cancel=False):
        while children:
            handle = next(iter(children))
            try:
                await handle
            except CancelledError:
                raise
            except BaseException:  # reported by the scope's exit
                pass
    return [
        task
        for handle in list(children)
        if (task := handle._scope._task) is not None
    ]


@final
class hosted_scope:  # lower case: used like a function, `async with hosted_scope():`
    """A `CancellationScope` held by a task of its own, so any task may enter and leave it.

    ``async with hosted_scope(name="server") as scope:`` starts a small host
    task that enters a new scope (the keyword arguments are
    `CancellationScope`'s) and hands it back; ``scope.spawn(...)`` works from
    any task while it is open. Leaving the ``async with``, from the same task
    or another one, cancels the scope's children, waits for them and raises
    what the scope raised (an exception group of child failures, or the
    `CancelledFailure` of a timeout). Use it in async fixtures whose setup and
    teardown run in different tasks::

        @pytest_asyncio.fixture
        async def server():
            async with hosted_scope(name="server") as scope:
                scope.spawn(serve)
                yield scope

    Code running in the test's own task is not inside the hosted scope:
    ``CancellationScope.current()`` is not it, and cancelling it does not
    cancel the test, only the children spawned into it.
    """

    __slots__ = ("_host", "_release", "_scope")

    def __init__(
        self,
        *,
        cancellable: bool = True,
        timeout: float | None = None,
        deadline: float | None = None,
        name: str | None = None,
    ) -> None:
        self._scope = CancellationScope(
            cancellable=cancellable, timeout=timeout, deadline=deadline, name=name
        )
        self._host: asyncio.Task[None] | None = None
        self._release: asyncio.Future[None] | None = None

    async def _run(self, entered: asyncio.Future[None], release: asyncio.Future[None]) -> None:
        scope = self._scope
        async with scope:
            entered.set_result(None)
            await release
            reason = "the hosted scope was left"
            # Returning without an await after cancel() exits normally once
            # the children are done (SPEC 7.5).
            scope.cancel(reason)

    async def __aenter__(self) -> CancellationScope:
        if self._host is not None:
            raise RuntimeError("a hosted_scope can be entered only once; create a new one")
        loop = asyncio.get_running_loop()
        entered: asyncio.Future[None] = loop.create_future()
        self._release = loop.create_future()
        label = self._scope.name or "unnamed"
        host = self._host = loop.create_task(
            self._run(entered, self._release), name=f"cancelscope host of scope {label!r}"
        )
        try:
            await asyncio.wait([entered, host], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            await self._leave()
            raise
        if host.done():
            host.result()  # entry failed (a misuse): raise why
        return self._scope

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._leave()

    async def _leave(self) -> None:
        release, host = self._release, self._host
        assert release is not None
        assert host is not None
        if not release.done():
            release.set_result(None)
        # The host must finish even if this task is cancelled meanwhile:
        # otherwise children would outlive the scope's user.
        try:
            await asyncio.shield(host)
        except CancelledError:
            if host.done() and host.cancelled():
                raise
            # This task was cancelled: still wait for the host, then go on.
            await asyncio.wait([host])
            if not host.cancelled():
                host.exception()  # retrieved: no "never retrieved" warning
            raise
        host.result()


hosted_scope.__module__ = "cancelscope.testing"
