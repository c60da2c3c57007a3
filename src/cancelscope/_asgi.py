"""ASGI middleware: each HTTP request in a scope that a client disconnect or a deadline cancels.

Watching for ``http.disconnect`` means calling ``receive()`` while the application is busy
elsewhere, and an ASGI ``receive`` has one consumer at a time. So one receiver task per
request (a child of the request's scope) reads every message the server delivers and hands
them to the application, in order, through a small buffer; the application's ``receive``
reads that buffer. The same technique as Starlette's ``listen_for_disconnect``, except that
body messages are kept for the application instead of dropped.

Only the ASGI protocol is used here: no framework import.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, final

from ._exceptions import CancelledFailure, TimeoutFailure
from ._scope import CancellationScope

__all__ = ["CancelOnDisconnect", "request_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the request's CancellationScope sits in the (copied) ASGI scope the application sees.
SCOPE_KEY: Final = "cancelscope.request_scope"

_DISCONNECT_REASON: Final = "client disconnected"
_TIMEOUT_BODY: Final = b"Gateway Timeout: the request's deadline passed before a response started\n"


def request_scope(asgi_scope: Scope) -> CancellationScope:
    """The `CancellationScope` that `CancelOnDisconnect` opened for this HTTP request.

    Pass the ASGI scope (``request.scope`` in Starlette). Unlike
    `CancellationScope.current()`, this also works in tasks the framework started on its own
    (a `BaseHTTPMiddleware` below ours, for instance). Raises `RuntimeError` if the request
    did not pass through `CancelOnDisconnect`.
    """
    found = asgi_scope.get(SCOPE_KEY)
    if not isinstance(found, CancellationScope):
        raise RuntimeError(
            "this request has no cancellation scope: wrap the application in "
            "cancelscope.asgi.CancelOnDisconnect (Starlette/FastAPI: "
            "app.add_middleware(CancelOnDisconnect)); only 'http' requests get one"
        )
    return found


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"timeout must be a number of seconds or None, got {value!r}")
    if math.isnan(value) or value <= 0:
        raise ValueError(
            f"timeout must be a positive number of seconds (None or math.inf for no "
            f"deadline), got {value!r}"
        )
    return None if math.isinf(value) else float(value)


# What one http.request message counts against max_body_buffer beyond its body: without
# it, empty chunks (more_body=True, an HTTP/2 client's empty DATA frames) cost nothing
# and the read-ahead queue would grow without bound.
_MESSAGE_COST = 64


def _byte_count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"max_body_buffer must be a positive number of bytes, got {value!r}")
    return value


@final
class CancelOnDisconnect:
    """Pure ASGI middleware: run each HTTP request inside its own `CancellationScope`.

    The scope (named ``"METHOD /path"``) is cancelled with reason ``"client disconnected"``
    when the server reports ``http.disconnect`` before the response is complete, so the
    handler's awaits raise `CancelledError` and its ``finally`` blocks run. The request body
    reaches the application unchanged and in order; at most ``max_body_buffer`` bytes of it
    are read ahead of the application, each message counting 64 bytes more than its body so
    that a stream of empty chunks is bounded too (past that, the server's flow control
    applies and a disconnect is noticed once the application reads on).

    With ``timeout`` (seconds), the scope gets that deadline: if it passes before the
    response has started, the client gets a ``504 Gateway Timeout``; if the response has
    started but is not complete, the `TimeoutFailure` propagates to the server, which aborts
    the connection so the client sees a truncated response rather than a short one that looks
    complete. Once the response is complete, neither a disconnect nor the deadline cancels
    anything: background work the application does afterwards runs to its end.

    Inside the application `CancellationScope.current()` is the request's scope (in the
    task that runs the application), and `request_scope(scope)` finds it from the ASGI scope.
    ``lifespan`` and ``websocket`` connections pass through untouched.
    """

    __slots__ = ("app", "max_body_buffer", "timeout")

    def __init__(
        self, app: ASGIApp, *, timeout: float | None = None, max_body_buffer: int = 65536
    ) -> None:
        if not callable(app):
            raise TypeError(
                f"CancelOnDisconnect(app) needs an ASGI application (a callable taking "
                f"scope, receive, send), got {type(app).__name__!r}"
            )
        self.app: ASGIApp = app
        """The wrapped ASGI application."""
        self.timeout: float | None = _seconds(timeout)
        """Seconds each HTTP request may take to complete its response, or None."""
        self.max_body_buffer: int = _byte_count(max_body_buffer)
        """Request-body bytes read ahead of the application, at most."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: HTTP requests get a scope, anything else passes through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _Request(self, scope, receive, send).run()


@final
class _Request:
    """The state of one HTTP request passing through `CancelOnDisconnect`."""

    __slots__ = (
        "_app_called_receive",
        "_buffered",
        "_complete",
        "_disconnected",
        "_error",
        "_expect_continue",
        "_limit",
        "_middleware",
        "_pump_done",
        "_queue",
        "_readable",
        "_reader_moved",
        "_receive",
        "_scope",
        "_send",
        "_started",
        "_trailers",
        "asgi_scope",
    )

    def __init__(
        self, middleware: CancelOnDisconnect, asgi_scope: Scope, receive: Receive, send: Send
    ) -> None:
        self._middleware = middleware
        self.asgi_scope = asgi_scope
        self._receive = receive
        self._send = send
        self._limit = middleware.max_body_buffer
        method = asgi_scope.get("method", "?")
        self._scope = CancellationScope(
            timeout=middleware.timeout, name=f"{method} {asgi_scope.get('path', '')}"
        )
        # Written by the pump only; read by the application's receive. Messages in server order.
        self._queue: deque[Message] = deque()
        # Body bytes in _queue (the read-ahead that max_body_buffer bounds).
        self._buffered = 0
        # Set by the pump when it appends or stops; the application's receive waits on it.
        self._readable = asyncio.Event()
        # Set by the application's receive whenever it is called or takes a message; the pump
        # waits on it while its read-ahead is full (or before the first read, see below).
        self._reader_moved = asyncio.Event()
        self._app_called_receive = False
        # "Expect: 100-continue": the server answers 100 at the first receive(); reading
        # ahead would send it even when the application means to reject the body unread.
        self._expect_continue = any(
            name.lower() == b"expect" and value.lower() == b"100-continue"
            for name, value in asgi_scope.get("headers", ())
        )
        self._pump_done = False
        self._error: Exception | None = None
        self._disconnected = False
        self._started = False
        self._trailers = False
        self._complete = False

    async def run(self) -> None:
        """Run the application inside the request's scope; answer a deadline with a 504."""
        scope = self._scope
        try:
            async with scope:
                pump = scope.spawn(self._pump, name="cancelscope.asgi receiver")
                try:
                    await self._middleware.app(
                        {**self.asgi_scope, SCOPE_KEY: scope}, self.receive, self.send
                    )
                finally:
                    pump.cancel()
        except TimeoutFailure as exc:
            if exc.scope is not scope:
                raise
            await self._deadline_passed(exc)
        except CancelledFailure as exc:
            if exc.scope is not scope:
                raise
            # The client went away: there is nobody to answer.

    async def _deadline_passed(self, exc: TimeoutFailure) -> None:
        if self._disconnected or self._complete:
            return
        if self._started:
            # ASGI has no "abort": an exception after the response started makes the server
            # close the connection, so the client cannot mistake the truncation for a reply.
            raise exc
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(_TIMEOUT_BODY)).encode()),
        ]
        try:
            await self._send({"type": "http.response.start", "status": 504, "headers": headers})
            await self._send({"type": "http.response.body", "body": _TIMEOUT_BODY})
        except OSError:  # ASGI 2.4 servers raise it when the client has gone meanwhile
            pass

    async def _pump(self) -> None:
        """Forward every message from the server's receive into the queue, in order."""
        try:
            if self._expect_continue:
                while not self._app_called_receive:
                    self._reader_moved.clear()
                    await self._reader_moved.wait()
            while True:
                while self._buffered >= self._limit:
                    self._reader_moved.clear()
                    await self._reader_moved.wait()
                message = await self._receive()
                kind = message.get("type")
                if kind == "http.request":
                    self._buffered += len(message.get("body", b"")) + _MESSAGE_COST
                self._queue.append(message)
                self._readable.set()
                if kind == "http.disconnect":
                    # After a complete response this is just the end of the exchange (uvicorn
                    # reports it at once then): background work must go on.
                    if not self._complete:
                        self._disconnected = True
                        self._scope.cancel(_DISCONNECT_REASON)
                    return
        except Exception as exc:  # the server's receive failed: the application sees it there
            self._error = exc
        finally:
            self._pump_done = True
            self._readable.set()

    async def receive(self) -> Message:
        """The application's receive: the server's messages, in order, from the queue."""
        self._app_called_receive = True
        self._reader_moved.set()
        queue = self._queue
        while not queue:
            if self._pump_done:
                if self._error is not None:
                    raise self._error
                # ASGI: every receive after a disconnect gets another disconnect.
                return {"type": "http.disconnect"}
            self._readable.clear()
            await self._readable.wait()
        message = queue.popleft()
        if message.get("type") == "http.request":
            self._buffered -= len(message.get("body", b"")) + _MESSAGE_COST
            self._reader_moved.set()
        return message

    async def send(self, message: Message) -> None:
        """The application's send: note when the response starts and completes, then forward."""
        kind = message.get("type")
        if kind == "http.response.start":
            self._started = True
            self._trailers = bool(message.get("trailers", False))
        elif kind in ("http.response.body", "http.response.zerocopysend"):
            if not message.get("more_body", False) and not self._trailers:
                self._response_complete()
        elif kind == "http.response.trailers":
            if not message.get("more_trailers", False):
                self._response_complete()
        elif kind == "http.response.pathsend":
            self._response_complete()
        await self._send(message)

    def _response_complete(self) -> None:
        # Set before the server sees the last message: uvicorn answers the pump's pending
        # receive with http.disconnect as soon as it does, and that must not cancel.
        self._complete = True
        self._scope.deadline = math.inf
