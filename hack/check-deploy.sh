#!/usr/bin/env bash
# check-deploy.sh: deploy/csi-smb.yaml is the chart rendered with its default
# values (`helm template csi-smb charts/csi-smb --namespace kube-system`).
# Without arguments: `helm lint --strict` the chart (defaults, and all
# sidecars off) and fail when deploy/ differs from a fresh render (run
# `make deploy`), with helm 4 and helm 3 (lint). With --update: re-render
# deploy/. helm comes from hack/build-helm.sh (built once, cached).
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=charts/csi-smb
OUT=deploy/csi-smb.yaml
HELM=$(hack/build-helm.sh | tail -1)                         # helm 4: lints and renders
HELM3=$(HELM_VERSION=v3.21.4 hack/build-helm.sh | tail -1)   # helm 3: lints too

render() {
  echo "# Rendered from $CHART by \`make deploy\` (helm template csi-smb $CHART --namespace kube-system)."
  echo "# Do not edit: change the chart and re-render; \`make verify\` fails when this file drifts."
  "$HELM" template csi-smb "$CHART" --namespace kube-system
}

case ${1:-} in
--update)
  mkdir -p deploy
  render >"$OUT.tmp"
  mv -f "$OUT.tmp" "$OUT"
  echo "check-deploy: rendered $OUT"
  ;;
"")
  for h in "$HELM" "$HELM3"; do
    "$h" lint --strict "$CHART"
    # and as the lab cluster installs it: no sidecar image
    "$h" lint --strict "$CHART" --set node.registrar.mode=embedded --set livenessProbe.sidecar=false \
      --set controller.provisioner.enabled=false --set controller.healthMonitor.enabled=false >/dev/null
  done
  if ! diff -u "$OUT" <(render) >&2; then
    echo "check-deploy: $OUT differs from the chart (above, - is $OUT); run make deploy" >&2
    exit 1
  fi
  echo "check-deploy: $OUT matches $CHART"
  ;;
*)
  echo "usage: $0 [--update]" >&2
  exit 2
  ;;
esac
