"""Names shared by every layer: the API identity, labels, condition types and reasons.

The bottom of the import graph: nothing here imports anything of ours. Each
string the operator writes to the cluster or tests look for is named once here.
"""

from typing import Final

GROUP: Final = "modeldeploy.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelDeployment"
PLURAL: Final = "modeldeployments"

MANAGER: Final = "modeldeploy"  # field manager, managed-by label value, event component
CONTAINER: Final = "model"
PORT_NAME: Final = "http"

# Labels on everything we render. The selector uses LABEL_NAME only: a selector is
# immutable, so it must never contain the version.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_APP: Final = "app.kubernetes.io/name"
LABEL_NAME: Final = f"{GROUP}/name"
LABEL_VERSION: Final = f"{GROUP}/version"
LABEL_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
ANNOTATION_RETRY: Final = f"{GROUP}/retry"
ANNOTATION_TEMPLATE_HASH: Final = f"{GROUP}/template-hash"
# A version's configuration snapshot (docs/validation-and-config.md): the pods that mount
# one, and the snapshot ConfigMap itself, carry its content hash; the annotation asks for
# a new snapshot of a version's source ConfigMap.
LABEL_CONFIG_HASH: Final = f"{GROUP}/config-hash"
ANNOTATION_REFRESH_CONFIG: Final = f"{GROUP}/refresh-config"
# Resolve a version's registry reference again (docs/registry.md).
ANNOTATION_REFRESH_REGISTRY: Final = f"{GROUP}/refresh-registry"
CONFIG_VOLUME: Final = "model-config"
CONFIG_PATH: Final = "/etc/model/config"  # mounted read-only; MODEL_CONFIG names it
SCRATCH_VOLUME: Final = "scratch"  # an emptyDir at spec.template.scratchPath
KOPF_PREFIX: Final = f"operator.{GROUP}"

# Condition types (kstatus: Reconciling, Stalled and Ready are read by Helm, Flux, kpt).
READY: Final = "Ready"
RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"
ROLLED_BACK: Final = "RolledBack"
WEBHOOK_READY: Final = "WebhookReady"  # only with spec.notifications.webhook; not kstatus
VALIDATED: Final = "Validated"  # only with spec.validation: what serves answers as expected
REGISTRY_READY: Final = "RegistryReady"  # only with spec.registry: its last call was answered
CONDITION_TYPES: Final = (
    READY,
    RECONCILING,
    STALLED,
    ROLLED_BACK,
    WEBHOOK_READY,
    VALIDATED,
    REGISTRY_READY,
)

# Phases, derived from the conditions for humans and printer columns.
PHASE_PENDING: Final = "Pending"
PHASE_PROGRESSING: Final = "Progressing"
PHASE_AVAILABLE: Final = "Available"
PHASE_DEGRADED: Final = "Degraded"
PHASE_FAILED: Final = "Failed"

# Rollout triggers and outcomes.
TRIGGER_MANUAL: Final = "Manual"
TRIGGER_AUTOMATIC: Final = "Automatic"
TRIGGER_RETRY: Final = "Retry"
OUTCOME_PROGRESSING: Final = "Progressing"
OUTCOME_SUCCEEDED: Final = "Succeeded"
OUTCOME_FAILED: Final = "Failed"
OUTCOME_SUPERSEDED: Final = "Superseded"

# What a failed rollout does to the spec (spec.rollout.onFailure).
ON_FAILURE_REVERT_SPEC: Final = "RevertSpec"  # set spec.activeVersion back to the last good
ON_FAILURE_KEEP_SPEC: Final = "KeepSpec"  # serve the last good, leave the spec as written

# Version states in the ledger.
STATE_PROGRESSING: Final = "Progressing"
STATE_AVAILABLE: Final = "Available"
STATE_FAILED: Final = "Failed"
STATE_RETRYING: Final = "Retrying"

# Failure reasons (B5): pod-level waiting reasons that fail a rollout at once.
WAITING_FAILURES: Final = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
    }
)
REASON_CRASH_LOOP: Final = "CrashLoopBackOff"
REASON_OOM_KILLED: Final = "OOMKilled"
REASON_UNSCHEDULABLE: Final = "Unschedulable"
REASON_NOT_READY: Final = "ReadyTimeout"
REASON_PROGRESS_DEADLINE: Final = "ProgressDeadlineExceeded"
REASON_ANALYSIS_FAILED: Final = "AnalysisFailed"
REASON_INVALID_QUERY: Final = "InvalidQuery"
REASON_VALIDATION_FAILED: Final = "ValidationFailed"  # a golden request came back wrong

# Condition reasons.
REASON_AVAILABLE: Final = "Available"
REASON_SUCCEEDED: Final = "Succeeded"  # a history entry of a rollout that completed
REASON_REPLICAS_UNAVAILABLE: Final = "ReplicasUnavailable"
REASON_ROLLED_BACK: Final = "RolledBack"
REASON_ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
REASON_IDLE: Final = "Idle"
REASON_NOT_STALLED: Final = "NotStalled"
REASON_NOT_ROLLED_BACK: Final = "NoAutomaticRevert"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_NAME_CONFLICT: Final = "NameConflict"
REASON_QUARANTINED: Final = "VersionQuarantined"
REASON_FIRST_VERSION_FAILED: Final = "FirstVersionFailed"
REASON_TARGET_UNHEALTHY: Final = "RollbackTargetUnhealthy"
REASON_NO_TARGET: Final = "NoRollbackTarget"
REASON_REVERT_LOOP: Final = "RevertLoop"
REASON_AUTO_ROLLBACK_DISABLED: Final = "AutoRollbackDisabled"
REASON_REVERT_DENIED: Final = "RevertDenied"  # admission refused the revert
REASON_WEBHOOK_READY: Final = "WebhookAllowed"
REASON_WEBHOOK_REFUSED: Final = "WebhookRefused"  # not allowed, or its Secret is unusable
REASON_WEBHOOK_UNDELIVERED: Final = "WebhookUndelivered"  # owed, and the receiver failed
REASON_REGISTRY_ANSWERED: Final = "RegistryAnswered"  # spec.registry's last call was answered
REASON_REGISTRY_UNREACHABLE: Final = "RegistryUnreachable"  # not answered: tried again later

# Event reasons.
EVENT_ROLLOUT_STARTED: Final = "RolloutStarted"
EVENT_ROLLOUT_SUCCEEDED: Final = "RolloutSucceeded"
EVENT_ROLLOUT_FAILED: Final = "RolloutFailed"
EVENT_ROLLED_BACK: Final = "RolledBack"
EVENT_QUARANTINED: Final = "VersionQuarantined"
EVENT_RETRY: Final = "RetryRequested"
EVENT_REVERT_SKIPPED: Final = "RevertSkipped"
EVENT_RETRY_SKIPPED: Final = "RetrySkipped"  # the spec changed after the retry was asked
EVENT_TARGET_UNCHECKED: Final = "RevertTargetUnchecked"  # its pods did not answer in time
EVENT_POD_SHUT_OUT: Final = "PodValidationFailed"  # a serving version's new pod answered wrong
EVENT_SERVING_ANSWERS_WRONG: Final = "ServingValidationFailed"  # new golden requests, old pods
EVENT_CONFIG_SNAPSHOT: Final = "ConfigSnapshotTaken"
EVENT_CONFIG_REFRESH_FAILED: Final = "ConfigRefreshFailed"  # or ignored: no such config
EVENT_REGISTRY_RESOLVED: Final = "RegistryVersionResolved"
EVENT_REGISTRY_REFRESH_FAILED: Final = "RegistryRefreshFailed"  # or ignored
EVENT_NOTIFICATION_DROPPED: Final = "NotificationDropped"  # owed a day, or the outbox full

# Analysis phases (status.analysis.phase) and what a check does without data.
ANALYSIS_RUNNING: Final = "Running"
ANALYSIS_PASSED: Final = "Passed"
ANALYSIS_FAILED: Final = "Failed"
ANALYSIS_INCONCLUSIVE: Final = "Inconclusive"
ANALYSIS_INVALID: Final = "Invalid"  # a check's query is one Prometheus refuses
ANALYSIS_GUARDING: Final = "Guarding"  # promoted, and still judged (guardSeconds)
STAGE_GUARD: Final = "Guard"  # a rollout that failed in its guard window
LABEL_STANDBY_OF: Final = f"{GROUP}/standby-of"  # pods of the standby Deployment
# The readiness gate of a validated version's pods: the operator sets this pod condition
# True once the pod answered every golden request as expected (False, with why, if not);
# until then the pod is not Ready, gets no traffic and no rolling update counts it.
CONDITION_VALIDATED: Final = f"{GROUP}/validated"
REASON_GOLDEN_PASSED: Final = "GoldenRequestsPassed"
REASON_GOLDEN_CHECKING: Final = "GoldenRequestsSent"  # waiting for the serving pods' answers
REASON_GOLDEN_FAILED: Final = "GoldenRequestsFailed"
REASON_NOT_VALIDATED: Final = "ValidationRemoved"  # spec.validation went: nothing to wait for
# What serves while a failed version's pods are still Ready (spec.rollout.failedTraffic).
FAILED_TRAFFIC_STOP: Final = "Stop"  # the last good version's Ready pods only, at once
FAILED_TRAFFIC_KEEP: Final = "Keep"  # every Ready pod, until the failed ones are gone
# How a rollout makes room for new pods (spec.rollout.strategy, docs/capacity.md).
STRATEGY_SURGE: Final = "Surge"  # new pods first (maxUnavailable 0): needs spare capacity
STRATEGY_REPLACE: Final = "Replace"  # old pods down first, maxUnavailable at a time
STRATEGY_AUTO: Final = "Auto"  # Surge, switching the rollout to Replace when the pool is full
# A new pod the scheduler cannot place because the pool is full: a wait, not a verdict.
REASON_INSUFFICIENT_CAPACITY: Final = "InsufficientCapacity"
EVENT_STRATEGY_SWITCHED: Final = "StrategySwitched"  # Auto: this rollout goes on as Replace
NO_DATA_INCONCLUSIVE: Final = "Inconclusive"
NO_DATA_FAIL: Final = "Fail"

# Validation phases (status.validation.phase): golden requests sent to a template's pods.
VALIDATION_RUNNING: Final = "Running"
VALIDATION_PASSED: Final = "Passed"
VALIDATION_FAILED: Final = "Failed"

# Events a webhook receives (the rest are Kubernetes Events only).
WEBHOOK_EVENTS: Final = frozenset(
    {EVENT_ROLLOUT_FAILED, EVENT_ROLLED_BACK, EVENT_ROLLOUT_SUCCEEDED}
)

# Loop guard (B9): this many automatic reverts away from one version since it failed
# means something (a GitOps tool, a script) keeps re-applying it.
REVERT_LOOP_LIMIT: Final = 3
