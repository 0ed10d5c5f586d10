"""Timestamps at the JSON edge: RFC 3339 strings in, aware `datetime` out, and back.

Status times keep milliseconds, so durations derived from them (time to detect,
time to recover) are sub-second; Kubernetes' own times (pods, conditions of
Deployments) come in whole seconds and parse the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def truncate(value: datetime) -> datetime:
    """`value` as it reads back from status (millisecond precision)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
