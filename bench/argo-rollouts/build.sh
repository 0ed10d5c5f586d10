#!/usr/bin/env bash
# Builds Argo Rollouts' controller from the pinned Go wrapper module beside this
# script, for the benchmarks' third column, into a cache folder keyed by the
# module's content (a second run is a no-op). Prints the binary's path on stdout.
# The replace block in go.mod mirrors the one argo-rollouts declares itself: Go
# ignores a dependency's replace directives, so its build needs them here.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
package=github.com/argoproj/argo-rollouts/cmd/rollouts-controller
version=$(awk '$1 == "github.com/argoproj/argo-rollouts" {print $2}' "$here/go.mod" | head -n1)
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
bin="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/argo-rollouts-${version}-${key}"
if [ ! -x "$bin/rollouts-controller" ]; then
  mkdir -p "$bin"
  echo "build: argo-rollouts $version (a few minutes, once) ..." >&2
  started=$SECONDS
  (cd "$here" && go build -trimpath -ldflags "-s -w" -o "$bin/rollouts-controller.partial" "$package") >&2
  mv "$bin/rollouts-controller.partial" "$bin/rollouts-controller"
  echo "build: argo-rollouts built in $((SECONDS - started)) s" >&2
fi
# Its CRDs ship in the module; the benchmarks apply them from there.
crds=$(cd "$here" && go list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)/manifests/crds
echo "$bin/rollouts-controller $crds"
