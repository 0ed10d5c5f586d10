"""Hypothesis strategies for ModelDeployment bodies, valid-looking and hostile (test_fuzz.py).

Every field of crds/modeldeployment.yaml gets values inside its bounds, at them and past
them, of the wrong type, and, where the schema keeps unknown fields (probes, tolerations,
security contexts, env valueFrom), any JSON at all: the API server lets that through to
the Deployment the operator renders. A few versions carry env values sized to bring the
object near the API server's storage limit (1.5 MiB in etcd).
"""

from __future__ import annotations

from typing import Any, TypeVar

from hypothesis import strategies as st

from modeldeploy.constants import ANNOTATION_RETRY, API_VERSION, KIND

JSON = dict[str, Any]
T = TypeVar("T")

# The operator under test runs with --prometheus PROMETHEUS and --allowed-webhook HOOKS:
# nothing listens on port 9 of loopback, so what is allowed fails fast and goes nowhere.
PROMETHEUS = "http://127.0.0.1:9"
HOOKS = f"{PROMETHEUS}/hooks/"
TAKEN = "taken"  # the test makes a Deployment of that name first (NameConflict)
HOOK_SECRET = "hook"  # a Secret the test makes: key "url" under HOOKS, key "bad" not a URL
ENV_VALUE_MAX = 32768  # the CRD's maxLength of an env value


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of the strategies, the numbers giving how often each is drawn.

    Hypothesis favours the ends of a range, so the first (the usual) choice is put at
    both ends of the pool and the rarer ones between them."""
    (weight, usual), *rest = choices
    rarer = [strategy for weight, strategy in rest for _ in range(weight)]
    pool = [usual] * (weight // 2) + rarer + [usual] * (weight - weight // 2)
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def edges(usual: st.SearchStrategy[T], *odd: object) -> st.SearchStrategy[Any]:
    """Mostly `usual`; otherwise a value at or past a bound, or of another type.

    A body has a dozen fields or so: odd values stay rare enough that about half the
    bodies pass admission and reach the operator."""
    return weighted((24, usual), (1, st.sampled_from(odd)))


def dns_label(most: int = 20) -> st.SearchStrategy[str]:
    return st.from_regex(rf"\A[a-z]([-a-z0-9]{{0,{most}}}[a-z0-9])?\Z")


# Any JSON, for the fields whose schema keeps unknown fields.
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
ANY_JSON: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=6,
)


def loose(keys: list[str], *known: JSON) -> st.SearchStrategy[JSON]:
    """An object of a preserved-unknown-fields schema: a known shape (good or bad), or
    its own keys (or others) holding any JSON."""
    return st.one_of(
        st.sampled_from(known),
        st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), ANY_JSON, max_size=3),
    )


# ------------------------------------------------------------------ names

RESOURCE_NAMES = edges(
    dns_label(),
    "m",
    "a" * 63,
    "a" * 64,
    "b" * 253,
    "b" * 254,
    "1model",
    "9",
    "model.v1",
    "a..b",
    "-a",
    "a-",
    "Model",
    "mödel",
    "a_b",
    "",
    TAKEN,
    "a" + "-" * 61 + "z",
    "0" * 63,
    "x.y.z",
)
NAMES = weighted(
    (10, RESOURCE_NAMES),
    (1, st.from_regex(r"\A[0-9][a-z0-9]{0,8}\Z")),  # digits first: no Service may bear it
    (1, st.from_regex(r"\A[a-z0-9]{1,6}(\.[a-z0-9]{1,6}){1,3}\Z")),  # a subdomain, not a label
)
VERSION_NAMES = edges(
    st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,10}[a-z0-9])?\Z"),
    "v1",
    "v2",
    "1.0",
    "v" * 63,
    "v" * 64,
    "V1",
    "v 1",
    "",
    "v_1",
    "vü",
    "a..b",
    ".v",
    "0",
    "v1.",
    "v" + "." * 61 + "1",
    7,
)

# ------------------------------------------------------------------ one version

IMAGES = edges(
    st.sampled_from(
        [
            "registry.example/m:1",
            "registry.example/m:2",
            "registry.example/m:3-crashloop",  # the test bed's pod behaviours, by tag suffix
            "registry.example/m:4-pullfail",
            "registry.example/m:5-notready",
            "registry.example/m:6-oom",
        ]
    ),
    "",
    " ",
    "a b",
    "régistry.example/m:1",
    "UPPER/Case:TAG",
    "x" * 512,
    "x" * 513,
    "\x00",
    "m@sha256:" + "0" * 64,
    ["m:1"],
    "\u200b",
    "m:1\t",
)
ENV_NAMES = edges(
    st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,10}\Z"),
    "MODEL_NAME",
    "MODEL_VERSION",
    "MODEL_URI",
    "",
    "1X",
    "a-b.c",
    "X" * 256,
    "X" * 257,
    "BAD NAME",
    "é",
)
VALUE_FROM = loose(
    ["fieldRef", "secretKeyRef", "configMapKeyRef", "resourceFieldRef"],
    {"fieldRef": {"fieldPath": "metadata.name"}},
    {"secretKeyRef": {"name": "nope", "key": "k"}},
    {"resourceFieldRef": {"resource": "limits.cpu"}},
    {},
    {"bogus": 1},
    {"fieldRef": {"fieldPath": "spec.nothing"}},
    {"configMapKeyRef": "x"},
    {"fieldRef": {"fieldPath": 5}},
)
ENV_ENTRY = st.fixed_dictionaries(
    {"name": ENV_NAMES},
    optional={
        "value": edges(st.text(max_size=20), "", "x" * ENV_VALUE_MAX, "x" * (ENV_VALUE_MAX + 1), 5),
        "valueFrom": VALUE_FROM,
    },
)
QUANTITIES = edges(
    st.sampled_from(["100m", "1", "0", "1Gi", "512Mi", "250m", "2"]) | st.integers(0, 64),
    "-1",
    "1e3",
    ".5",
    "1.5Gi",
    "1e1000",
    "1e-10",
    "1000000000000",
    "+1",
    "1Ki",
    "1k",
    "18446744073709551616",
    "1E",
    "",
    "lots",
    "1 Gi",
    -2,
    2**63 - 1,
    2**64,
    0.5,
)
RESOURCE_KINDS = edges(
    st.sampled_from(["cpu", "memory"]),
    "ephemeral-storage",
    "nvidia.com/gpu",
    "hugepages-2Mi",
    "foo",
    "",
    "example.com/widget",
    "CPU",
)
QUANTITY_MAP = st.dictionaries(RESOURCE_KINDS, QUANTITIES, max_size=3)
RESOURCES = weighted(
    (16, st.fixed_dictionaries({}, optional={"requests": QUANTITY_MAP, "limits": QUANTITY_MAP})),
    (
        2,
        st.sampled_from(
            [  # a request above its limit: CEL checks the template's, not a version's
                {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
                {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
                {"requests": {"cpu": "1e1000"}, "limits": {"cpu": "1"}},
            ]
        ),
    ),
    (1, st.sampled_from(["lots", []])),
)


def bulk_env(total: int) -> list[JSON]:
    """Env entries of the largest values the schema allows, `total` bytes of values in all."""
    entries = []
    for index in range(0, total, ENV_VALUE_MAX):
        size = min(ENV_VALUE_MAX, total - index)
        entries.append({"name": f"BULK_{index // ENV_VALUE_MAX}", "value": "x" * size})
    return entries


# Totals around etcd's request limit (1.5 MiB): some fit the spec but not the spec with
# its status or its Deployment; beyond 3 MiB the API server refuses the request itself.
BULK_ENV = st.sampled_from(
    [1_400_000, 1_555_000, 1_564_000, 1_568_000, 1_570_000, 1_580_000, 2_000_000, 3_300_000]
).map(bulk_env)
ENVS = weighted(
    (30, st.lists(ENV_ENTRY, max_size=4, unique_by=lambda entry: str(entry["name"]))),
    (1, st.lists(ENV_ENTRY, min_size=2, max_size=4)),  # names may repeat
    (1, BULK_ENV),
    (1, st.just([{"name": f"E{i}", "value": "v"} for i in range(65)])),  # maxItems 64
)
VERSION_FIELDS = {
    "modelUri": edges(
        st.just("s3://models/m/1"), "", "file:///etc/passwd", "x" * 2048, "x" * 2049, "ü", 1
    ),
    "env": ENVS,
    "resources": RESOURCES,
}


def version_entry(name: Any) -> st.SearchStrategy[JSON]:
    return st.fixed_dictionaries({"name": st.just(name), "image": IMAGES}, optional=VERSION_FIELDS)


@st.composite
def versions_and_active(draw: st.DrawFn) -> tuple[Any, Any]:
    """spec.versions (duplicates and all) and an activeVersion, mostly one of them."""
    many = draw(weighted((40, st.just(0)), (1, st.sampled_from([50, 1000, 1001]))))
    if many:
        simple = [{"name": f"v{i}", "image": "registry.example/m:1"} for i in range(many)]
        return simple, draw(st.sampled_from(["v0", f"v{many - 1}", f"v{many}"]))
    names = draw(
        weighted(
            (40, st.lists(VERSION_NAMES, min_size=1, max_size=4, unique_by=str)),
            (1, st.lists(VERSION_NAMES, max_size=4)),  # none, or names that repeat
        )
    )
    entries = [draw(version_entry(name)) for name in names]
    listed = st.sampled_from(names) if names else VERSION_NAMES
    active = draw(weighted((30, listed), (1, VERSION_NAMES), (1, st.just("v" * 64))))
    wrong = draw(weighted((40, st.just(None)), (1, st.sampled_from(["v1", {"v1": {}}]))))
    return (wrong if wrong is not None else entries), active


# ------------------------------------------------------------------ the pod template

SECONDS_PROBE_KEYS = ["periodSeconds", "timeoutSeconds", "failureThreshold", "initialDelaySeconds"]
PROBES = loose(
    ["httpGet", "tcpSocket", "exec", "grpc", "successThreshold", *SECONDS_PROBE_KEYS],
    {"httpGet": {"path": "/ready", "port": "http"}},
    {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    {"tcpSocket": {"port": 65536}},
    {"exec": {"command": ["true"]}},
    {"grpc": {"port": 9000}},
    {},
    {"httpGet": {"port": "nope"}},
    {"initialDelaySeconds": -1, "httpGet": {"port": "http"}},
    {"httpGet": "x"},
    {"exec": {"command": "ls"}},
    {"failureThreshold": 2**40, "tcpSocket": {"port": "http"}},
)
TOLERATIONS = loose(
    ["key", "operator", "value", "effect", "tolerationSeconds"],
    {"operator": "Exists"},
    {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
    {"key": "k", "operator": "Bogus"},
    {"effect": "Sometimes"},
    {"key": 5},
    {"tolerationSeconds": "x"},
    {"key": "bad key!", "operator": "Exists"},
    {"operator": "Exists", "tolerationSeconds": 60, "effect": "NoExecute"},
)
POD_SECURITY = loose(
    ["runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "seccompProfile", "sysctls"],
    {},
    {"runAsNonRoot": True},
    {"runAsUser": -1},
    {"runAsUser": "root"},
    {"seccompProfile": {"type": "Nope"}},
    {"sysctls": [{"name": "bad name", "value": "1"}]},
    {"fsGroup": 2**40},
    {"seLinuxOptions": {"level": "s0:c123,c456"}},
)
CONTAINER_SECURITY = loose(
    ["privileged", "capabilities", "runAsNonRoot", "procMount", "readOnlyRootFilesystem"],
    {},
    {"privileged": True},
    {"capabilities": {"add": ["ALL"]}},
    {"runAsNonRoot": "yes"},
    {"procMount": "Weird"},
    {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
    {"privileged": True, "allowPrivilegeEscalation": False},
    {"capabilities": {"drop": "ALL"}},
)
NODE_SELECTORS = st.dictionaries(
    edges(st.sampled_from(["type", "disk"]), "kubernetes.io/hostname", "bad key!", "", "a/b/c"),
    edges(st.sampled_from(["kwok", "ssd"]), "kwok-node-0", "nowhere", "x" * 64, "x" * 257, ""),
    max_size=3,
)
PORTS = edges(st.integers(1, 65535), -1, 0, 65536, 2**31, "8080")
TEMPLATE_FIELDS = {
    "port": PORTS,
    "readinessProbe": PROBES,
    "livenessProbe": PROBES,
    "resources": RESOURCES,
    "nodeSelector": NODE_SELECTORS,
    "tolerations": weighted(
        (6, st.lists(TOLERATIONS, max_size=3)),
        (1, st.just([{"operator": "Exists"}] * 33)),  # maxItems 32
    ),
    "podSecurityContext": POD_SECURITY,
    "securityContext": CONTAINER_SECURITY,
    "serviceAccountName": edges(st.just("default"), "", "nope", "Bad_Name", "a" * 253, "a" * 254),
    "automountServiceAccountToken": edges(st.booleans(), "yes"),
    # Both drawn freely: a grace shorter than the drain must be refused at admission.
    "drainSeconds": edges(st.integers(0, 60), -1, 3601, "5"),
    "terminationGracePeriodSeconds": edges(st.integers(0, 120), -1, 86401, "35"),
}
TEMPLATES = weighted(
    (8, st.fixed_dictionaries({}, optional=TEMPLATE_FIELDS)),
    (1, st.sampled_from(["x", [], {"port": 8080, "sidecar": {}}])),
)

# ------------------------------------------------------------------ the rest of the spec

SERVICES = st.fixed_dictionaries(
    {}, optional={"enabled": edges(st.booleans(), "no"), "port": PORTS}
)
SECONDS = edges(st.integers(1, 600), 0, 1, 86400, 86401, -5)
ROLLOUTS = st.fixed_dictionaries(
    {},
    optional={
        "autoRollback": edges(st.booleans(), "no"),
        "progressDeadlineSeconds": SECONDS,
        "readyTimeoutSeconds": SECONDS,
        "maxRestarts": edges(st.integers(0, 5), -1, 1000, 1001),
        "unschedulableGraceSeconds": edges(st.integers(0, 120), -1, 86400, 86401),
        "maxSurge": edges(st.integers(1, 4), 0, 1000, 1001),
        "historyLimit": edges(st.integers(1, 30), 0, 100, 101),
        "onFailure": edges(st.sampled_from(["RevertSpec", "KeepSpec"]), "", "keepspec", "Bogus", 1),
    },
)
URLS = edges(
    st.sampled_from([PROMETHEUS, f"{PROMETHEUS}/", f"{HOOKS}x"])
    | st.from_regex(r"\Ahttps?://\S{1,40}\Z"),
    f"{PROMETHEUS}/prom/../x?y=1",
    "http://user:pw@127.0.0.1:9/",
    f"{PROMETHEUS}/#frag",
    f"{PROMETHEUS}/#",
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9/",
    "http://[fe80::1%25eth0]:9/",
    "https://prometheus.example:99999/",
    "http://" + "a" * 2041,
    f"{PROMETHEUS}/" + "p" * 2030,
    "http://exa mple/",
    "http://例え.jp/",
    "HTTP://X/",
    "http://:80/",
    "http://127.0.0.1:9\\@evil.example/",
    "https://",
    "http://127.0.0.1:0/",
    "http://2130706433/",
    f"{HOOKS}..%2f..%2fadmin",
    "http://localhost:9/",
)
BOUNDS = edges(
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6),
    "1",
    1e308,
    -1e308,
    2**64,
)


def check_name(check: JSON) -> str:
    return str(check["name"])


CHECK_FIELDS = {
    "name": edges(dns_label(10), "", "Bad", "a" * 63, "a" * 64, "a.b"),
    "query": edges(
        st.sampled_from(["up", 'rate(http_requests_total{job="{{name}}"}[1m])'])
        | st.text(min_size=1, max_size=20),
        "",
        "{{version}}" * 10,
        "x" * 4096,
        "x" * 4097,
        "sum(",
        "\x00",
    ),
}
CHECK_OPTIONS = {
    "failureLimit": edges(st.integers(0, 3), -1, 1000, 1001),
    "onNoData": edges(st.sampled_from(["Inconclusive", "Fail"]), "", "fail"),
}
CHECKS = weighted(
    (6, st.fixed_dictionaries({**CHECK_FIELDS, "max": BOUNDS}, optional=CHECK_OPTIONS)),
    (3, st.fixed_dictionaries({**CHECK_FIELDS, "min": BOUNDS}, optional=CHECK_OPTIONS)),
    (
        2,
        st.fixed_dictionaries(
            CHECK_FIELDS, optional={**CHECK_OPTIONS, "max": BOUNDS, "min": BOUNDS}
        ),
    ),
)
ANALYSES = weighted(
    (
        6,
        st.fixed_dictionaries(
            {
                "checks": weighted(
                    (16, st.lists(CHECKS, min_size=1, max_size=3, unique_by=check_name)),
                    (1, st.lists(CHECKS, max_size=3)),  # none, or names that repeat
                    (1, st.lists(CHECKS, min_size=17, max_size=17)),
                )
            },
            optional={
                "prometheus": URLS,
                "bakeSeconds": edges(st.integers(0, 5), -1, 300, 86400, 86401),
                "intervalSeconds": edges(st.integers(1, 5), 0, 30, 3600, 3601),
            },
        ),
    ),
    (1, st.sampled_from([{}, {"prometheus": PROMETHEUS}, {"checks": "up"}])),
)
SECRET_REFS = st.fixed_dictionaries(
    {
        "name": edges(st.just(HOOK_SECRET), "nope", "", "x" * 254),
        "key": edges(st.just("url"), "bad", "missing", ""),
    }
)
WEBHOOKS = st.one_of(
    st.fixed_dictionaries({"url": URLS}),
    st.fixed_dictionaries({"urlFrom": st.fixed_dictionaries({"secretKeyRef": SECRET_REFS})}),
    st.sampled_from(
        [
            {},
            {"url": f"{HOOKS}x", "urlFrom": {"secretKeyRef": {"name": HOOK_SECRET, "key": "url"}}},
            {"urlFrom": {"secretKeyRef": {"name": HOOK_SECRET}}},
            {"urlFrom": {}},
        ]
    ),
)
NOTIFICATIONS = st.one_of(st.just({}), st.fixed_dictionaries({"webhook": WEBHOOKS}))
REPLICAS = edges(st.sampled_from([0, 1, 1, 2, 3]), -1, 1000, 1001, 2**31, "3")
SPEC_FIELDS = {
    "replicas": REPLICAS,
    "template": TEMPLATES,
    "service": SERVICES,
    "rollout": ROLLOUTS,
    "analysis": ANALYSES,
    "notifications": NOTIFICATIONS,
}


# Fields the schema does not have (kubectl's strict field validation refuses them).
UNKNOWN_FIELDS: list[JSON] = [{}] * 40 + [{"replica": 3}, {"extra": {}}]


@st.composite
def metadata(draw: st.DrawFn) -> JSON:
    meta: JSON = {"name": draw(NAMES)}
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "annotations": st.fixed_dictionaries(
                    {ANNOTATION_RETRY: VERSION_NAMES.map(str) | st.text(max_size=8)}
                ),
                "labels": st.dictionaries(
                    edges(st.just("team"), "bad key!", "a" * 64),
                    edges(st.just("ml"), "", "x" * 64),
                    max_size=2,
                ),
            },
        )
    )
    return {**meta, **extra}


@st.composite
def bodies(draw: st.DrawFn) -> JSON:
    """A ModelDeployment body: every field valid-looking or hostile, some left out."""
    versions, active = draw(versions_and_active())
    spec: JSON = {"versions": versions}
    if draw(weighted((40, st.just(True)), (1, st.just(False)))):
        spec["activeVersion"] = active
    spec.update(draw(st.fixed_dictionaries({}, optional=SPEC_FIELDS)))
    spec.update(draw(st.sampled_from(UNKNOWN_FIELDS)))
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": draw(metadata()), "spec": spec}
