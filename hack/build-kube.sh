#!/usr/bin/env bash
# build-kube.sh: builds the Kubernetes binaries the lab runs from the Go module
# proxy into $KUBE_CACHE/bin (default /var/cache/csi-smb/kube): kube-apiserver
# (test/lab KubeUp), and for the lab cluster kube-controller-manager,
# kube-scheduler, kubelet (runs in the qemu guest) and kubectl. One version for
# all. The build runs in a scratch module under $KUBE_CACHE/src, outside this
# repository: the project's go.mod never imports k8s.io/kubernetes.
# Idempotent: when the cache's stamp names the wanted version and every binary
# is there it exits at once. A cold build takes about 10 minutes on 2 cores.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
KUBE_CACHE=${KUBE_CACHE:-/var/cache/csi-smb/kube}
CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
STAMP=$KUBE_CACHE/bin/.version

if [[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null 2>&1; then
  export PATH=/usr/local/go/bin:$PATH
fi

cached_ok() {
  [[ "$(cat "$STAMP" 2>/dev/null)" == "$KUBE_VERSION ${CMDS[*]}" ]] || return 1
  local c
  for c in "${CMDS[@]}"; do [[ -x "$KUBE_CACHE/bin/$c" ]] || return 1; done
  [[ "$("$KUBE_CACHE/bin/kube-apiserver" --version 2>/dev/null)" == "Kubernetes $KUBE_VERSION" ]]
}
if cached_ok; then
  echo "build-kube: ${CMDS[*]} $KUBE_VERSION (cached in $KUBE_CACHE/bin)"
  exit 0
fi

mkdir -p "$KUBE_CACHE/bin" "$KUBE_CACHE/src"
exec 9>"$KUBE_CACHE/.lock"
flock 9 # one build at a time; a second caller waits and then finds the binary
if cached_ok; then
  echo "build-kube: ${CMDS[*]} $KUBE_VERSION (built meanwhile)"
  exit 0
fi

start=$(date +%s)
minor=$(cut -d. -f2 <<<"${KUBE_VERSION#v}")
staging=v0.${KUBE_VERSION#v1.} # k8s.io/kubernetes v1.X.Y ships its staging modules as v0.X.Y
src=$KUBE_CACHE/src
cd "$src"
rm -f go.mod # rewritten below; a stale one must not steer "go mod download"
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

# The staging modules are the replace lines "=> ./staging/..." of k8s.io/kubernetes's
# own go.mod (33 for v1.36); a consumer has to pin each of them to the v0 release.
kgomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",\{0,1\}$/\1/p')
mapfile -t mods < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$kgomod" | sort -u)
if ((${#mods[@]} == 0)); then
  echo "build-kube: no staging modules found in $kgomod" >&2
  exit 1
fi
{
  echo "module scratch/kapi"
  echo
  echo "go $(sed -n 's/^go //p' "$kgomod")"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in "${mods[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
  echo ")"
} >go.mod
{
  printf '//go:build tools\n\npackage kapi\n\nimport (\n'
  for c in "${CMDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
  printf ')\n'
} >tools.go

t=$(date +%s)
go mod tidy
echo "build-kube: go mod tidy ($KUBE_VERSION, ${#mods[@]} staging modules at $staging): $(($(date +%s) - t)) s"

ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
done
rm -f "$STAMP"
for c in "${CMDS[@]}"; do
  t=$(date +%s)
  go build -ldflags "$ldflags" -o "$KUBE_CACHE/bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
  mv -f "$KUBE_CACHE/bin/$c.tmp" "$KUBE_CACHE/bin/$c"
  echo "build-kube: go build $c: $(($(date +%s) - t)) s, $(du -m "$KUBE_CACHE/bin/$c" | cut -f1) MB"
done
echo "$KUBE_VERSION ${CMDS[*]}" >"$STAMP"

cached_ok || { echo "build-kube: kube-apiserver does not report $KUBE_VERSION: $("$KUBE_CACHE/bin/kube-apiserver" --version 2>&1)" >&2; exit 1; }
echo "build-kube: built ${CMDS[*]} $KUBE_VERSION in $(($(date +%s) - start)) s"
