"""Fault injection for crash-safety tests: a switch that does nothing unless it is set.

`MODELDEPLOY_FAULT=<point>[@N]` makes the operator process exit at once, right after
the named write succeeded for the Nth time (default the first): `status:<Reason>` (the
status write that first holds that Event, e.g. status:RolloutFailed), `revert` (the
spec revert), `apply:Deployment`, `apply:Service`, `event:<Reason>` (the Event was
posted), `webhook:<Reason>` (a webhook was delivered). The e2e tests restart the
operator and check that it converges.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

ENV = "MODELDEPLOY_FAULT"
EXIT_CODE = 97  # not a code anything else uses, so a test can tell the injected exit

logger = logging.getLogger(__name__)


_hits: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, count = wanted.partition("@")
    if target != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] < int(count or 1):
            return
    logger.warning("fault injection: exiting right after %s", wanted)
    sys.stderr.flush()
    os._exit(EXIT_CODE)
