#!/usr/bin/env bash
# build-helm.sh: builds helm (the version below) from the Go module proxy into
# $TOOLS_CACHE/helm-$HELM_VERSION/helm (default /var/cache/csi-smb/tools) and
# prints its path on the last line. The build runs in a scratch module under
# $TOOLS_CACHE/src, outside this repository: the project's go.mod never
# requires helm. CGO_ENABLED=0; the ldflags are those of helm's own Makefile,
# so `helm version` reports $HELM_VERSION and the default capabilities (what
# `helm template` checks a chart's kubeVersion against) are the Kubernetes
# minor of helm's client-go, not helm's fallback 1.20.
# Idempotent: when the binary is there and reports the version it exits at
# once; concurrent callers wait on a lock and then find the binary.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v4.3.2} # make test/chart also runs HELM_VERSION=v3.21.4 (Helm 3)
TOOLS=${TOOLS_CACHE:-/var/cache/csi-smb/tools}
DIR=$TOOLS/helm-$HELM_VERSION
BIN=$DIR/helm
SRC=$TOOLS/src/helm-$HELM_VERSION
major=${HELM_VERSION#v}
MOD=helm.sh/helm/v${major%%.*}

if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
  export PATH=/usr/local/go/bin:$PATH
fi

cached_ok() {
  [[ -x "$BIN" ]] && [[ "$("$BIN" version --template '{{.Version}}' 2>/dev/null)" == "$HELM_VERSION" ]]
}
if cached_ok; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DIR" "$SRC"
exec 9>"$DIR.lock"
flock 9
if cached_ok; then
  echo "$BIN"
  exit 0
fi

start=$(date +%s)
cd "$SRC"
rm -f go.mod go.sum tools.go
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0
helmgomod=$(go mod download -json "$MOD@$HELM_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",\{0,1\}$/\1/p') ||
  { echo "build-helm: go mod download $MOD@$HELM_VERSION failed" >&2; exit 1; }
# helm's own go.mod has no replace directives (checked for v4.3.2 and v3.21.4), so a
# module requiring only helm selects exactly helm's dependency versions.
if grep -q '^replace' "$helmgomod"; then
  echo "build-helm: $MOD@$HELM_VERSION has replace directives; this scratch module would ignore them" >&2
  exit 1
fi
{
  echo "module scratch/helm"
  echo
  echo "go $(sed -n 's/^go //p' "$helmgomod")"
  echo
  echo "require $MOD $HELM_VERSION"
} >go.mod
printf '//go:build tools\n\npackage helm\n\nimport _ "%s/cmd/helm"\n' "$MOD" >tools.go
go mod tidy

# As helm 3's Makefile: Kubernetes major = client-go major + 1, minor = client-go minor
# (helm 4 has no such variables and reads its client-go's version itself; -X of a
# missing symbol does nothing).
cgo=$(go list -m -f '{{.Version}}' k8s.io/client-go)
cgo=${cgo#v}
kmajor=$(($(cut -d. -f1 <<<"$cgo") + 1))
kminor=$(cut -d. -f2 <<<"$cgo")
ldflags="-s -w -X $MOD/internal/version.version=$HELM_VERSION -X $MOD/internal/version.metadata="
ldflags+=" -X $MOD/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $MOD/$p.k8sVersionMajor=$kmajor -X $MOD/$p.k8sVersionMinor=$kminor"
done
go build -trimpath -ldflags "$ldflags" -o "$BIN.tmp" "$MOD/cmd/helm"
mv -f "$BIN.tmp" "$BIN"

cached_ok || { echo "build-helm: $BIN does not report $HELM_VERSION: $("$BIN" version 2>&1)" >&2; exit 1; }
echo "build-helm: built helm $HELM_VERSION (Kubernetes $kmajor.$kminor capabilities) in $(($(date +%s) - start)) s" >&2
echo "$BIN"
