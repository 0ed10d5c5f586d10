"""`kubectl modeldeploy`: status, history, versions, rollback, retry and wait for a ModelDeployment.

The kubectl plugin, beside the handlers at the top of the layers: it reads and
writes through `kube` and reuses the pure core's view of a resource (`model`,
`render`) so it judges quarantine exactly as the operator does.
Exit codes: 0 ok; 1 the release failed (or was reverted), the resource is stalled,
or a write was refused; 2 usage error or not found; 3 forbidden (RBAC); 4 the API
server is unreachable or failing (5xx); 124 timed out waiting.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from modeldeploy import constants as c
from modeldeploy.core.config import content_hash
from modeldeploy.core.release import judge, release_of
from modeldeploy.core.render import template_hash
from modeldeploy.core.revert import is_quarantined
from modeldeploy.kube import (
    ApiUnavailable,
    ConfigError,
    KubeCluster,
    api_errors,
    current_namespace,
    load_config,
)
from modeldeploy.model.resource import Resource, parse_resource
from modeldeploy.model.spec import JSON, Spec, SpecError
from modeldeploy.ports import Refused

EXIT_REFUSED, EXIT_USAGE, EXIT_FORBIDDEN, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 1, 2, 3, 4, 124


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.code = code


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def valid_spec(resource: Resource) -> Spec:
    if isinstance(resource.spec, SpecError):
        raise CliError(f"the spec is invalid: {resource.spec}")
    return resource.spec


def quarantined(resource: Resource, version: str) -> bool:
    """Recorded Failed with the content it has now: the operator will not roll it out."""
    spec = valid_spec(resource)
    return version in spec.versions and is_quarantined(
        resource.status, version, template_hash(resource.name, spec, spec.versions[version])
    )


# ------------------------------------------------------------------ commands


def serving_line(active: str, status: JSON) -> str:
    """What answers, and why it is not the active version when it is not."""
    serving = status.get("servingVersion")
    if not serving:
        return "-"
    standby = status.get("standby") or {}
    if standby.get("serving") and standby.get("version") == serving:
        return f"{serving} (the warm standby)"
    if serving != active:
        return f"{serving} (its pods alone: the Service leaves {active} out)"
    return str(serving)


def show_status(body: JSON) -> str:
    status = body.get("status") or {}
    lines = [
        f"Name:          {body['metadata']['name']}",
        f"Namespace:     {body['metadata']['namespace']}",
        f"Active:        {body['spec']['activeVersion']}",
        f"Serving:       {serving_line(body['spec']['activeVersion'], status)}",
        f"Last good:     {status.get('lastGoodVersion', '-')}",
        f"Ready:         {status.get('readiness', '-')}",
        f"Phase:         {status.get('phase', 'Pending')}",
    ]
    rollout = status.get("rollout")
    if rollout:
        lines.append(
            f"Rollout:       #{rollout['revision']} {rollout.get('from') or '-'} -> "
            f"{rollout['version']} ({rollout['trigger']}) {rollout['outcome']}"
            + (f": {rollout['reason']}" if rollout.get("reason") else "")
            + (f" [{rollout['strategy']}]" if rollout.get("strategy") else "")
        )
        if rollout.get("capacityWait"):
            lines.append(f"Waiting:       for room (not a failure): {rollout['capacityWait']}")
    validation = status.get("validation")
    if validation:
        lines.append(
            f"Validation:    {validation['version']} {validation.get('phase', '-')}: "
            f"{validation.get('message', '')}"
        )
    analysis = status.get("analysis")
    if analysis:
        lines.append(
            f"Analysis:      {analysis['version']} {analysis['phase']}, window "
            f"{analysis['startedAt']} -> {analysis['endsAt']}"
        )
        if analysis.get("guardEndsAt"):
            lines.append(
                f"Guard:         {analysis['version']} judged until {analysis['guardEndsAt']}; "
                f"a failure reverts to {analysis.get('previousGood') or '-'}"
            )
        checks = [
            (
                k["name"],
                k.get("lastValue"),
                k.get("passed", 0),
                k.get("failed", 0),
                k.get("inconclusive", 0),
                k.get("message"),
            )
            for k in analysis.get("checks") or ()
        ]
        lines.append(
            table(checks, ["  CHECK", "LAST VALUE", "PASSED", "FAILED", "INCONCLUSIVE", "MESSAGE"])
        )
    standby = status.get("standby")
    if standby:
        state = (
            "SERVING (a revert switched to it)" if standby.get("serving") else "warm, no traffic"
        )
        until = f" until {standby['endsAt']}" if standby.get("endsAt") else ""
        lines.append(f"Standby:       {standby['version']} {state}{until}")
    rows = [
        (k["type"], k["status"], k["reason"], k.get("message", ""))
        for k in status.get("conditions") or ()
    ]
    return "\n".join(lines) + "\n\n" + table(rows, ["CONDITION", "STATUS", "REASON", "MESSAGE"])


def show_history(body: JSON) -> str:
    rows = [
        (
            h["revision"],
            h.get("from") or "-",
            h["version"],
            h["trigger"],
            h["outcome"],
            h.get("reason"),
            h.get("startedAt"),
            h.get("finishedAt"),
        )
        for h in (body.get("status") or {}).get("history") or ()
    ]
    return table(
        rows, ["REVISION", "FROM", "TO", "TRIGGER", "OUTCOME", "REASON", "STARTED", "FINISHED"]
    )


def source_hashes(cluster: KubeCluster, body: JSON) -> dict[str, str | None]:
    """The content hash each version's source ConfigMap has now (None: missing or not
    readable with these credentials), to tell whether it drifted from its snapshot."""
    hashes: dict[str, str | None] = {}
    for entry in body["spec"]["versions"]:
        source = (entry.get("config") or {}).get("configMapName")
        if not source or source in hashes:
            continue
        try:
            found = cluster.read_config_map(body["metadata"]["namespace"], source)
        except (Refused, LookupError):
            found = None
        hashes[source] = (
            content_hash(found.get("data") or {}, found.get("binaryData") or {})
            if found is not None
            else None
        )
    return hashes


def config_of(entry: JSON, resource: Resource, sources: dict[str, str | None]) -> JSON | None:
    """A version's configuration: its source, the snapshot it runs with, and whether the
    source changed since that snapshot was taken (drifted: a rollback still restores the
    snapshot; retry or refresh-config takes a new one)."""
    source = (entry.get("config") or {}).get("configMapName")
    if not source:
        return None
    snapshot = resource.status.snapshots().get(entry["name"])
    if snapshot is not None and snapshot.source != source:
        snapshot = None
    now = sources.get(source)
    return {
        "configMap": source,
        "snapshot": snapshot.name if snapshot else None,
        "hash": snapshot.hash if snapshot else None,
        "sourceHash": now,
        "drifted": None if snapshot is None or now is None else now != snapshot.hash,
    }


def config_cell(config: JSON | None) -> str | None:
    if config is None:
        return None
    if config["hash"] is None:
        return f"{config['configMap']}: no snapshot yet"
    drift = {True: " (drifted)", False: "", None: " (source unreadable)"}[config["drifted"]]
    return f"{config['hash'][:8]}{drift}"


def version_rows(body: JSON, sources: dict[str, str | None] | None = None) -> list[JSON]:
    resource = parse_resource(body)
    ledger = {v["name"]: v for v in (body.get("status") or {}).get("versions") or ()}
    rows = []
    for entry in body["spec"]["versions"]:
        record = ledger.get(entry["name"], {})
        rows.append(
            {
                "name": entry["name"],
                "image": entry["image"],
                "active": entry["name"] == body["spec"]["activeVersion"],
                "state": record.get("state", "NeverRolledOut"),
                "quarantined": quarantined(resource, entry["name"]),
                "reason": record.get("reason"),
                "message": record.get("message"),
                "failedAt": record.get("failedAt"),
                "lastAvailableAt": record.get("lastAvailableAt"),
                "config": config_of(entry, resource, sources or {}),
            }
        )
    return rows


def show_versions(body: JSON, sources: dict[str, str | None] | None = None) -> str:
    rows = [
        (
            "*" if r["active"] else "",
            r["name"],
            r["image"],
            r["state"],
            "yes" if r["quarantined"] else "no",
            config_cell(r["config"]),
            r["reason"],
            r["lastAvailableAt"],
        )
        for r in version_rows(body, sources)
    ]
    return table(
        rows,
        ["", "VERSION", "IMAGE", "STATE", "QUARANTINED", "CONFIG", "REASON", "LAST AVAILABLE"],
    )


def rollback_target(body: JSON) -> str:
    """The newest version that rolled out successfully before the current one."""
    resource = parse_resource(body)
    spec = valid_spec(resource)
    for entry in resource.status.history:
        if (
            entry.outcome == c.OUTCOME_SUCCEEDED
            and entry.version != spec.active_version
            and entry.version in spec.versions
            and not quarantined(resource, entry.version)
        ):
            return entry.version
    raise CliError("no earlier version ever rolled out successfully; name one with --to")


def registry_version_target(body: JSON, number: str) -> str:
    """The version that runs registry model version `number`: the one status records
    as resolved to it, else the one whose spec names that number (docs/registry.md)."""
    resource = parse_resource(body)
    spec = valid_spec(resource)
    resolved = [r.version for r in resource.status.registry if r.model_version == number]
    declared = [
        name
        for name in spec.versions
        if (reference := spec.versions[name].registry) and reference.version == number
    ]
    for found in (resolved, declared):
        present = [name for name in found if name in spec.versions]
        if len(present) == 1:
            return present[0]
        if len(present) > 1:
            raise CliError(
                f"registry version {number} is run by {', '.join(present)}; name one with --to",
                EXIT_USAGE,
            )
    raise CliError(
        f"no version of {resource.name} resolved to or names registry version {number}",
        EXIT_USAGE,
    )


def rollback(cluster: KubeCluster, body: JSON, target: str | None) -> str:
    resource = parse_resource(body)
    spec = valid_spec(resource)
    target = target or rollback_target(body)
    if target not in spec.versions:
        raise CliError(f'version "{target}" is not in spec.versions', EXIT_USAGE)
    record = resource.status.version_record(target)
    if record and quarantined(resource, target):
        raise CliError(
            f"{target} is quarantined (it failed: {record.reason}); retry it explicitly with: "
            f"kubectl modeldeploy retry {resource.name} {target}"
        )
    if target == spec.active_version:
        return f"{resource.name} already selects {target}; nothing to do"
    if not cluster.select_version(body, target):
        raise CliError(
            f"{resource.name}'s spec changed meanwhile; look again "
            f"(kubectl modeldeploy status {resource.name}) and retry"
        )
    return (
        f"{resource.name}: spec.activeVersion {spec.active_version} -> {target} (manual "
        f"rollback). Follow it with: kubectl modeldeploy wait {resource.name} --for=ready"
    )


ANNOTATE_ATTEMPTS = 3  # the operator writes status often: read again and annotate again


def retry(cluster: KubeCluster, body: JSON, version: str) -> str:
    resource = parse_resource(body)
    spec = valid_spec(resource)
    if version not in spec.versions:
        raise CliError(f'version "{version}" is not in spec.versions', EXIT_USAGE)
    note = "" if quarantined(resource, version) else f" ({version} was not quarantined)"
    for _ in range(ANNOTATE_ATTEMPTS):
        if cluster.annotate(body, c.ANNOTATION_RETRY, version):
            return f"{resource.name}: retry of {version} requested{note}; the operator rolls it out"
        body = cluster.get(resource.namespace, resource.name)
    raise CliError(f"{resource.name} changed meanwhile, {ANNOTATE_ATTEMPTS} times; try again")


def wait(cluster: KubeCluster, namespace: str, name: str, timeout: float) -> str:
    """Wait for the release the spec stands for when called: 0 when it serves, 1 when it
    failed (or was reverted), stalled or was replaced; never passes a reverted release."""
    deadline = time.monotonic() + timeout
    release = release_of(parse_resource(cluster.get(namespace, name)))
    while True:
        judgement = judge(parse_resource(cluster.get(namespace, name)), release)
        if judgement is not None and judgement.succeeded:
            return f"{name}: {judgement.message}"
        if judgement is not None:
            raise CliError(f"{name}: the release of {release.version} failed: {judgement.message}")
        if time.monotonic() >= deadline:
            raise CliError(
                f"timed out after {timeout:g}s waiting for {name} to serve {release.version}",
                EXIT_TIMEOUT,
            )
        time.sleep(0.5)


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="kubectl modeldeploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("-n", "--namespace", help="default: the current context's namespace")
    root.add_argument("-o", "--output", choices=["table", "json"], default="table")
    commands = root.add_subparsers(dest="command", required=True)
    for name, text in [
        ("status", "conditions, rollout and versions in brief"),
        ("history", "every rollout, newest first"),
        ("versions", "the ledger: each version's state and configuration snapshot"),
    ]:
        commands.add_parser(name, help=text).add_argument("name")
    back = commands.add_parser(
        "rollback", help="select an earlier version (default: the last good one before the current)"
    )
    back.add_argument("name")
    to = back.add_mutually_exclusive_group()
    to.add_argument("--to", "--version", dest="to", help="the version to go back to")
    to.add_argument(
        "--to-registry-version",
        dest="registry_version",
        help="the version that runs this model version of spec.registry (resolved, or named)",
    )
    again = commands.add_parser("retry", help="lift a version's quarantine and roll it out")
    again.add_argument("name")
    again.add_argument("version")
    waiting = commands.add_parser(
        "wait", help="wait for the current release to serve (exit 1 if it failed or was reverted)"
    )
    waiting.add_argument("name")
    waiting.add_argument("--for", dest="condition", choices=["ready"], default="ready")
    waiting.add_argument("--timeout", type=parse_duration, default=300.0, help="e.g. 90s, 5m")
    return root


def run(args: argparse.Namespace, cluster: KubeCluster) -> str:
    namespace = args.namespace or current_namespace()
    if args.command == "wait":
        return wait(cluster, namespace, args.name, args.timeout)
    body = cluster.get(namespace, args.name)
    if args.command == "rollback":
        if args.registry_version:
            return rollback(cluster, body, registry_version_target(body, args.registry_version))
        return rollback(cluster, body, args.to)
    if args.command == "retry":
        return retry(cluster, body, args.version)
    if args.command == "versions":
        sources = source_hashes(cluster, body)
        if args.output == "json":
            return json.dumps(version_rows(body, sources), indent=2)
        return show_versions(body, sources)
    if args.output == "json":
        status = body.get("status") or {}
        views: dict[str, Any] = {"status": status, "history": status.get("history") or []}
        return json.dumps(views[args.command], indent=2)
    shows = {"status": show_status, "history": show_history}
    return shows[args.command](body)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        load_config()
        with api_errors():
            print(run(args, KubeCluster()))
    except Refused as error:
        code = EXIT_FORBIDDEN if error.code == 403 else EXIT_REFUSED
        print(
            f"Error: the API server refused it (HTTP {error.code}): {error.message}",
            file=sys.stderr,
        )
        return code
    except ApiUnavailable as error:
        print(f"Error: the API server did not answer: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except LookupError as error:
        print(f"Error: {error.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"Error: cannot reach a cluster: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as error:
        print(f"Error: {error}", file=sys.stderr)
        return error.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
