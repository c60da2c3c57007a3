"""CancelOnDisconnect: real uvicorn servers on loopback driven by httpx; protocol unit tests."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

import cancelscope as cs
from cancelscope.asgi import CancelOnDisconnect, request_scope
from cancelscope.fastapi import RequestScope

from ._uvicorn import serve, serve_hypercorn

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]


async def _wait(aw: Awaitable[object]) -> None:
    """Await ``aw``, failing the test (not hanging it) if it never completes."""
    await asyncio.wait_for(aw, 10)


class Work:
    """Server-side work in flight, observed through Events and a record."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.record: list[object] = []

    async def forever(self) -> None:
        """Count as in flight and wait until cancelled, recording the cancel message."""
        self.in_flight += 1
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            self.record.append(str(exc))
            raise
        finally:
            self.in_flight -= 1
            self.ended.set()


SERVERS = {"uvicorn": serve, "hypercorn": serve_hypercorn}


async def _abandon(client: httpx.AsyncClient, url: str, work: Work) -> None:
    """Start a GET, wait until the handler runs, then give up on it (closing the connection)."""
    request = asyncio.ensure_future(client.get(url))
    await _wait(work.started.wait())
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request


# --------------------------------------------------------------------------- real server


@pytest.mark.asyncio
@pytest.mark.all_loops
@pytest.mark.parametrize("server", list(SERVERS))
async def test_disconnect_cancels_plain_asgi_handler(server: str) -> None:
    """A client that gives up mid-request cancels the handler: nothing stays in flight."""
    work = Work()
    seen: list[object] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # hypercorn tries lifespan: decline it
        seen.append(cs.CancellationScope.current())
        seen.append(request_scope(scope))
        await work.forever()

    async with SERVERS[server](CancelOnDisconnect(app)) as url, httpx.AsyncClient() as client:
        await _abandon(client, url + "/slow", work)
        await _wait(work.ended.wait())
    assert work.in_flight == 0
    assert work.record == ["cancelled by scope 'GET /slow': client disconnected"]
    assert isinstance(seen[0], cs.CancellationScope)
    assert seen[0] is seen[1]
    assert seen[0].cancel_reason == "client disconnected"


@pytest.mark.asyncio
async def test_disconnect_cancels_only_that_request() -> None:
    """Abandoning one request leaves a concurrent one on another connection running to its end."""
    work = Work()
    release = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await work.forever()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"kept"})

    async with serve(CancelOnDisconnect(app)) as url, httpx.AsyncClient() as client:
        kept = asyncio.ensure_future(client.get(url + "/kept"))
        await _abandon(client, url + "/slow", work)
        await _wait(work.ended.wait())
        assert not kept.done()
        release.set()
        response = await kept
    assert response.text == "kept"
    assert work.record == ["cancelled by scope 'GET /slow': client disconnected"]


@pytest.mark.asyncio
@pytest.mark.parametrize("server", list(SERVERS))
async def test_body_arrives_complete_and_in_order(server: str) -> None:
    """A 1 MiB streamed upload reaches the handler byte for byte, then the response is sent."""
    chunks = [bytes([n]) * 16384 for n in range(64)]

    async def upload() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async def echo(request: Request) -> Response:
        body = b"".join([part async for part in request.stream()])
        return PlainTextResponse(f"{len(body)} {body == b''.join(chunks)}")

    app = Starlette(routes=[Route("/upload", echo, methods=["POST"])])
    app.add_middleware(CancelOnDisconnect)
    async with SERVERS[server](app) as url, httpx.AsyncClient() as client:
        response = await client.post(url + "/upload", content=upload())
    assert response.text == f"{64 * 16384} True"


@pytest.mark.asyncio
@pytest.mark.parametrize("server", list(SERVERS))
async def test_deadline_before_response_gives_504(server: str) -> None:
    """A handler still working when the deadline passes is cancelled; the client gets a 504."""
    work = Work()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # hypercorn tries lifespan: decline it
        assert cs.current_deadline() < math.inf
        await work.forever()

    async with (
        SERVERS[server](CancelOnDisconnect(app, timeout=0.05)) as url,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(url + "/slow")
        await _wait(work.ended.wait())
    assert response.status_code == 504
    assert "deadline" in response.text
    assert work.record == ["cancelled by scope 'GET /slow': deadline exceeded"]
    assert work.in_flight == 0


@pytest.mark.asyncio
async def test_deadline_after_response_started_aborts_connection() -> None:
    """A deadline passing mid-stream aborts the connection: the client sees a truncated body."""
    work = Work()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await work.forever()

    async with (
        serve(CancelOnDisconnect(app, timeout=0.05)) as url,
        httpx.AsyncClient() as client,
        client.stream("GET", url + "/stream") as response,
    ):
        assert response.status_code == 200
        received: list[bytes] = []

        async def read_all() -> None:
            async for part in response.aiter_raw():
                received.append(part)

        with pytest.raises(httpx.RemoteProtocolError):
            await read_all()
        await _wait(work.ended.wait())
    assert b"".join(received) == b"first"
    assert work.record == ["cancelled by scope 'GET /stream': deadline exceeded"]


@pytest.mark.asyncio
async def test_streaming_response_streams() -> None:
    """A Starlette StreamingResponse goes through whole, chunk after chunk."""

    async def numbers() -> AsyncIterator[bytes]:
        for n in range(5):
            yield f"{n}\n".encode()
            await asyncio.sleep(0)

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(numbers(), media_type="text/plain")

    app = Starlette(routes=[Route("/numbers", endpoint)])
    app.add_middleware(CancelOnDisconnect, timeout=30)
    async with serve(app) as url, httpx.AsyncClient() as client:
        response = await client.get(url + "/numbers")
    assert response.text == "0\n1\n2\n3\n4\n"


@pytest.mark.asyncio
@pytest.mark.parametrize("server", list(SERVERS))
async def test_client_leaving_a_stream_stops_its_generator(server: str) -> None:
    """A client that stops reading a stream and closes it ends the generator server-side."""
    work = Work()

    async def endless() -> AsyncIterator[bytes]:
        yield b"first\n"
        await work.forever()
        yield b"never\n"  # pragma: no cover

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(endless(), media_type="text/plain")

    app = Starlette(routes=[Route("/endless", endpoint)])
    app.add_middleware(CancelOnDisconnect)
    async with SERVERS[server](app) as url, httpx.AsyncClient() as client:
        async with client.stream("GET", url + "/endless") as response:
            async for line in response.aiter_lines():
                assert line == "first"
                break
        await _wait(work.ended.wait())
    assert work.in_flight == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("server", list(SERVERS))
async def test_background_task_after_response_is_not_cancelled(server: str) -> None:
    """After a complete response, the disconnect uvicorn reports and the deadline cancel nothing."""
    release = asyncio.Event()
    done = asyncio.Event()
    record: list[object] = []

    async def after() -> None:
        await release.wait()
        record.extend(["done", cs.current_deadline()])
        done.set()

    async def endpoint(request: Request) -> Response:
        record.append(cs.current_deadline() < math.inf)
        return PlainTextResponse("ok", background=BackgroundTask(after))

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(CancelOnDisconnect, timeout=30)
    async with SERVERS[server](app) as url, httpx.AsyncClient() as client:
        response = await client.get(url + "/")
        release.set()
        await _wait(done.wait())
    assert response.text == "ok"
    assert record == [True, "done", math.inf]


@pytest.mark.asyncio
@pytest.mark.all_loops
async def test_fastapi_dependency_and_disconnect() -> None:
    """FastAPI: RequestScope is the request's scope, and a disconnect cancels the endpoint."""
    work = Work()
    app = FastAPI()
    app.add_middleware(CancelOnDisconnect, timeout=30)

    @app.get("/info")
    async def info(scope: RequestScope) -> dict[str, object]:
        return {
            "name": scope.name,
            "current": scope is cs.CancellationScope.current(),
            "deadline": scope.deadline == cs.current_deadline() < math.inf,
        }

    @app.get("/slow")
    async def slow() -> None:
        await work.forever()

    async with serve(app) as url, httpx.AsyncClient() as client:
        response = await client.get(url + "/info")
        await _abandon(client, url + "/slow", work)
        await _wait(work.ended.wait())
    assert response.json() == {"name": "GET /info", "current": True, "deadline": True}
    assert work.record == ["cancelled by scope 'GET /slow': client disconnected"]
    assert work.in_flight == 0


@pytest.mark.asyncio
async def test_lifespan_passes_through() -> None:
    """lifespan messages reach the application through the middleware, untouched."""
    record: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                record.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        response = JSONResponse({"scope": request_scope(scope).name})
        await response(scope, receive, send)

    async with serve(CancelOnDisconnect(app), lifespan="on") as url, httpx.AsyncClient() as c:
        response = await c.get(url + "/x")
    assert response.json() == {"scope": "GET /x"}
    assert record == ["lifespan.startup", "lifespan.shutdown"]


# --------------------------------------------------------------------------- protocol units


class FakeServer:
    """An ASGI server's receive/send: hands out ``messages``, then blocks like an open client."""

    def __init__(self, *messages: Message) -> None:
        self.messages = list(messages)
        self.record: list[object] = []
        self.sent: list[Message] = []
        self.given = 0
        self.third = asyncio.Event()  # set as the third message is handed out

    async def receive(self) -> Message:
        if not self.messages:
            await asyncio.Event().wait()
        message = self.messages.pop(0)
        self.given += 1
        if self.given == 3:
            self.third.set()
        self.record.append(("server gave", message.get("body", message["type"])))
        return message

    async def send(self, message: Message) -> None:
        self.sent.append(message)


HTTP: Scope = {"type": "http", "method": "POST", "path": "/p", "headers": []}


def _body(data: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


def _reading_app(
    server: FakeServer, got: list[bytes]
) -> Callable[[Scope, Any, Any], Awaitable[None]]:
    """An application that lets the receiver read ahead, then reads the whole body into
    ``got`` (noting each read in ``server.record``) and answers 200."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await server.third.wait()  # the receiver runs concurrently: let it read ahead first
        while True:
            message = await receive()
            server.record.append(("app got", message["body"]))
            got.append(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body"})

    return app


def _most_read_ahead(server: FakeServer) -> int:
    """The most messages the server had given and the application not yet read."""
    ahead = 0
    most = 0
    for entry in server.record:
        assert isinstance(entry, tuple)
        ahead += 1 if entry[0] == "server gave" else -1
        most = max(most, ahead)
    return most


@pytest.mark.asyncio
async def test_read_ahead_of_empty_chunks_is_bounded() -> None:
    """Empty body chunks count against max_body_buffer too (64 bytes a message), so a client
    streaming them cannot grow the read-ahead queue without bound."""
    messages = [_body(b"", True) for _ in range(200)] + [_body(b"end", False)]
    server = FakeServer(*messages)
    got: list[bytes] = []
    app = _reading_app(server, got)
    await CancelOnDisconnect(app, max_body_buffer=640)(HTTP, server.receive, server.send)
    assert got == [m["body"] for m in messages]
    most = _most_read_ahead(server)
    assert most == 10  # 10 messages of 64 bytes reach the 640-byte bound


@pytest.mark.asyncio
async def test_read_ahead_is_bounded() -> None:
    """The receiver reads at most max_body_buffer bytes ahead of the application, in order."""
    parts = [bytes([n]) * 1000 for n in range(10)]
    server = FakeServer(*(_body(p, n < 9) for n, p in enumerate(parts)))
    got: list[bytes] = []
    app = _reading_app(server, got)
    await CancelOnDisconnect(app, max_body_buffer=2500)(HTTP, server.receive, server.send)
    assert got == parts
    most = _most_read_ahead(server)
    assert most == 3  # 3000 bytes read before the 2500-byte bound stopped the receiver


@pytest.mark.asyncio
async def test_disconnect_while_app_is_not_reading() -> None:
    """A disconnect cancels an application busy elsewhere; the middleware then returns quietly."""
    server = FakeServer(_body(b"x", False), {"type": "http.disconnect"})
    record: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError as exc:
            record.append(str(exc))
            raise

    await CancelOnDisconnect(app)(HTTP, server.receive, server.send)
    assert record == ["cancelled by scope 'POST /p': client disconnected"]
    assert server.sent == []


@pytest.mark.asyncio
async def test_receive_after_disconnect_keeps_saying_disconnect() -> None:
    """After the disconnect, every receive returns http.disconnect again, as ASGI requires."""
    server = FakeServer(_body(b"x", False), {"type": "http.disconnect"})
    got: list[object] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        async with cs.non_cancellable():  # keep reading despite the cancellation
            for _ in range(4):
                got.append((await receive())["type"])

    await CancelOnDisconnect(app)(HTTP, server.receive, server.send)
    assert got == ["http.request", "http.disconnect", "http.disconnect", "http.disconnect"]


@pytest.mark.asyncio
async def test_expect_100_continue_waits_for_the_application() -> None:
    """With Expect: 100-continue the server's receive is not called until the app asks."""
    server = FakeServer(_body(b"x", False))
    scope = {**HTTP, "headers": [(b"expect", b"100-continue")]}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 417})
        await send({"type": "http.response.body"})

    await CancelOnDisconnect(app)(scope, server.receive, server.send)
    assert server.record == []
    assert [m.get("status") for m in server.sent] == [417, None]


@pytest.mark.asyncio
async def test_receive_error_reaches_the_application() -> None:
    """An exception from the server's receive is raised from the application's receive."""
    record: list[object] = []

    async def broken() -> Message:
        raise OSError("socket went away")

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        with pytest.raises(OSError, match="socket went away"):
            await receive()
        record.append("raised")

    await CancelOnDisconnect(app)(HTTP, broken, FakeServer().send)
    assert record == ["raised"]


@pytest.mark.asyncio
async def test_inner_timeout_is_not_a_504() -> None:
    """A TimeoutFailure from the application's own scope propagates: it is not the request's."""
    server = FakeServer()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        async with cs.with_timeout(0, name="query"):
            await asyncio.sleep(1)

    with pytest.raises(cs.TimeoutFailure) as info:
        await CancelOnDisconnect(app, timeout=30)(HTTP, server.receive, server.send)
    assert info.value.scope is not None
    assert info.value.scope.name == "query"
    assert server.sent == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["websocket", "lifespan"])
async def test_non_http_passes_through_untouched(kind: str) -> None:
    """websocket and lifespan connections reach the app with the very same scope/receive/send."""
    server = FakeServer()
    scope: Scope = {"type": kind}
    seen: list[object] = []

    async def app(s: Scope, receive: Any, send: Any) -> None:
        seen.extend([s, receive, send, cs.CancellationScope.current()])

    await CancelOnDisconnect(app)(scope, server.receive, server.send)
    assert seen == [scope, server.receive, server.send, None]


def test_bad_arguments_raise_at_once() -> None:
    """Wrong app, timeout or buffer size raise a clear error at construction."""

    async def app(scope: Scope, receive: Any, send: Any) -> None: ...

    with pytest.raises(TypeError, match="ASGI application"):
        CancelOnDisconnect("app")  # type: ignore[arg-type]
    for bad in (0, -1, math.nan):
        with pytest.raises(ValueError, match="positive number of seconds"):
            CancelOnDisconnect(app, timeout=bad)
    with pytest.raises(TypeError, match="number of seconds"):
        CancelOnDisconnect(app, timeout="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_body_buffer"):
        CancelOnDisconnect(app, max_body_buffer=0)
    assert CancelOnDisconnect(app, timeout=math.inf).timeout is None


def test_request_scope_without_middleware() -> None:
    """request_scope on a request that skipped the middleware says what to add."""
    with pytest.raises(RuntimeError, match="add_middleware"):
        request_scope({"type": "http"})
