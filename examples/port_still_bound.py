"""Ctrl-C during a slow start-up leaves the port bound: `python examples/port_still_bound.py`.

A small TCP server binds its port, then waits for its database before serving. The
health-check loop is written the careless way real code often is: it retries on *any*
failure, ``except BaseException`` included, so it also swallows the CancelledError that
asyncio's Ctrl-C handling sends once. The very same server is started twice, under
``asyncio.run(serve())`` and under ``cs.run(serve)``; each gets a real SIGINT during its
start-up, and then a restart tries to bind the same port.

* ``asyncio.run``: the one cancellation is swallowed, start-up goes on, the process keeps
  running and keeps the port: the restart fails with EADDRINUSE.
* ``cs.run``: SIGINT cancels the root scope; the swallowed CancelledError comes back at
  the next ``await`` (level-triggered), the ``finally`` closes the server, the process exits
  with 130 and the restart binds the port at once.

Everything is real: sockets on 127.0.0.1, a subprocess, a signal. The parent never sleeps
to wait: it follows the lines the server prints.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cancelscope as cs

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from _table import print_table  # noqa: E402 - the examples' shared helper, beside this file

# A bug must not hang the example (or CI): every wait for the server is bounded by this.
OVERALL_TIMEOUT = 30.0


# --------------------------------------------------------------------------- the server


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def wait_for_database(db: tuple[str, int]) -> None:
    """The slow start-up: ask the database whether it is up, retrying until it answers."""
    for attempt in itertools.count(1):
        try:
            reader, writer = await asyncio.open_connection(*db)
            try:
                # Said once the read below waits, so that a signal finds the task
                # suspended (on 3.10 a SIGINT between the two would raise
                # KeyboardInterrupt right here instead of cancelling the task).
                asyncio.get_running_loop().call_soon(
                    say, f"health check {attempt}: waiting for the database"
                )
                if await reader.read(1):
                    return
            finally:
                writer.close()
        except BaseException as exc:  # the bug: "retry on any failure" also catches cancels
            say(f"health check {attempt} failed ({type(exc).__name__}); retrying")
        await asyncio.sleep(0.01)  # back off before the next attempt


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def serve(port: int) -> None:
    """Bind the port, wait for the database, serve; close the server however it ends."""
    try:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "error")
        say(f"cannot bind: {name} ({os.strerror(exc.errno or 0)})")
        raise SystemExit(1) from None
    say(f"listening on {server.sockets[0].getsockname()[1]}")
    # A database that accepts connections (into the listen backlog) but never answers.
    with socket.socket() as db:
        db.bind(("127.0.0.1", 0))
        db.listen()
        try:
            await wait_for_database(db.getsockname())
            await server.serve_forever()
        finally:
            server.close()
            await server.wait_closed()
            say("server closed")


def server_main(runner: str, port: int) -> None:
    if runner == "asyncio":
        asyncio.run(serve(port))
    else:
        cs.run(serve, port)


# --------------------------------------------------------------------------- the parent


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """This file run as a server subprocess; its stdout lines are read as they come."""

    def __init__(self, runner: str, port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--serve", runner, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            # A shell's background job inherits SIGINT ignored, and Python then keeps
            # ignoring it; give the server the disposition of a foreground process.
            preexec_fn=_default_sigint,
        )
        self.deadline = time.monotonic() + OVERALL_TIMEOUT
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        """The server's next line ("<exited N>" once its output ends)."""
        try:
            line = self.lines.get(timeout=max(0.0, self.deadline - time.monotonic()))
        except queue.Empty:
            self.stop()
            raise TimeoutError(f"the server printed nothing for {OVERALL_TIMEOUT}s") from None
        if line is None:
            return f"<exited {self.proc.wait()}>"
        return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        # The pump reads until end of file, which a dead server's pipe reaches at once;
        # closing the pipe under a reading thread would make it raise.
        self.pump.join(OVERALL_TIMEOUT)
        assert self.proc.stdout is not None
        if not self.pump.is_alive():
            self.proc.stdout.close()


def ctrl_c_during_start_up(runner: str) -> dict[str, str | bool]:
    """Start a server, SIGINT it during start-up, then try to start it again on its port."""
    server = Server(runner, 0)
    try:
        first = server.next_line()
        if not first.startswith("listening on "):
            raise RuntimeError(f"the server did not start: {first}")
        port = int(first.rsplit(" ", 1)[1])
        # Start-up is under way: the first health check waits for the database.
        waiting = server.next_line()
        if waiting != "health check 1: waiting for the database":
            raise RuntimeError(f"unexpected start-up: {waiting}")
        server.proc.send_signal(signal.SIGINT)
        swallowed = server.next_line()  # the health check that caught the cancellation
        after = server.next_line()  # still starting up, or closing down
        exited = after == "server closed"
        exit_line = server.next_line() if exited else ""
        restart = Server(runner, port)
        try:
            restarted = restart.next_line()
        finally:
            restart.stop()
        return {
            "swallowed": swallowed.split("(", 1)[1].split(")", 1)[0],
            "after": f"closed the server, {exit_line.strip('<>')}" if exited else (
                f"kept starting up ({after.split(':')[0]})"
            ),
            "restart": "bound the port" if restarted.startswith("listening") else restarted,
            "bound": not restarted.startswith("listening"),
        }
    finally:
        server.stop()


def _verdict(result: dict[str, str | bool]) -> str:
    if not result["bound"]:
        return "port released: the restart binds it"
    if "EADDRINUSE" in str(result["restart"]):
        return "port still bound: the restart gets EADDRINUSE"
    return f"port still bound: {result['restart']}"


def scenario() -> dict[str, object]:
    """The demo's protocol: run both versions and summarise them."""
    plain = ctrl_c_during_start_up("asyncio")
    ours = ctrl_c_during_start_up("cancelscope")
    return {
        "incident": "Ctrl-C during start-up leaves the port bound",
        "plain": _verdict(plain),
        "cancelscope": _verdict(ours),
        "fixed": bool(plain["bound"]) and not ours["bound"],
        "details": {"asyncio.run": plain, "cs.run": ours},
    }


def main() -> None:
    plain = ctrl_c_during_start_up("asyncio")
    ours = ctrl_c_during_start_up("cancelscope")
    print("A server gets SIGINT while it waits for its database; then it is started again.")
    print_table(
        ["", "asyncio.run(serve())", "cs.run(serve)"],
        [
            ["health check caught", str(plain["swallowed"]), str(ours["swallowed"])],
            ["after the signal", str(plain["after"]), str(ours["after"])],
            ["restart on the same port", str(plain["restart"]), str(ours["restart"])],
        ],
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        server_main(sys.argv[2], int(sys.argv[3]))
    else:
        main()
