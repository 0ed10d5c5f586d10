#!/usr/bin/env bash
# Builds Flagger's controller from the pinned Go wrapper module beside this script (by
# the test bed's tool builder, cached by content), for the benchmarks' Flagger column.
# Prints the binary's path and the CRD file its module ships, on one line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
binary=$("$here/../../testbed/build-tool.sh" flagger)
crds=$(cd "$here" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' github.com/fluxcd/flagger)
echo "$binary $crds/artifacts/flagger/crd.yaml"
