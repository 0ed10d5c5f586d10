"""Bounded text for status: messages are cut to a fixed size so status stays small.

Status lives in etcd beside the spec (1.5 MiB per object); every message the
operator writes there goes through `shorten` (docs/status.md, "Size").
"""

from __future__ import annotations

MESSAGE_LIMIT = 256  # characters of a message in the ledger, history or a condition


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text`, or its start and an ellipsis when it is longer than `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
