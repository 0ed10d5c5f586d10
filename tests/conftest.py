"""The test tiers, by folder: unit (pure), integration (binaries, no cluster), e2e (test bed).

Every test is marked with its tier. The e2e tests start the local test bed, so they
run only when asked for with --e2e (`make e2e`); without it they are deselected, and
`pytest` alone runs the unit and integration tiers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        help="also run the e2e tests (they start the local test bed if none is running)",
    )


def tier(item: pytest.Item) -> str:
    return item.path.relative_to(HERE).parts[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, tier(item)))
    if config.getoption("--e2e"):
        return
    deselected = [item for item in items if tier(item) == "e2e"]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if tier(item) != "e2e"]


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("--e2e"):
        return None
    return "e2e tests: deselected (run them with --e2e, or `make e2e`)"
