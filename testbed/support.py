"""What the test bed, the tests, the demo and the benchmarks share: waits, ports, threads.

Polling with a deadline, a free loopback port, a thread for the length of a `with`
block, the operator as a real process (`python -m modeldeploy`), and the tools built
from Go modules (build-tool.sh). Standard library
only, like the rest of the test bed: callers that talk to the cluster pass in what
they need (a watch to stop, the API errors to tolerate while polling).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Generic, Literal, Protocol, Self, TypeVar

T = TypeVar("T")

# kopf logs this once its startup handlers ran: from here on the operator acts on events.
OPERATOR_STARTED = b"Activity 'configure' succeeded"
TESTBED = Path(__file__).resolve().parent


class WaitTimeout(Exception):
    """A wait ran out of time; the message says what it waited for and what it last saw."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_tool(name: str) -> Path:
    """The path of a tool (helm, kstatus, prom-label-proxy, kube-score, metrics-server) built
    from its pinned Go module by build-tool.sh: cached, so a no-op once built; the build's
    log goes to stderr."""
    built = subprocess.run(
        [str(TESTBED / "build-tool.sh"), name], stdout=subprocess.PIPE, text=True, check=True
    )
    return Path(built.stdout.strip())


def wait_for(
    predicate: Callable[[], T | Literal[False] | None],
    timeout: float,
    what: str,
    *,
    tolerate: tuple[type[Exception], ...] = (),
    interval: float = 0.2,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    An exception of a `tolerate` type counts as "not yet" (a server still starting,
    an object not created yet). After `timeout` seconds, WaitTimeout names `what`
    and the last answer or error.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except tolerate as error:
            last = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def end_process(process: subprocess.Popen[bytes], kill: bool = False, grace_s: float = 20) -> None:
    """SIGTERM `process` (SIGKILL with `kill`) and reap it; SIGKILL if it outlives `grace_s`."""
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class Background:
    """Runs `_run` in a daemon thread for the length of a `with` block.

    `_run` returns once `_stopping` is set. What it raised is raised again when the
    block ends (unless the block raised first), so a broken helper fails its caller
    instead of going unnoticed.
    """

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self._error: BaseException | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()
        self._thread.join(timeout=10)
        if exc_type is None:
            self._raise_error()

    def _guarded(self) -> None:
        try:
            self._run()
        except BaseException as error:  # handed to the thread that owns this helper
            self._error = error

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        self._stopping.set()

    def _run(self) -> None:
        raise NotImplementedError


class BackgroundCall(Background, Generic[T]):
    """`function` in a thread from `start()` on; `result()` waits for its value or error."""

    def __init__(self, function: Callable[[], T]) -> None:
        super().__init__()
        self._function = function
        self._value: T | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._value = self._function()

    def result(self) -> T:
        self._thread.join()
        self._raise_error()
        assert self._value is not None
        return self._value


class Stoppable(Protocol):
    def stop(self) -> None: ...


W = TypeVar("W", bound=Stoppable)


class BackgroundWatch(Background, Generic[W]):
    """A Background that reads a watch's stream in `_read`; leaving the block stops the watch.

    Stopping a watch cuts its stream: the `cut` exceptions (e.g. urllib3's
    ProtocolError) are then expected and ignored; before that they are errors.
    """

    def __init__(self, watch: W, cut: tuple[type[Exception], ...] = ()) -> None:
        super().__init__()
        self._watch = watch
        self._cut = cut

    def _stop(self) -> None:
        super()._stop()
        self._watch.stop()

    def _run(self) -> None:
        try:
            self._read()
        except self._cut:
            if not self._stopping.is_set():
                raise

    def _read(self) -> None:
        raise NotImplementedError


class OperatorProcess:
    """The operator as a real process, `python -m modeldeploy ARGS`, logging to one file.

    `args` (say, --namespace NS) and `env` hold for every start; flags passed to
    `start` are kept for later restarts too. The log is appended to across restarts.
    """

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.args = ["--liveness=", *args]
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *extra_args: str, timeout: float = 30) -> None:
        """Start it and wait until it logged that it started; `extra_args` stay for restarts."""
        self.args += extra_args
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modeldeploy", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": self._path(), **self.env},
            )
        wait_for(lambda: self._started(offset), timeout, "the operator to start")

    @staticmethod
    def _path() -> str:
        """This checkout's operator first: the venv's editable install may name another
        checkout of the repository (a second worktree, a CI clone)."""
        return os.pathsep.join(
            p for p in (str(TESTBED.parent / "operator"), os.environ.get("PYTHONPATH", "")) if p
        )

    def _started(self, offset: int) -> bool:
        """Whether this start (the log from `offset` on) got as far as running."""
        assert self.process is not None
        with self.log_path.open("rb") as log:
            log.seek(offset)
            if OPERATOR_STARTED in log.read():
                return True
        if self.process.poll() is not None:
            tail = "\n".join(self.log().splitlines()[-20:])
            raise RuntimeError(f"the operator exited with {self.process.returncode}:\n{tail}")
        return False

    @property
    def pid(self) -> int:
        assert self.process is not None, "the operator is not running"
        return self.process.pid

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL with `kill`) and wait for it; nothing if it is not running."""
        if self.process is not None:
            end_process(self.process, kill=kill)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
