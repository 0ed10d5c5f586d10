#!/usr/bin/env bash
# Builds one tool the tests or benchmarks run against the test bed (helm, kstatus,
# prom-label-proxy, kube-score, metrics-server, flagger) from its pinned Go module (under go/NAME;
# flagger's under bench/flagger), into a cache folder keyed by the module's content and
# the link flags; a second run is a no-op.
# Prints the binary's path on stdout; logs go to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
name=${1:?usage: build-tool.sh helm|kstatus|prom-label-proxy|kube-score|metrics-server|flagger}
dir=$here/go/$name

# module: the pinned upstream module whose version names the cache folder.
case $name in
  helm)
    module=helm.sh/helm/v4 package=helm.sh/helm/v4/cmd/helm ;;
  kstatus)
    module=sigs.k8s.io/cli-utils package=. ;;
  prom-label-proxy)
    module=github.com/prometheus-community/prom-label-proxy package=$module ;;
  kube-score)
    module=github.com/zegl/kube-score package=$module/cmd/kube-score ;;
  metrics-server)
    module=sigs.k8s.io/metrics-server package=$module/cmd/metrics-server ;;
  flagger)  # a peer of the benchmarks: its wrapper module lives with them
    module=github.com/fluxcd/flagger package=$module/cmd/flagger dir=$here/../bench/flagger ;;
  *)
    echo "build-tool: unknown tool '$name' (helm, kstatus, prom-label-proxy, kube-score, metrics-server, flagger)" >&2; exit 2 ;;
esac
version=$(awk -v m="$module" '$1 == m {print $2}' "$dir/go.mod" | head -n1)

ldflags="-s -w"
if [ "$name" = helm ]; then
  # As Helm's Makefile does for a release tag; without them `helm version` says v4.3.
  ldflags="$ldflags -X helm.sh/helm/v4/internal/version.version=$version"
  ldflags="$ldflags -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
fi
if [ "$name" = kube-score ]; then
  # As its release builds do; without it `kube-score version` says development.
  ldflags="$ldflags -X main.version=$version"
fi
if [ "$name" = metrics-server ]; then
  # As its Makefile does; without it the server reports client-go's v0.0.0-master.
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$version"
fi

key=$( (cat "$dir"/go.mod "$dir"/go.sum; [ ! -e "$dir/main.go" ] || cat "$dir/main.go"; echo "$ldflags") \
       | sha256sum | cut -c1-12)
out="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/$name-$version-$key"
mkdir -p "$out"
# Concurrent callers wait for one build instead of starting a second.
exec 9>"$out/.lock"
flock 9
if [ ! -x "$out/$name" ]; then
  echo "build: $name $version ..." >&2
  started=$SECONDS
  (cd "$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/$name.partial" "$package") >&2 \
    || { echo "build: FAILED: $name" >&2; exit 1; }
  mv "$out/$name.partial" "$out/$name"
  echo "build: $name built in $((SECONDS - started)) s" >&2
fi
echo "$out/$name"
