"""The hand-written CRD, pinned: names, columns, validation bounds, a declared status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy.model.spec import (
    ANALYSIS_KEYS,
    CHECK_KEYS,
    DISRUPTION_KEYS,
    EXPECT_KEYS,
    REQUEST_KEYS,
    ROLLOUT_KEYS,
    SERVICE_KEYS,
    SPEC_KEYS,
    TEMPLATE_KEYS,
    AnalysisSpec,
    Check,
    Disruption,
    Expect,
    GoldenRequest,
    Keys,
    RolloutPolicy,
    ServiceSpec,
    Spec,
    TemplateSpec,
    field_default,
)
from modeldeploy.model.status import to_json
from tests.unit.builders import FULL

CRD = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "crds" / "modeldeployment.yaml").read_text()
)
(VERSION,) = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]["properties"]


def test_names_scope_and_subresources() -> None:
    assert CRD["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"]["shortNames"] == ["mdep"]
    assert (VERSION["name"], VERSION["served"], VERSION["storage"]) == ("v1alpha1", True, True)
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Active": ".spec.activeVersion",
        "Serving": ".status.servingVersion",
        "LastGood": ".status.lastGoodVersion",
        "Ready": ".status.readiness",
        "Phase": ".status.phase",
        "Reason": '.status.conditions[?(@.type=="Ready")].reason',
        "Age": ".metadata.creationTimestamp",
    }


def test_active_version_must_name_a_listed_version() -> None:
    (rule,) = SCHEMA["spec"]["x-kubernetes-validations"]
    assert rule["rule"] == "self.versions.exists(v, v.name == self.activeVersion)"
    versions = SCHEMA["spec"]["properties"]["versions"]
    assert versions["x-kubernetes-list-type"] == "map"
    assert versions["x-kubernetes-list-map-keys"] == ["name"]


def walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{key}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_every_list_and_string_in_spec_is_bounded_so_cel_cost_stays_bounded() -> None:
    for path, node in walk(SCHEMA["spec"], "spec"):
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "string":
            assert "maxLength" in node or "enum" in node, path


def declared(node: dict[str, Any], value: Any, path: str) -> None:
    if isinstance(value, dict):
        properties = node.get("properties") or {}
        for key, child in value.items():
            assert key in properties, f"{path}.{key} is written but not declared (pruned)"
            declared(properties[key], child, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            declared(node["items"], item, f"{path}[]")


def test_everything_the_operator_writes_to_status_is_declared() -> None:
    declared(SCHEMA["status"], to_json(FULL), "status")


DEFAULTED: list[tuple[str, type[Any], Keys]] = [
    ("spec", Spec, SPEC_KEYS),
    ("spec.template", TemplateSpec, TEMPLATE_KEYS),
    ("spec.service", ServiceSpec, SERVICE_KEYS),
    ("spec.disruption", Disruption, DISRUPTION_KEYS),
    ("spec.rollout", RolloutPolicy, ROLLOUT_KEYS),
    ("spec.analysis", AnalysisSpec, ANALYSIS_KEYS),
    ("spec.analysis.checks[]", Check, CHECK_KEYS),
    ("spec.validation.requests[]", GoldenRequest, REQUEST_KEYS),
    ("spec.validation.requests[].expect", Expect, EXPECT_KEYS),
]


def node_at(path: str) -> dict[str, Any]:
    nodes = dict(walk(SCHEMA["spec"], "spec"))
    return nodes[path]


@pytest.mark.parametrize(("path", "cls", "keys"), DEFAULTED, ids=[d[0] for d in DEFAULTED])
def test_crd_defaults_are_the_operators_defaults(path: str, cls: type[Any], keys: Keys) -> None:
    properties = node_at(path)["properties"]
    for key, (name, _) in keys.items():
        if "default" in properties.get(key, {}):
            assert properties[key]["default"] == field_default(cls, name), f"{path}.{key}"


def test_every_crd_default_is_one_the_operator_knows() -> None:
    known = {f"{path}.{key}" for path, _, keys in DEFAULTED for key in keys}
    defaulted = {
        path
        for path, node in walk(SCHEMA["spec"], "spec")
        if "default" in node and node.get("type") != "object"
    }
    assert defaulted <= known, defaulted - known
