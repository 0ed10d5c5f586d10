"""`python -m modeldeploy`: run the operator (all namespaces unless --namespace is given).

The entry point above the handlers: parses flags, configures kopf's logging,
and runs kopf's operator loop with our handlers registered.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf

from modeldeploy import handlers
from modeldeploy.kube import ConfigError, current_namespace, load_config, pod_namespace
from modeldeploy.leader import DEFAULT_LEASE_NAME, Timing, new_identity
from modeldeploy.model.egress import endpoint, parse_rule, source_endpoint
from modeldeploy.runtime import DEFAULT_STALL_TIMEOUT_S, DEFAULT_WORKERS, Election, Options

DEFAULT_TIMING = Timing()


def positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return number


def seconds(text: str) -> float:
    """A duration: `15s`, `500ms`, `2m`, or a bare number of seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    unit = next((u for u in units if text.endswith(u) and text[: -len(u)]), "")
    try:
        value = float(text[: -len(unit)] if unit else text) * units.get(unit, 1.0)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a duration above 0 such as 15s, not {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="modeldeploy", description=__doc__)
    parser.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="serve only this namespace (repeatable); default: all namespaces",
    )
    parser.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="kopf liveness endpoint; empty to disable",
    )
    parser.add_argument("--log-format", choices=["plain", "full", "json"], default="plain")
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port (0: off)"
    )
    parser.add_argument(
        "--webhook", default=None, help="operator-wide webhook URL for rollout notifications"
    )
    parser.add_argument(
        "--prometheus", default=None, help="default Prometheus URL for spec.analysis"
    )
    parser.add_argument(
        "--webhook-deadline",
        type=positive,
        default=3,
        metavar="SECONDS",
        help="how long one webhook request may take, start to end (each of up to 3 "
        "attempts); default 3",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="address /metrics binds to (it names every resource); default 127.0.0.1",
    )
    parser.add_argument(
        "--allowed-analysis-source",
        action="append",
        default=[],
        metavar="[NAMESPACE=]PREFIX",
        help="a URL prefix tenants (of NAMESPACE only, if given) may name in "
        "spec.analysis.prometheus (repeatable); --prometheus serves every namespace, "
        "--prometheus-for its own",
    )
    parser.add_argument(
        "--allowed-webhook",
        action="append",
        default=[],
        metavar="[NAMESPACE=]PREFIX",
        help="a URL prefix tenants (of NAMESPACE only, if given) may name as a webhook "
        "(repeatable)",
    )
    parser.add_argument(
        "--allowed-registry",
        action="append",
        default=[],
        metavar="[NAMESPACE=]PREFIX",
        help="a URL prefix tenants (of NAMESPACE only, if given) may name as "
        "spec.registry.mlflow.trackingURI (repeatable)",
    )
    parser.add_argument("--allowed-url-prefix", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument(
        "--prometheus-for",
        action="append",
        default=[],
        metavar="NAMESPACE=URL",
        help="the Prometheus for one namespace's analysis (repeatable)",
    )
    parser.add_argument(
        "--prometheus-namespace-param",
        default=None,
        metavar="NAME",
        help="send the resource's namespace as this query parameter (a tenancy proxy "
        "such as prom-label-proxy forces every query to it)",
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=DEFAULT_WORKERS,
        help="resources reconciled at once (each one by one worker at a time); "
        f"default {DEFAULT_WORKERS}",
    )
    parser.add_argument(
        "--stall-timeout",
        type=seconds,
        default=DEFAULT_STALL_TIMEOUT_S,
        help="the liveness endpoint fails when queued work has seen no reconcile finish this "
        f"long; default {DEFAULT_STALL_TIMEOUT_S:g}s",
    )
    election = parser.add_argument_group(
        "leader election", "one of several replicas writes; the others keep warm caches"
    )
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="take part in leader election on a coordination.k8s.io/v1 Lease",
    )
    election.add_argument(
        "--leader-elect-namespace",
        help="the Lease's namespace; default: the pod's, else the kubeconfig context's",
    )
    election.add_argument("--leader-elect-lease-name", default=DEFAULT_LEASE_NAME)
    for flag, default, text in (
        (
            "lease-duration",
            DEFAULT_TIMING.lease_duration,
            "how long followers wait before taking an unrenewed Lease",
        ),
        (
            "renew-deadline",
            DEFAULT_TIMING.renew_deadline,
            "a leader that has not renewed for this long stops writing",
        ),
        ("retry-period", DEFAULT_TIMING.retry_period, "between two attempts to acquire or renew"),
    ):
        election.add_argument(
            f"--leader-elect-{flag}",
            type=seconds,
            default=default,
            help=f"{text}; default {default:g}s",
        )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def options_of(args: argparse.Namespace) -> Options:
    """The runtime's options, or SystemExit with one sentence naming the bad flag."""
    if args.allowed_url_prefix:
        raise SystemExit(
            "--allowed-url-prefix allowed a URL for every purpose; it is split into "
            "--allowed-analysis-source and --allowed-webhook (each [NAMESPACE=]PREFIX)"
        )
    analysis = tuple(parse_rule(entry) for entry in args.allowed_analysis_source)
    webhooks = tuple(parse_rule(entry) for entry in args.allowed_webhook)
    registries = tuple(parse_rule(entry) for entry in args.allowed_registry)
    per_namespace = {}
    for entry in args.prometheus_for:
        namespace, _, url = entry.partition("=")
        if not namespace or not url:
            raise SystemExit(f"--prometheus-for wants NAMESPACE=URL, not {entry!r}")
        per_namespace[namespace] = url
    urls = [
        ("--webhook", args.webhook, endpoint),
        ("--prometheus", args.prometheus, source_endpoint),
        *(("--prometheus-for", url, source_endpoint) for url in per_namespace.values()),
        *(("--allowed-analysis-source", url, source_endpoint) for _, url in analysis),
        *(("--allowed-webhook", url, endpoint) for _, url in webhooks),
        *(("--allowed-registry", url, source_endpoint) for _, url in registries),
    ]
    for flag, url, parse in urls:
        if url and isinstance(why := parse(url), str):
            raise SystemExit(f"{flag} must be an http:// or https:// URL: {why}")
    return Options(
        workers=args.workers,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        webhook_url=args.webhook,
        prometheus_url=args.prometheus,
        prometheus_for=per_namespace,
        prometheus_namespace_param=args.prometheus_namespace_param,
        allowed_analysis=analysis,
        allowed_webhooks=webhooks,
        allowed_registries=registries,
        webhook_deadline_s=float(args.webhook_deadline),
        namespaces=tuple(args.namespace),
        election=election(args),
        stall_timeout=args.stall_timeout,
    )


def election(args: argparse.Namespace) -> Election | None:
    """Leader election's settings from the flags; SystemExit with the reason if they are wrong."""
    try:
        timing = Timing(
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        )
    except ValueError as error:
        raise SystemExit(f"modeldeploy: {error}") from None
    if not args.leader_elect:
        return None
    return Election(
        namespace=args.leader_elect_namespace or pod_namespace() or current_namespace(),
        lease_name=args.leader_elect_lease_name,
        identity=new_identity(),
        timing=timing,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    options = options_of(args)
    try:
        # Here, once: a sentence on failure, not a startup handler's traceback; one
        # pooled connection per reconcile worker; no request sent twice behind our back.
        load_config(connections=args.workers, retries=False)
    except ConfigError as error:
        raise SystemExit(f"modeldeploy: cannot reach a cluster: {error}") from None
    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    if not args.verbose:
        # kopf logs every handler call per watch event; at scale that drowns what matters.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    assert handlers.configure  # the import registers the handlers with kopf
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=list(args.namespace),
            liveness_endpoint=args.liveness or None,
            memo=kopf.Memo(options=options),
        )
    )


if __name__ == "__main__":
    main()
