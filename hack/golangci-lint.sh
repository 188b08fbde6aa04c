#!/usr/bin/env bash
# golangci-lint.sh: runs golangci-lint (the version below, built from the Go
# module proxy into a cache outside this repository, keyed by version) with
# the checked-in .golangci.yml over every package and every build tag.
# Arguments, if any, replace the package list.
set -euo pipefail
cd "$(dirname "$0")/.."

LINT_VERSION=${LINT_VERSION:-v2.15.0}
TOOLS=${TOOLS_CACHE:-/var/cache/csi-smb/tools}/golangci-lint-$LINT_VERSION
BIN=$TOOLS/golangci-lint

if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
  export PATH=/usr/local/go/bin:$PATH
fi
if [[ ! -x "$BIN" ]]; then
  mkdir -p "$TOOLS"
  exec 9>"$TOOLS.lock"
  flock 9
  if [[ ! -x "$BIN" ]]; then
    start=$(date +%s)
    GOBIN=$TOOLS go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$LINT_VERSION"
    echo "golangci-lint: built $LINT_VERSION in $(( $(date +%s) - start )) s"
  fi
fi
pkgs=("$@")
[[ ${#pkgs[@]} -gt 0 ]] || pkgs=(./...)
"$BIN" run --build-tags integration,vmguest,labkube,chart,cluster "${pkgs[@]}"
