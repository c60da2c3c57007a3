"""A read-only picture of the live scope tree: `format_tree` and `dump_tree`.

There is no registry of scopes (that would cost on every entry). The tree is
rebuilt from the tasks of the loop: each task's state names its innermost open
scope, each scope links to its ``_parent``, and the hidden scope at the root of
a child task (`_ChildScope`) links the child to the scope it was spawned into.
Every open scope lies on its host task's chain (scopes exit LIFO in their
task), so walking every task's chain finds every open scope.
"""

from __future__ import annotations

import asyncio
import linecache
import math
import os
import re
import sys
from collections.abc import Iterable
from types import FrameType
from typing import IO, Any

from ._scope import _EXITING, CancellationScope, _get_state
from ._tasks import _child_main

_CHILD_MAIN = _child_main.__code__
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep

__all__ = ["dump_tree", "format_tree", "task_stack"]


# --------------------------------------------------------------------------- stacks


def _await_frames(task: asyncio.Task[Any]) -> tuple[list[FrameType], object | None]:
    """The frames of ``task``'s await chain, outermost first, and what the last one awaits.

    ``Task.get_stack()`` shows only the outermost frame of a suspended task;
    the ``cr_await`` chain leads to where it really waits.
    """
    frames: list[FrameType] = []
    obj: Any = task.get_coro()
    while obj is not None:
        frame: FrameType | None = None
        nxt: Any = None
        for frame_attr, await_attr in (
            ("cr_frame", "cr_await"),
            ("gi_frame", "gi_yieldfrom"),
            ("ag_frame", "ag_await"),
        ):
            if hasattr(obj, frame_attr):
                frame = getattr(obj, frame_attr)
                nxt = getattr(obj, await_attr, None)
                break
        else:
            # A future's iterator, or an awaitable without frames: the
            # future the task waits on says more.
            return frames, getattr(task, "_fut_waiter", None) or obj
        if frame is None:  # finished, or not started yet
            return frames, None
        frames.append(frame)
        obj = nxt
    waiter = getattr(task, "_fut_waiter", None)
    return frames, waiter


def _frame_line(frame: FrameType, source: bool) -> str:
    code = frame.f_code
    lineno = frame.f_lineno
    text = f'File "{code.co_filename}", line {lineno}, in {code.co_name}'
    if source:
        line = linecache.getline(code.co_filename, lineno).strip()
        if line:
            text += f"\n    {line}"
    return text


def _short_location(frame: FrameType) -> str:
    code = frame.f_code
    filename = code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{filename}:{frame.f_lineno} in {code.co_name}"


def _describe_awaited(obj: object) -> str | None:
    if obj is None:
        return None
    if isinstance(obj, asyncio.Task):
        return f"task {obj.get_name()!r}"
    if isinstance(obj, asyncio.Future):
        return "a future"
    return repr(obj) if len(repr(obj)) < 80 else type(obj).__name__


def task_stack(task: asyncio.Task[Any]) -> str:
    """Where ``task`` is suspended: its await chain as traceback lines, outermost first.

    On Python 3.14+ this is `asyncio.format_call_graph`, which also shows who
    awaits the task; before, the task's ``cr_await`` chain is walked.
    """
    fmt = getattr(asyncio, "format_call_graph", None)
    if fmt is not None:  # pragma: no cover - Python 3.14+
        return str(fmt(task)).rstrip("\n")
    frames, awaited = _await_frames(task)
    lines = [f"{_task_title(task)}:"]
    if not frames:
        lines.append("  (not started, or running right now)")
    for frame in frames:
        for part in _frame_line(frame, source=True).splitlines():
            lines.append("  " + part)
    what = _describe_awaited(awaited)
    if what is not None and frames:
        lines.append(f"  waiting on {what}")
    return "\n".join(lines)


def _task_title(task: asyncio.Task[Any]) -> str:
    coro: Any = task.get_coro()
    if getattr(coro, "cr_code", None) is _CHILD_MAIN:
        # A child's task runs the user's coroutine under _child_main: name that one.
        coro = getattr(coro, "cr_await", None) or coro
    qualname = getattr(coro, "__qualname__", None) or type(coro).__name__
    return f"task {task.get_name()!r} ({qualname})"


# --------------------------------------------------------------------------- the tree


def _sort_key(task: asyncio.Task[Any]) -> tuple[Any, ...]:
    # Task-2 before Task-10: natural order of the default names.
    parts = re.split(r"(\d+)", task.get_name())
    return tuple(int(p) if p.isdigit() else p for p in parts)


def _scope_line(scope: CancellationScope, now: float | None) -> str:
    parts = [scope._label(), scope._state.value]
    if not scope._cancellable:
        parts.append("non-cancellable")
    deadline = scope._deadline
    if deadline != math.inf:
        if now is not None:
            remaining = deadline - now
            text = f"deadline={round(remaining, 3):+g}s"
            if remaining <= 0:
                text += " (passed)"
            parts.append(text)
        else:
            parts.append(f"deadline={deadline:g}")
    x = scope._x
    own = x.own_req if x is not None else None
    if own is not None:
        reason = f" reason={own.reason!r}" if own.reason is not None else ""
        parts.append(f"cancel_called{reason}")
    elif scope._cancelled_by is not None:
        origin = scope._cancelled_by.origin
        by = origin._label() if origin is not None else "a scope"
        parts.append(f"cancelled by {by}")
    elif x is not None and x.reached_by is not None:
        parts.append("cancel requested from outside (shielded)")
    if scope._state is _EXITING:
        parts.append("waiting for its children")
    children = x.children if x is not None else None
    if children:
        parts.append(f"children={len(children)}")
    return " ".join(parts)


def _task_line(task: asyncio.Task[Any], current: asyncio.Task[Any] | None) -> str:
    text = _task_title(task)
    if task is current:
        return text + " running (this is the task calling dump_tree)"
    frames, awaited = _await_frames(task)
    if frames:
        # The deepest frame outside asyncio says where the code waits; the
        # asyncio primitive it waits in is named after it.
        mine = [f for f in frames if not f.f_code.co_filename.startswith(_ASYNCIO_DIR)]
        text += f" at {_short_location(mine[-1] if mine else frames[-1])}"
        if mine and mine[-1] is not frames[-1]:
            text += f" (in asyncio's {frames[-1].f_code.co_name})"
        what = _describe_awaited(awaited)
        if what is not None:
            text += f", waiting on {what}"
    return text


class _Tree:
    """The tree rebuilt from the tasks: scopes below their parents, tasks above their scopes."""

    def __init__(self, tasks: Iterable[asyncio.Task[Any]]) -> None:
        # Scope -> its open scopes and child tasks, in entry/spawn order.
        self.below: dict[CancellationScope, list[CancellationScope]] = {}
        # Outermost scope of each task (None: no scope) -> the task.
        self.roots: list[tuple[asyncio.Task[Any], CancellationScope | None]] = []
        self.child_tasks: set[asyncio.Task[Any]] = set()
        seen: set[CancellationScope] = set()
        for task in sorted(tasks, key=_sort_key):
            ts = _get_state(task)
            scope = ts.scope if ts is not None else None
            outermost: CancellationScope | None = None
            while scope is not None and scope not in seen:
                seen.add(scope)
                parent = scope._parent
                if scope._hidden:
                    self.child_tasks.add(task)
                    outermost = None
                    if parent is not None:
                        self.below.setdefault(parent, []).append(scope)
                    break
                outermost = scope
                if parent is not None and parent._task is task:
                    self.below.setdefault(parent, []).insert(0, scope)
                elif parent is not None:  # pragma: no cover - defensive
                    self.below.setdefault(parent, []).append(scope)
                scope = parent
            if task in self.child_tasks:
                continue
            coro: Any = task.get_coro()
            if ts is None and getattr(coro, "cr_code", None) is _CHILD_MAIN:
                continue  # a child not started yet: drawn under its scope
            self.roots.append((task, outermost))


def format_tree(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """The scopes and tasks of ``loop`` (default: the running loop) as an indented tree.

    Each task shows where it waits; each scope its state, deadline (relative to
    the loop's clock now), whether and why it was cancelled, whether it is a
    shield, and its child tasks, which are drawn below it. Tasks that never
    entered a scope are listed too. Read-only: it changes nothing. Call it in
    the loop's thread; from another thread it is a best-effort snapshot.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "format_tree() needs a running event loop; call it from async code, "
                "or pass the loop: format_tree(loop)"
            ) from None
    try:
        current = asyncio.current_task(loop)
    except RuntimeError:  # pragma: no cover - loop not running in this thread
        current = None
    now: float | None = None if loop.is_closed() else loop.time()
    tasks = asyncio.all_tasks(loop)
    tree = _Tree(tasks)
    lines = [f"cancelscope tree of {type(loop).__name__} ({len(tasks)} pending tasks)"]

    def add(text: str, prefix: str, last: bool) -> str:
        lines.append(prefix + ("└── " if last else "├── ") + text.replace("\n", " "))
        return prefix + ("    " if last else "│   ")

    def walk_scope(scope: CancellationScope, prefix: str, last: bool) -> None:
        if scope._hidden:
            task = scope._task
            handle_name = scope._name
            if task is None:  # pragma: no cover - child between creation and start
                add(f"child task {handle_name!r} not started yet", prefix, last)
                return
            inner = add("child " + _task_line(task, current), prefix, last)
        else:
            inner = add(_scope_line(scope, now), prefix, last)
        below = tree.below.get(scope, [])
        pending = _unstarted_children(scope, below)
        for i, sub in enumerate(below):
            walk_scope(sub, inner, i == len(below) - 1 and not pending)
        for i, name in enumerate(pending):
            add(f"child task {name!r} not started yet", inner, i == len(pending) - 1)

    for i, (task, outermost) in enumerate(tree.roots):
        last = i == len(tree.roots) - 1
        inner = add(_task_line(task, current), "", last)
        if outermost is not None:
            walk_scope(outermost, inner, True)
    return "\n".join(lines)


def _unstarted_children(scope: CancellationScope, below: list[CancellationScope]) -> list[str]:
    x = scope._x
    children = x.children if x is not None else None
    if not children:
        return []
    drawn = set(below)
    return [h.name for h in children if h._scope not in drawn and h._scope._task is None]


def dump_tree(loop: asyncio.AbstractEventLoop | None = None, file: IO[str] | None = None) -> None:
    """Print `format_tree` of ``loop`` (default: the running loop) to ``file`` (default stderr)."""
    text = format_tree(loop)
    print(text, file=file if file is not None else sys.stderr)


format_tree.__module__ = "cancelscope"
dump_tree.__module__ = "cancelscope"
