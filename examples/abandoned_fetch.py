"""Abandoned fetches: the caller gave up, but the work it asked for goes on.

Run it with `python examples/abandoned_fetch.py` (needs uvicorn and httpx:
`pip install 'asyncio-cancelscope[demo]'`).

A caller builds a report from three fetches to a real local HTTP server (uvicorn on a
loopback port). One part fails, so the caller gives up on the report. What is still running
afterwards, on the client and on the server?

- Client side: with `asyncio.gather` the two other fetches run on (zombies); in a
  cancelscope scope the failure cancels them, and httpx closes their connections.
- Server side: a plain ASGI server never learns that nobody waits for the answer and works
  to the end; with `cancelscope.asgi.CancelOnDisconnect` a closed connection cancels the
  handler. It can only help once the client really lets go: the two fixes work together.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

try:
    import httpx
    import uvicorn
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"{exc.name} is missing: pip install 'asyncio-cancelscope[demo]' (uvicorn and httpx)"
    ) from exc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _table import print_table

import cancelscope as cs
from cancelscope.asgi import CancelOnDisconnect

WORK_SECONDS = 5.0  # what one part costs the server when nobody stops it
GRACE = 0.3  # how long we give the server to notice that the client left


class Counter:
    """Server-side handlers in flight, per test case."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}
        self.changed = asyncio.Event()

    def add(self, case: str, n: int) -> None:
        self.in_flight[case] = self.in_flight.get(case, 0) + n
        self.changed.set()

    async def wait_for(self, case: str, test: Callable[[int], bool], timeout: float) -> int:
        """Wait until ``test(in_flight[case])`` holds or ``timeout`` passes; return the count."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._until(case, test), timeout)
        return self.in_flight.get(case, 0)

    async def _until(self, case: str, test: Callable[[int], bool]) -> None:
        while not test(self.in_flight.get(case, 0)):
            self.changed.clear()
            await self.changed.wait()


def make_app(counter: Counter) -> Any:
    """A plain ASGI app: ``/part/0?case=X`` fails once the other parts are running."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        part = scope["path"].rsplit("/", 1)[-1]
        case = scope["query_string"].decode().partition("=")[2]
        status, body = 200, b"part done\n"
        if part == "0":
            await counter.wait_for(case, lambda n: n >= 2, 5)  # fail while the others work
            status, body = 500, b"part 0 failed\n"
        else:
            counter.add(case, 1)
            try:
                await asyncio.sleep(WORK_SECONDS)  # the expensive part
            finally:
                counter.add(case, -1)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


class _Server(uvicorn.Server):
    """uvicorn's server with an Event set once it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready.set()


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its URL; stop it (cancelling leftovers)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="critical", access_log=False,
                            timeout_graceful_shutdown=0.1)
    server = _Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    ready = asyncio.ensure_future(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        ready.cancel()
        sock.close()


async def fetch(client: httpx.AsyncClient, url: str) -> str:
    """GET ``url``; raise for an error status."""
    response = await client.get(url)
    response.raise_for_status()
    return response.text


async def scoped_fetch(client: httpx.AsyncClient, url: str) -> str:
    """`fetch` for a cancelscope scope: httpx's own cleanup gets a one-shot cancellation.

    httpcore closes a cancelled request's connection under an anyio shield, which does not
    hold off cancelscope's level-triggered delivery: inside a cancelled scope that cleanup
    would itself be cancelled and leave the connection open (so the server never hears that
    the client left). `cs.cancel_once` runs the request in a task of its own, cancelled
    once, and waits for it to finish.
    """
    return await cs.cancel_once(fetch, client, url)


async def report_with_gather(client: httpx.AsyncClient, urls: list[str]) -> list[asyncio.Task[str]]:
    """Plain asyncio: gather raises the first failure; the other fetches run on."""
    tasks = [asyncio.ensure_future(fetch(client, url)) for url in urls]
    with contextlib.suppress(httpx.HTTPStatusError):
        await asyncio.gather(*tasks)
    return tasks


async def report_with_scope(client: httpx.AsyncClient, urls: list[str]) -> list[asyncio.Task[str]]:
    """cancelscope: the failure cancels the sibling fetches; the scope waits for them."""
    with contextlib.suppress(Exception):  # the ExceptionGroup of the failed part
        async with cs.cancellable(name="report") as scope:
            for url in urls:
                scope.spawn(scoped_fetch, client, url)
    return []  # nothing can outlive the scope


Caller = Callable[[httpx.AsyncClient, list[str]], Awaitable[list[asyncio.Task[str]]]]


async def one_case(url: str, counter: Counter, case: str, caller: Caller) -> tuple[int, int]:
    """Run one report; return (client fetches, server handlers) still running afterwards."""
    async with httpx.AsyncClient() as client:
        tasks = await caller(client, [f"{url}/part/{n}?case={case}" for n in range(3)])
        server = await counter.wait_for(case, lambda n: n == 0, GRACE)
        client_left = sum(not t.done() for t in tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return client_left, server


async def compare() -> dict[tuple[str, str], tuple[int, int]]:
    """Every client (gather, scope) against every server (plain, CancelOnDisconnect)."""
    counter = Counter()
    app = make_app(counter)
    results: dict[tuple[str, str], tuple[int, int]] = {}
    async with serve(app) as plain, serve(CancelOnDisconnect(app)) as guarded:
        for client_name, caller in (("gather", report_with_gather), ("scope", report_with_scope)):
            for server_name, url in (("plain", plain), ("middleware", guarded)):
                case = f"{client_name}-{server_name}"
                results[client_name, server_name] = await one_case(url, counter, case, caller)
    return results


def _cell(counts: tuple[int, int]) -> str:
    return f"client {counts[0]}, server {counts[1]}"


def scenario() -> dict[str, object]:
    """Run the comparison; return the demo's summary cells."""
    results = asyncio.run(compare())
    plain, fixed = results["gather", "plain"], results["scope", "middleware"]
    rows = [
        ["asyncio.gather client", _cell(results["gather", "plain"]),
         _cell(results["gather", "middleware"])],
        ["cancelscope scope client", _cell(results["scope", "plain"]),
         _cell(results["scope", "middleware"])],
    ]
    return {
        "incident": "abandoned fetch",
        "plain": f"{plain[0]} fetches, {plain[1]} server handlers still running",
        "cancelscope": f"{fixed[0]} and {fixed[1]} (scope + CancelOnDisconnect)",
        "fixed": plain != (0, 0) and fixed == (0, 0),
        "rows": rows,
    }


def main() -> None:
    """Print the before/after table."""
    result = scenario()
    print("Abandoned fetches: a report needs 3 parts, part 0 fails, the caller gives up.")
    print(f"Still running {GRACE}s later (client fetches, server handlers):\n")
    rows = result["rows"]
    assert isinstance(rows, list)
    print_table(["", "plain server", "server with CancelOnDisconnect"], rows)


if __name__ == "__main__":
    main()
