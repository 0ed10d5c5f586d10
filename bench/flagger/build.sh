#!/usr/bin/env bash
# Builds Flagger's controller from the pinned Go wrapper module beside this script,
# for the benchmarks' Flagger column (Kubernetes provider, Blue/Green), into a cache
# folder keyed by the module's content (a second run is a no-op). Prints the binary's
# path and the CRD file it ships, on one line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
package=github.com/fluxcd/flagger/cmd/flagger
version=$(awk '$1 == "github.com/fluxcd/flagger" {print $2}' "$here/go.mod" | head -n1)
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
bin="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/flagger-${version}-${key}"
mkdir -p "$bin"
# Concurrent callers wait for one build instead of starting a second.
exec 9>"$bin/.lock"
flock 9
if [ ! -x "$bin/flagger" ]; then
  echo "build: flagger $version (a few minutes, once) ..." >&2
  started=$SECONDS
  (cd "$here" && go build -trimpath -ldflags "-s -w" -o "$bin/flagger.partial" "$package") >&2
  mv "$bin/flagger.partial" "$bin/flagger"
  echo "build: flagger built in $((SECONDS - started)) s" >&2
fi
# Its CRDs ship in the module; the benchmarks apply them from there.
crds=$(cd "$here" && go list -m -f '{{.Dir}}' github.com/fluxcd/flagger)/artifacts/flagger/crd.yaml
echo "$bin/flagger $crds"
