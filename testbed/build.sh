#!/usr/bin/env bash
# Builds the test bed's binaries (control plane with kubelet and kube-proxy, etcd,
# kwok, the real node's pause) from the pinned Go wrapper modules in go/ beside
# this script, into a cache folder keyed by their content.
# A second run with the same modules is a no-op. Prints the bin folder on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")/go" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

# The key changes whenever a pinned module or the wrapper code changes.
key=$(cat "$here"/k8s/go.mod "$here"/k8s/go.sum "$here"/k8s/main.go \
          "$here"/etcd/go.mod "$here"/etcd/go.sum "$here"/kwok/go.mod "$here"/kwok/go.sum \
          "$here"/pause/go.mod "$here"/pause/main.go \
      | sha256sum | cut -c1-12)
k8s_version=$(awk '$1 == "k8s.io/kubernetes" {print $2}' "$here/k8s/go.mod" | head -n1)
bin="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/testbed-${k8s_version}-${key}/bin"

if [ -x "$bin/k8s" ] && [ -x "$bin/etcd" ] && [ -x "$bin/kwok" ] && [ -x "$bin/pause" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
log() { echo "build: $*" >&2; }

build() {  # build NAME DIR PACKAGE [LDFLAGS]
  local name=$1 dir=$2 package=$3 ldflags=${4:-}
  log "$name ($package) ..."
  local started=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.partial" "$package") >&2 \
    || { log "FAILED: $name"; exit 1; }
  mv "$bin/$name.partial" "$bin/$name"
  log "$name built in $((SECONDS - started)) s"
}

# Version ldflags: /version and kubectl's version dispatch need the real version.
minor=$(echo "$k8s_version" | cut -d. -f2)
version_pkg=k8s.io/component-base/version
build k8s "$here/k8s" . "-X $version_pkg.gitVersion=$k8s_version -X $version_pkg.gitMajor=1 \
  -X $version_pkg.gitMinor=$minor -X $version_pkg.gitTreeState=clean \
  -X $version_pkg.buildDate=1970-01-01T00:00:00Z"
build etcd "$here/etcd" go.etcd.io/etcd/server/v3
build kwok "$here/kwok" sigs.k8s.io/kwok/cmd/kwok
build pause "$here/pause" .
for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  ln -sf k8s "$bin/$name"
done
echo "$bin"
