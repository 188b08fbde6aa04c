#!/usr/bin/env bash
# cluster-test.sh TEST_BINARY [ARGS...]: with the lab up (hack/with-lab.sh),
# brings its one-node cluster up with the images of make image, runs the
# cluster test binary (test/cluster) in the lab's client namespace, and takes
# the cluster down again. CLUSTER_KEEP=1 leaves the cluster (and the release,
# if a step failed) up for a look: bin/smblab cluster kubectl ...
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_DIR=${CSI_SMB_LAB_DIR:-/run/csi-smb-lab}
SMBLAB=${SMBLAB:-bin/smblab}
IMAGES=$(realpath "${CSI_SMB_IMAGES:-_out/images}")
HELM=$(hack/build-helm.sh | tail -1)
ns=$(sed -n 's/.*"prefix": "\(.*\)".*/\1/p' "$LAB_DIR/state.json")c

"$SMBLAB" -dir "$LAB_DIR" cluster up -images "$IMAGES"
[[ ${CLUSTER_KEEP:-0} == 1 ]] || trap '"$SMBLAB" -dir "$LAB_DIR" cluster down' EXIT
ip netns exec "$ns" env CSI_SMB_LAB_DIR="$LAB_DIR" CSI_SMB_IMAGES="$IMAGES" CSI_SMB_CHART="$PWD/charts/csi-smb" \
  HELM="$HELM" CLUSTER_KEEP="${CLUSTER_KEEP:-0}" "$@"
