"""Structured cancellation for asyncio: nested cancellation scopes that own their tasks."""

from ._exceptions import CancelledFailure as CancelledFailure
from ._exceptions import TimeoutFailure as TimeoutFailure
from ._exceptions import is_cancellation as is_cancellation
from ._run import run as run
from ._run import shutdown_on_signals as shutdown_on_signals
from ._scope import CancellationScope as CancellationScope
from ._scope import cancellable as cancellable
from ._scope import current_deadline as current_deadline
from ._scope import move_on_after as move_on_after
from ._scope import move_on_at as move_on_at
from ._scope import non_cancellable as non_cancellable
from ._scope import with_deadline as with_deadline
from ._scope import with_timeout as with_timeout
from ._tasks import TaskHandle as TaskHandle

__all__ = [
    "CancellationScope",
    "CancelledFailure",
    "TaskHandle",
    "TimeoutFailure",
    "cancellable",
    "current_deadline",
    "is_cancellation",
    "move_on_after",
    "move_on_at",
    "non_cancellable",
    "run",
    "shutdown_on_signals",
    "with_deadline",
    "with_timeout",
]

for _name in ("cancellable", "current_deadline", "move_on_after", "move_on_at",
              "non_cancellable", "with_deadline", "with_timeout", "is_cancellation",
              "run", "shutdown_on_signals"):
    globals()[_name].__module__ = "cancelscope"
del _name
