"""A Python subprocess a test can talk to: wait for the lines it prints, send it signals.

Every wait is bounded by one generous overall deadline (``timeout``), after which the
child is killed and the test fails with what it printed, so a bug can never hang CI.
Tests synchronise on lines the child prints, never on sleeps.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["SRC", "Child"]

SRC = Path(__file__).resolve().parent.parent / "src"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Child:
    """``python -c CODE`` (or ``python FILE``) with its stdout read line by line."""

    def __init__(self, *args: str, timeout: float = 60.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # A shell's background job (CI, `scripts/test &`) inherits SIGINT ignored, and
            # the child would keep ignoring it: start it as a foreground process would be.
            preexec_fn=_default_sigint,
        )
        self.deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._out_thread = threading.Thread(target=self._pump_stdout, daemon=True)
        self._out_thread.start()
        self._err_thread = threading.Thread(target=self._pump_stderr, daemon=True)
        self._err_thread.start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr.append(self.proc.stderr.read())

    def _remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expect(self, line: str) -> None:
        """Wait until the child prints exactly ``line`` (earlier lines are kept in ``lines``)."""
        while True:
            try:
                got = self._queue.get(timeout=self._remaining())
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"timed out waiting for {line!r}; got {self.lines}") from None
            if got is None:
                self.proc.wait()
                raise AssertionError(
                    f"child ended (exit {self.proc.returncode}) before printing {line!r}; "
                    f"got {self.lines}; stderr: {self.stderr()}"
                )
            self.lines.append(got)
            if got == line:
                return

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child."""
        self.proc.send_signal(sig)

    def wait(self) -> int:
        """Wait for the child to end and for all its output; return its exit code."""
        try:
            rc = self.proc.wait(timeout=self._remaining())
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"child did not exit in time; got {self.lines}") from None
        while (got := self._queue.get(timeout=self._remaining())) is not None:
            self.lines.append(got)
        self._err_thread.join(self._remaining())
        return rc

    def stderr(self) -> str:
        """Everything the child wrote to stderr (complete once `wait` returned)."""
        return "".join(self._stderr)

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # The pipes are at EOF now: let the readers finish before closing them.
        self._out_thread.join(10)
        self._err_thread.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
