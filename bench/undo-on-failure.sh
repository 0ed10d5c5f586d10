#!/usr/bin/env bash
# The reactive baseline a platform team would write in an afternoon: watch the pods,
# and when one shows CrashLoopBackOff, ImagePullBackOff or ErrImagePull, run
# `kubectl rollout undo` on its Deployment, once per failing ReplicaSet (the undo's
# own old pods keep failing until they are gone; a second undo would undo the undo).
# Usage: undo-on-failure.sh NAMESPACE LABEL-SELECTOR
set -uo pipefail
namespace=$1 selector=$2
declare -A undone
kubectl get pods --namespace "$namespace" --selector "$selector" --watch \
  --output 'jsonpath={.metadata.ownerReferences[0].name} {.status.containerStatuses[*].state.waiting.reason}{"\n"}' |
  while read -r replicaset reasons; do
    case " $reasons " in
      *" CrashLoopBackOff "* | *" ImagePullBackOff "* | *" ErrImagePull "*) ;;
      *) continue ;;
    esac
    [[ -n ${undone[$replicaset]:-} ]] && continue
    undone[$replicaset]=1
    kubectl rollout undo --namespace "$namespace" "deployment/${replicaset%-*}"
  done
