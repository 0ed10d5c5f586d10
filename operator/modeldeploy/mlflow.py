"""The MLflow model registry's REST API, as the operator reads it (docs/registry.md).

An adapter beside the webhooks and analysis: every call goes through
`outbound.request` under the egress allow-list for the registry purpose
(`--allowed-registry`), within one deadline for the whole call, its answer cut at
`MAX_ANSWER` bytes. It never raises: what the registry answered becomes a
`RegistryResult`, with the registry's own message when the spec names something it
does not have, or `unreachable` when it did not answer (asked again with backoff).
The calls and their answers are those of docs/registry-findings.md (MLflow 3.18).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from modeldeploy import outbound
from modeldeploy.core.plan import ResolveRequest
from modeldeploy.core.writeback import TAG_REASON, TAG_STATE, TAG_VERSION
from modeldeploy.model.egress import EgressPolicy, Purpose
from modeldeploy.model.observed import RegistryResult
from modeldeploy.model.status import RegistryWrite
from modeldeploy.model.text import shorten

API = "/api/2.0/mlflow/"
DEADLINE_S = 10.0  # one call, connect to last byte
MAX_ANSWER = 256 * 1024  # a model version is a few hundred bytes
MAX_HOPS = 3  # a version whose source is models:/NAME/N is followed this many times
_MODELS_URI = re.compile(r"^models:/([^/@]+)(?:/([0-9]+)|@([-\w]+))$")


class _NoAnswer(Exception):
    """The registry did not answer: down, overloaded (5xx, 429), or too slow."""


class _Refused(Exception):
    """The registry answered no: the spec names what it does not have, or the
    credentials are wrong; its own message."""


class MlflowRegistry:
    """Resolves registry references for the reconciles (ports.ModelRegistry)."""

    def __init__(self, policy: EgressPolicy, deadline_s: float = DEADLINE_S) -> None:
        self.policy = policy
        self.deadline_s = deadline_s

    def resolve(
        self, namespace: str, tracking_uri: str, authorization: str | None, wanted: ResolveRequest
    ) -> RegistryResult:
        def result(**fields: Any) -> RegistryResult:
            return RegistryResult(
                wanted.version, wanted.model, wanted.requested_version, wanted.alias, **fields
            )

        try:
            found = self._version(
                namespace,
                tracking_uri,
                authorization,
                wanted.model,
                wanted.requested_version,
                wanted.alias,
            )
            number = str(found.get("version") or "")
            source, run_id = str(found.get("source") or ""), str(found.get("run_id") or "")
            for _ in range(MAX_HOPS):
                hop = _MODELS_URI.match(source)
                if hop is None:
                    break
                name, version, alias = hop.groups()
                behind = self._version(namespace, tracking_uri, authorization, name, version, alias)
                source = str(behind.get("source") or "")
                run_id = run_id or str(behind.get("run_id") or "")
            if not number or not source or source.startswith("models:/"):
                return result(error=f"model version {number or '?'} has no storage location")
            return result(model_version=number, source=source, run_id=run_id or None)
        except _NoAnswer as error:
            return result(error=str(error), unreachable=True)
        except _Refused as error:
            return result(error=str(error))

    def write(
        self, namespace: str, tracking_uri: str, authorization: str | None, owed: RegistryWrite
    ) -> tuple[str | None, bool]:
        """The state and reason tags on the model version, then the alias onto it:
        each call idempotent, so a write made again after a crash changes nothing."""
        calls: list[tuple[str, dict[str, str]]] = [
            (
                "model-versions/set-tag",
                {"name": owed.model, "version": owed.model_version, "key": key, "value": value},
            )
            for key, value in (
                (TAG_STATE, owed.state),
                (TAG_REASON, owed.reason),
                (TAG_VERSION, owed.version),
            )
        ]
        if owed.alias:
            calls.append(
                (
                    "registered-models/alias",
                    {"name": owed.model, "alias": owed.alias, "version": owed.model_version},
                )
            )
        try:
            for path, body in calls:
                self._call("POST", namespace, tracking_uri, authorization, path, body=body)
        except _NoAnswer as error:
            return str(error), True
        except _Refused as error:
            return str(error), False
        return None, False

    def _version(
        self,
        namespace: str,
        tracking_uri: str,
        authorization: str | None,
        model: str,
        version: str | None,
        alias: str | None,
    ) -> dict[str, Any]:
        if alias is not None:
            path, params = "registered-models/alias", {"name": model, "alias": alias}
        else:
            path, params = "model-versions/get", {"name": model, "version": version or ""}
        answer = self._call("GET", namespace, tracking_uri, authorization, path, params)
        found = answer.get("model_version")
        if not isinstance(found, dict):
            raise _Refused("the registry's answer holds no model_version")
        return found

    def _call(
        self,
        method: str,
        namespace: str,
        tracking_uri: str,
        authorization: str | None,
        path: str,
        params: dict[str, str] | None = None,
        body: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call: GET with `params` in the query, POST with `body` as JSON."""
        url = tracking_uri.rstrip("/") + API + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if authorization:
            headers["Authorization"] = authorization
        scope = self.policy.scope(Purpose.REGISTRY, namespace)
        try:
            answer = outbound.request(method, url, self.deadline_s, scope, data, headers)
        except outbound.OutboundError as error:
            raise _NoAnswer(str(error)) from None
        text = answer.body[:MAX_ANSWER]
        if answer.status >= 500 or answer.status == 429:
            raise _NoAnswer(f"HTTP {answer.status} from the registry")
        if answer.status in (401, 403):
            raise _Refused(
                f"the registry refused the credentials of spec.registry.mlflow."
                f"credentialsSecret (HTTP {answer.status}): {_text(text)}"
            )
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if answer.status != 200:
            if isinstance(decoded, dict) and decoded.get("message"):
                raise _Refused(shorten(str(decoded["message"]), 512))
            raise _Refused(f"HTTP {answer.status} from the registry: {_text(text)}")
        if not isinstance(decoded, dict):
            raise _Refused("the registry's answer is not a JSON object")
        return decoded


def _text(body: bytes) -> str:
    return shorten(body.decode("utf-8", "replace").strip(), 200)
