"""How modeldeploy reaches the API server: configuration, refusals, raw requests.

The bottom of the `kube` package (the only code that imports the `kubernetes`
client): loading credentials, turning the API's error answers into `Refused` or
`ApiUnavailable` with the API server's own message, and one JSON request with a
whole-request deadline for the calls the generated client has no method for.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from modeldeploy.model.spec import JSON
from modeldeploy.ports import Refused

DEADLINE = 30.0  # seconds a read may take, connect to answer (urllib3's total timeout)
# A write is one request (the operator's client never retries one: load_config) that must
# end within this: a fenced write sent just before the renew deadline then ends before
# another process can lead (leader.Timing.write_deadline sets it with leader election).
WRITE_DEADLINE = 5.0
# The API server answers 500 with this when a server-side apply's body has a field of
# the wrong type (an env entry's configMapKeyRef given as a string): the same body gets
# the same answer every time, so it is a refusal to show and back off from, not an outage.
_UNTYPED_APPLY = "failed to create typed patch object"
_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace() -> str:
    """The namespace of the kubeconfig's current context, as kubectl would use."""
    try:
        _, context = kubernetes.config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return str((context or {}).get("context", {}).get("namespace") or "default")


class ConfigError(Exception):
    """No way to reach a cluster: not in a pod, and no usable kubeconfig."""


def load_config(connections: int | None = None, retries: bool = True) -> None:
    """In a pod: the ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config.

    `connections`: HTTP connections kept per API server, one per concurrent caller;
    fewer and urllib3 opens and drops a connection for each extra request.
    `retries=False`: urllib3 never sends a request again by itself (it would, three
    times, after a connection error): the operator's writes are fenced just before
    they are sent, and a renewal or write must end within its own deadline.
    """
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        try:
            kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            raise ConfigError(
                f"no in-cluster credentials and no usable kubeconfig "
                f"(KUBECONFIG or ~/.kube/config): {error}"
            ) from None
    if connections is not None:
        configuration.connection_pool_maxsize = max(connections, 4)
    if not retries:
        configuration.retries = False
    kubernetes.client.Configuration.set_default(configuration)


def pod_namespace() -> str | None:
    """The namespace this pod runs in, from its ServiceAccount mount; None outside a pod."""
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as mounted:
            return mounted.read().strip() or None
    except OSError:
        return None


def api_message(error: ApiException) -> str:
    """The API server's own words from an error answer (its Status.message)."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or error.reason or f"HTTP {error.status}")


def failed_precondition(error: ApiException) -> bool:
    """409 (resourceVersion moved) or a JSON-patch `test` that no longer holds (422)."""
    if error.status == 409:
        return True
    text = api_message(error).lower()
    return ("test" in text and "failed" in text) or "unable to remove nonexistent key" in text


class ApiUnavailable(Exception):
    """The API server did not answer, or answered 5xx/429: try again later."""


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """For callers that never import the client (the plugin): every API error becomes
    `Refused` (the API said no) or `ApiUnavailable` (it could not answer)."""
    try:
        with refusals():
            yield
    except ApiException as error:
        if error.status == 404:
            raise LookupError(api_message(error)) from None
        raise ApiUnavailable(f"HTTP {error.status}: {api_message(error)}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise ApiUnavailable(str(error) or type(error).__name__) from None


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """Turns the API's refusals into `Refused`: a 4xx other than 404, 429 and a failed
    precondition (409, a JSON-patch `test`), and a server-side apply whose body does not
    fit the kind's schema; anything else stays an ApiException."""
    try:
        yield
    except ApiException as error:
        status = int(error.status or 0)
        if 400 <= status < 500 and status not in (404, 429) and not failed_precondition(error):
            raise Refused(status, api_message(error)) from None
        if status == 500 and api_message(error).startswith(_UNTYPED_APPLY):
            raise Refused(status, api_message(error)) from None
        raise


def request_json(
    api: Any,
    method: str,
    path: str,
    *,
    timeout: float | tuple[float, float],
    query: list[tuple[str, str]] | None = None,
    body: JSON | None = None,
    accept: str = "application/json",
) -> JSON:
    """One request with the client's credentials and a deadline in seconds: a number
    for the whole request, or (connect, read); the JSON answer, or ApiException if not
    2xx."""
    headers = {"Accept": accept}
    if body is not None:
        headers["Content-Type"] = "application/json"
    method, url, headers, body, _ = api.param_serialize(
        method,
        path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(method, url, header_params=headers, body=body, _request_timeout=timeout)
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException(http_resp=response)
    answer: JSON = json.loads(data)
    return answer
