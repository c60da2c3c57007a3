"""Structured cancellation for asyncio: nested cancellation scopes that own their tasks."""

from ._compose import first_success as first_success
from ._compose import gather as gather
from ._compose import race as race
from ._dump import dump_tree as dump_tree
from ._dump import format_tree as format_tree
from ._exceptions import CancelledFailure as CancelledFailure
from ._exceptions import TimeoutFailure as TimeoutFailure
from ._exceptions import is_cancellation as is_cancellation
from ._once import cancel_once as cancel_once
from ._retry import retryable as retryable
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
from ._threads import current_token as current_token
from ._threads import to_thread as to_thread
from ._token import CancelToken as CancelToken

__all__ = [
    "CancelToken",
    "CancellationScope",
    "CancelledFailure",
    "TaskHandle",
    "TimeoutFailure",
    "cancel_once",
    "cancellable",
    "current_deadline",
    "current_token",
    "dump_tree",
    "first_success",
    "format_tree",
    "gather",
    "is_cancellation",
    "move_on_after",
    "move_on_at",
    "non_cancellable",
    "race",
    "retryable",
    "run",
    "shutdown_on_signals",
    "to_thread",
    "with_deadline",
    "with_timeout",
]

# Tracebacks and reprs read `cancelscope.X`, not the private module.
def _set_public_module() -> None:
    namespace = globals()
    for name in __all__:
        namespace[name].__module__ = "cancelscope"


_set_public_module()
del _set_public_module
