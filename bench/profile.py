"""Where the operator's time goes: py-spy sampling it for the length of a `with` block.

py-spy (the bench extra) samples the operator's Python stacks 100 times a second,
waiting threads included (`--idle`: a reconcile waiting for the API server is time
it takes too). The summary keeps the samples of the operator's own threads that
were inside a reconcile, and says which functions they were in (inclusive share)
and which ones were on top (leaf share). Without py-spy, or where it may not attach,
the profile says so and the run goes on.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

# What marks a stack as a reconcile: the operator's own function that runs one.
RECONCILE_FRAME = "reconcile_once"
# The frames worth naming: the operator's own, and the API client's calls by API method
# (thread, executor and HTTP plumbing sit under every one of them).
NAMED = ("modeldeploy/", "_api.py:")
LINE = re.compile(r" \(([^:()]+):\d+\)$")  # "function (path/file.py:123)" -> path


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """`function (…/modeldeploy/kube/cluster.py:91)` -> `kube/cluster.py:function`."""
    match = LINE.search(frame)
    if not match:
        return frame
    path = match.group(1)
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{short}:{frame[: match.start()]}"


def summarize(collapsed: str, top: int = 12) -> dict[str, Any]:
    """Inclusive and leaf shares of the reconcile stacks in py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = reconciling = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame_name(f) for f in stack.split(";")]
        if not any(RECONCILE_FRAME in f for f in frames):
            continue
        reconciling += count
        for name in set(frames):
            inclusive[name] += count
        leaf[frames[-1]] += count
    share = 100 / reconciling if reconciling else 0
    return {
        "samples": total,
        "reconcile_samples": reconciling,
        "inclusive_pct": [
            [n, round(c * share, 1)]
            for n, c in inclusive.most_common()
            if any(mark in n for mark in NAMED) and RECONCILE_FRAME not in n
        ][:top],
        "leaf_pct": [[n, round(c * share, 1)] for n, c in leaf.most_common(top)],
    }


class Profile:
    """py-spy on process `pid` for the block; `result` is the summary (or why none)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.output = Path(tempfile.mkstemp(suffix=".txt", prefix="bench-profile-")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {"note": "not profiled: py-spy is not installed"}
        self.raw = ""  # py-spy's collapsed stacks, to add up several profiles

    def __enter__(self) -> Profile:
        binary = py_spy()
        if binary is not None:
            args = [binary, "record", "--pid", str(self.pid), "--rate", "100", "--idle"]
            args += ["--format", "raw", "--output", str(self.output), "--nonblocking"]
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        try:
            _, errors = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, errors = self.process.communicate()
        text = self.output.read_text() if self.output.exists() else ""
        self.output.unlink(missing_ok=True)
        self.raw = text
        if text:
            self.result = summarize(text)
        else:
            reason = errors.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            self.result = {"note": f"not profiled: py-spy: {reason[0]}"}
