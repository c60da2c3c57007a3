"""The pytest plugin, run on small test suites with pytester (in-process, virtual clock)."""

from __future__ import annotations

import re
import textwrap

import pytest

from ._helpers import requires_312

pytest_plugins = ["pytester"]

# Every inner suite runs on a looptime loop starting at 0, so timeouts and
# grace periods cost no real time.
CONFTEST = """
import asyncio
import looptime

def pytest_asyncio_loop_factories(config, item):
    return {"virtual": lambda: looptime.patch_event_loop(asyncio.new_event_loop(), start=0)}
"""

HELPERS = """
import asyncio
import pytest
import pytest_asyncio
import cancelscope as cs

log = []

async def forever(tag):
    try:
        await asyncio.Event().wait()
    finally:
        log.append(tag)
"""


def run(
    pytester: pytest.Pytester, body: str, *args: str, mode: str = "strict", ini: str = ""
) -> pytest.RunResult:
    """Write one test module (HELPERS + body) and run pytest on it in-process."""
    pytester.makeini(
        f"""
        [pytest]
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        asyncio_default_test_loop_scope = function
        filterwarnings = default::pytest.PytestWarning
        {ini}
        """
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=HELPERS + textwrap.dedent(body))
    return pytester.runpytest("-p", "no:looptime_plugin", "-p", "no:cacheprovider", *args)


def _plan(result: pytest.RunResult) -> list[str]:
    lines = [line for line in result.outlines if "SETUP" in line or "TEARDOWN" in line]
    return [re.sub(r" at 0x[0-9a-f]+", "", line) for line in lines]


def test_unused_plugin_changes_nothing(pytester: pytest.Pytester) -> None:
    """A suite using none of the features runs exactly as with the plugin disabled."""
    body = """
    @pytest_asyncio.fixture
    async def value():
        yield 1

    @pytest.mark.asyncio
    async def test_async(value, request):
        loop = asyncio.get_running_loop()
        assert loop.get_task_factory() is None
        assert "call_at" not in vars(loop)
        assert not any("cancelscope" in name for name in request.fixturenames)
        asyncio.get_running_loop().call_later(100, print)  # left behind: nobody asked

    def test_sync():
        pass

    async def test_unmarked():
        pass
    """
    with_plugin = run(pytester, body, "--setup-plan")
    without = pytester.runpytest("-p", "no:looptime_plugin", "-p", "no:cacheprovider",
                                 "-p", "no:cancelscope", "--setup-plan")
    assert _plan(with_plugin)
    assert _plan(with_plugin) == _plan(without)
    outcomes = pytester.runpytest("-p", "no:looptime_plugin").parseoutcomes()
    assert outcomes == pytester.runpytest(
        "-p", "no:looptime_plugin", "-p", "no:cancelscope"
    ).parseoutcomes()
    assert outcomes["passed"] == 2


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_cancel_scope_fixture(pytester: pytest.Pytester, mode: str) -> None:
    """The fixture's scope is current in the test's task; its children are cancelled at the end."""
    marker = "@pytest.mark.asyncio" if mode == "strict" else ""
    result = run(
        pytester,
        f"""
        {marker}
        async def test_scope(cancel_scope):
            assert cs.CancellationScope.current() is cancel_scope
            assert cancel_scope.active
            cancel_scope.spawn(forever, "child")
            await asyncio.sleep(1)

        def test_after():
            assert log == ["child"]
        """,
        mode=mode,
    )
    result.assert_outcomes(passed=2)


def test_cancel_scope_child_failure_fails_the_test(pytester: pytest.Pytester) -> None:
    """A failing child cancels the test body and fails the test with its error."""
    result = run(
        pytester,
        """
        async def boom():
            raise ValueError("child broke")

        @pytest.mark.asyncio
        async def test_scope(cancel_scope):
            cancel_scope.spawn(boom)
            try:
                await asyncio.sleep(10)
            finally:
                log.append("body cancelled")

        def test_after():
            assert log == ["body cancelled"]
        """,
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*ValueError: child broke*"])


def test_cancel_scope_refusing_child_is_named(pytester: pytest.Pytester) -> None:
    """A child still running after the grace period fails the test, named, with its stack."""
    result = run(
        pytester,
        """
        async def stubborn():
            async with cs.non_cancellable():
                await asyncio.Event().wait()  # refuses here

        @pytest.mark.asyncio
        async def test_scope(cancel_scope):
            cancel_scope.spawn(stubborn, name="stubborn")
        """,
        ini="cancelscope_grace = 2.5",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*child task(s) 'stubborn' of the cancel_scope fixture were still running 2.5s*",
            "*test_inner.py*in stubborn",
            "*await asyncio.Event().wait()  # refuses here",
        ]
    )


def test_cancel_scope_needs_an_async_test(pytester: pytest.Pytester) -> None:
    """Requesting the fixture from a plain test is an error that says why."""
    result = run(pytester, "def test_sync(cancel_scope):\n    pass\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cancel_scope fixture needs an async test*"])


def test_hosted_scope_in_async_fixture(pytester: pytest.Pytester) -> None:
    """hosted_scope holds a scope across an async fixture's setup and teardown tasks."""
    result = run(
        pytester,
        """
        from cancelscope.testing import hosted_scope

        @pytest_asyncio.fixture
        async def server():
            async with hosted_scope(name="server") as scope:
                scope.spawn(forever, "server child")
                yield scope
            log.append("teardown done")

        @pytest.mark.asyncio
        async def test_uses(server):
            assert server.active
            assert server.name == "server"

        def test_after():
            assert log == ["server child", "teardown done"]
        """,
    )
    result.assert_outcomes(passed=2)


HANGING = """
    async def stuck_worker():
        await asyncio.Event().wait()  # the worker waits here

    @pytest.mark.asyncio
    @pytest.mark.cancel_timeout(5)
    async def test_hang(cancel_scope):
        cancel_scope.spawn(stuck_worker, name="worker")
        async with cs.with_timeout(100, name="inner"):
            try:
                await asyncio.Event().wait()  # the test waits here
            finally:
                log.append(asyncio.get_running_loop().time())

    def test_after():
        assert log == [5.0]
"""


def test_timeout_reports_every_task_and_the_tree(pytester: pytest.Pytester) -> None:
    """A hanging test fails with each pending task's stack and the scope tree, then cleans up."""
    result = run(pytester, HANGING)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_hang did not finish within its cancel_timeout of 5s (event-loop time)*",
            "Tasks pending when the timeout fired (2):",
            "task 'Task-*' (test_hang):",
            "*test_inner.py*in test_hang",
            "*await asyncio.Event().wait()  # the test waits here",
            "*waiting on a future",
            "task 'worker' (stuck_worker):",
            "*await asyncio.Event().wait()  # the worker waits here",
            "cancelscope tree of *",
            "*task 'Task-*' (test_hang) at test_inner.py:* in test_hang (in asyncio's wait)*",
            "*scope 'cancel_timeout' entered",
            "*scope 'cancel_scope of test_hang' entered children=1",
            "*scope 'inner' entered deadline=+95s",
            "*child task 'worker' (stuck_worker) at test_inner.py:* in stuck_worker*",
        ]
    )


def test_timeout_default_from_ini_and_cli(pytester: pytest.Pytester) -> None:
    """The ini default applies to unmarked async tests, the CLI overrides it, None turns it off."""
    body = """
    @pytest.mark.asyncio
    async def test_default():
        await asyncio.sleep(10)

    @pytest.mark.asyncio
    @pytest.mark.cancel_timeout(None)
    async def test_off():
        await asyncio.sleep(10)

    def test_sync():
        pass
    """
    result = run(pytester, body, ini="cancelscope_timeout = 3")
    result.assert_outcomes(failed=1, passed=2)
    result.stdout.fnmatch_lines(["*test_default did not finish within its cancel_timeout of 3s*"])
    result = pytester.runpytest("-p", "no:looptime_plugin", "--cancelscope-timeout=20")
    result.assert_outcomes(passed=3)


def test_timeout_forces_cleanup_that_hangs(pytester: pytest.Pytester) -> None:
    """Cleanup stuck in a shield is cancelled natively after the grace period, and reported."""
    result = run(
        pytester,
        """
        @pytest.mark.asyncio
        @pytest.mark.cancel_timeout(1)
        async def test_hang():
            try:
                await asyncio.sleep(10)
            finally:
                async with cs.non_cancellable():
                    await asyncio.Event().wait()

        def test_after():
            pass
        """,
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["*cleanup did not finish within cancelscope_grace (1s)*cancelled with task.cancel()*"]
    )


def test_timeout_marker_misuse(pytester: pytest.Pytester) -> None:
    """A cancel_timeout without one valid number is an error naming the test."""
    result = run(
        pytester,
        """
        @pytest.mark.asyncio
        @pytest.mark.cancel_timeout("soon")
        async def test_bad():
            pass
        """,
    )
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*test_bad: cancel_timeout must be a number of seconds*"])


LEAKY = """
    @pytest_asyncio.fixture
    async def tidy():
        task = asyncio.create_task(forever("fixture task"))
        yield
        task.cancel()
        await asyncio.wait([task])

    @pytest.mark.asyncio(loop_scope="module")
    async def test_leaks(tidy):
        asyncio.create_task(forever("leaked"), name="leaky")
        asyncio.get_running_loop().call_later(50, print, "never")

    @pytest.mark.asyncio(loop_scope="module")
    async def test_next():
        assert log == ["fixture task", "leaked"]
        assert all(t is asyncio.current_task() for t in asyncio.all_tasks())
"""


@pytest.mark.parametrize("loop_scope", ["module", "function"])
def test_leaks_warn(pytester: pytest.Pytester, loop_scope: str) -> None:
    """A leaked task and timer are reported with where they were made, then cancelled."""
    body = LEAKY.replace('loop_scope="module"', f"loop_scope={loop_scope!r}")
    result = run(pytester, body, "--cancelscope-leaks=warn")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*LeakWarning: test_inner.py::test_leaks left 1 task(s) still pending and "
            "1 timer(s) still scheduled after it ended; they were cancelled.",
            "*task 'leaky' (forever):",
            "*created at:",
            "*test_inner.py*, in test_leaks",
            "*asyncio.create_task(forever(\"leaked\"), name=\"leaky\")",
            "*timer <TimerHandle when=50.0 print(*)>",
            "*scheduled at:",
            "*call_later(50, print, \"never\")",
        ]
    )
    assert "fixture task" not in result.stdout.str().split("warnings summary")[1]


def test_leaks_error_from_ini(pytester: pytest.Pytester) -> None:
    """In error mode a leak is an error at the leaking test's teardown."""
    result = run(pytester, LEAKY, ini="cancelscope_leaks = error")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["ERROR test_inner.py::test_leaks - Failed: test_inner.py::*"])


def test_leaks_bad_setting(pytester: pytest.Pytester) -> None:
    """A leak mode other than off, warn or error is refused at start-up."""
    result = run(pytester, "def test_x():\n    pass\n", ini="cancelscope_leaks = loud")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cancelscope_leaks must be one of off, warn, error*"])


ANYIO = """
    @pytest.fixture
    def anyio_backend():
        return "asyncio"

    @pytest.mark.anyio
    async def test_scope(cancel_scope):
        assert cs.CancellationScope.current() is cancel_scope
        cancel_scope.spawn(forever, "anyio child")

    @pytest.mark.anyio
    async def test_leaks():
        asyncio.create_task(forever("anyio leak"), name="anyio-leak")

    @pytest.mark.anyio
    @pytest.mark.cancel_timeout(0.01)
    async def test_hang():
        await asyncio.Event().wait()

    def test_after():
        assert log == ["anyio child", "anyio leak"]
"""


def test_anyio_plugin(pytester: pytest.Pytester) -> None:
    """Fixture, leak detection and timeout work for tests run by anyio's pytest plugin."""
    result = run(pytester, ANYIO, "--cancelscope-leaks=warn", "-p", "anyio")
    result.assert_outcomes(passed=3, failed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*test_hang did not finish within its cancel_timeout of 0.01s*",
            "*LeakWarning: test_inner.py::test_leaks left 1 task(s) still pending*",
            "*task 'anyio-leak' (forever):",
        ]
    )


@requires_312
def test_leaks_with_eager_task_factory(pytester: pytest.Pytester) -> None:
    """Leak detection wraps an eager task factory and keeps it eager."""
    pytester.makeconftest(
        """
        import asyncio

        def make():
            loop = asyncio.new_event_loop()
            loop.set_task_factory(asyncio.eager_task_factory)
            return loop

        def pytest_asyncio_loop_factories(config, item):
            return {"eager": make}
        """
    )
    body = """
    @pytest.mark.asyncio
    async def test_leaks():
        ran = []
        async def starts_at_once():
            ran.append(True)
            await asyncio.Event().wait()
        asyncio.create_task(starts_at_once(), name="eager-leak")
        assert ran == [True]  # still eager under the wrapper
    """
    pytester.makepyfile(test_inner=HELPERS + textwrap.dedent(body))
    result = pytester.runpytest(
        "-p", "no:looptime_plugin", "--cancelscope-leaks=warn",
        "-W", "default::pytest.PytestWarning",
        "-o", "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*task 'eager-leak' (test_leaks.<locals>.starts_at_once):"])
