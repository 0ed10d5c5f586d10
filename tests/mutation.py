"""`make mutation`: each listed guarantee, removed from the code, must turn its tests red.

Reads tests/mutations.toml: for each mutation a source file, the exact text to find
there (once, or the list is stale and this says so), what to put instead, and the
tests that must catch it. Each runs in a scratch copy of the tracked files, first
on PYTHONPATH so the copy is what the tests (and any operator they start) import;
the checkout is never touched. A mutation whose tests still pass is a guarantee no
test holds: the run fails naming it. e2e tests run against the test bed, started
once if none is running (and stopped after).

    python -m tests.mutation [--only NAME] [--no-e2e] [--list]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIST = ROOT / "tests" / "mutations.toml"
STATE = Path(os.environ.get("MODELDEPLOY_CLUSTER_DIR", ROOT / ".cluster"))  # as testbed reads it
TEST_TIMEOUT_S = 1800
TESTS_FAILED = 1  # pytest's exit code when tests ran and some failed (2-5: no verdict)


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]

    @property
    def e2e(self) -> bool:
        return any(test.startswith("tests/e2e/") for test in self.tests)


def mutations() -> list[Mutation]:
    with LIST.open("rb") as listed:
        entries = tomllib.load(listed)["mutation"]
    return [
        Mutation(e["name"], e["file"], e["find"], e["replace"], tuple(e["tests"])) for e in entries
    ]


def scratch_copy(into: Path) -> None:
    """The checkout's files as they are now (edits and new files, not what git ignores)."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in tracked:
        if not raw:
            continue
        source = ROOT / raw.decode()
        if source.is_file():
            target = into / raw.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def mutate(copy: Path, mutation: Mutation) -> None:
    path = copy / mutation.file
    text = path.read_text()
    found = text.count(mutation.find)
    if found != 1:
        raise SystemExit(
            f"mutation {mutation.name!r}: its text is found {found} times in {mutation.file}, "
            "not once: the code moved on; update tests/mutations.toml"
        )
    path.write_text(text.replace(mutation.find, mutation.replace))


def caught(copy: Path, mutation: Mutation) -> tuple[bool, str]:
    """Whether the mutation's tests fail in the mutated copy, and their last lines."""
    env = {
        **os.environ,
        "PYTHONPATH": f"{copy / 'operator'}{os.pathsep}{copy}",
        # e2e: the running test bed (the one named in the environment, or the
        # checkout's), not a new one for the copy
        "MODELDEPLOY_CLUSTER_DIR": str(STATE),
        "KUBECONFIG": str(STATE / "kubeconfig"),
    }
    flags = ["--e2e"] if mutation.e2e else []
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *flags]
        + [str(copy / test) for test in mutation.tests],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=TEST_TIMEOUT_S,
        check=False,
    )
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-3:])
    if result.returncode not in (0, TESTS_FAILED):  # not a verdict: a broken run
        raise SystemExit(f"mutation {mutation.name!r}: pytest exited {result.returncode}:\n{tail}")
    return result.returncode == TESTS_FAILED, tail


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="a mutation's name")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    parser.add_argument(
        "--no-e2e", action="store_true", help="only the tests that need no test bed (quick)"
    )
    args = parser.parse_args()
    chosen = [m for m in mutations() if not args.only or m.name in args.only]
    if args.no_e2e:
        chosen = [
            replace(m, tests=tuple(t for t in m.tests if not t.startswith("tests/e2e/")))
            for m in chosen
        ]
        chosen = [m for m in chosen if m.tests]
    if args.list:
        for mutation in chosen:
            print(f"{mutation.name}: {mutation.file} -> {', '.join(mutation.tests)}")
        return 0
    started_bed = any(m.e2e for m in chosen) and _bed_up()
    survived = []
    # The checkout as it is now, once: edits made while the run goes on do not reach it.
    base = Path(tempfile.mkdtemp(prefix="mutation-base-"))
    scratch_copy(base)
    try:
        for mutation in chosen:
            began = time.monotonic()
            with tempfile.TemporaryDirectory(prefix="mutation-") as folder:
                copy = Path(folder) / "tree"
                shutil.copytree(base, copy)
                mutate(copy, mutation)
                killed, tail = caught(copy, mutation)
            took = time.monotonic() - began
            print(f"{'caught  ' if killed else 'SURVIVED'} {mutation.name} ({took:.0f}s)")
            if not killed:
                survived.append(mutation.name)
                print("    " + tail.replace("\n", "\n    "))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if started_bed:
            subprocess.run([sys.executable, "-m", "testbed", "down"], cwd=ROOT, check=False)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutations caught")
    return 1 if survived else 0


def _bed_up() -> bool:
    """Start the test bed if none runs; True if this started it. (A test that needs the
    real node adds it itself, and removes it after.)"""
    sys.path.insert(0, str(ROOT))
    import testbed.cluster  # noqa: PLC0415  (only when an e2e mutation needs it)

    if testbed.cluster.is_up():
        return False
    testbed.cluster.up()
    return True


if __name__ == "__main__":
    sys.exit(main())
