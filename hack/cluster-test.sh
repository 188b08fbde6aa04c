#!/usr/bin/env bash
# cluster-test.sh TEST_BINARY [ARGS...]: with the lab up (hack/with-lab.sh),
# brings its one-node cluster up with the images of make image, runs the
# cluster test binary (test/cluster) in the lab's client namespace, and takes
# the cluster down again. CLUSTER_KEEP=1 leaves the cluster (and the release,
# if a step failed) up for a look: bin/smblab cluster kubectl ...
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib-cluster.sh

"$SMBLAB" -dir "$LAB_DIR" cluster up -images "$IMAGES"
[[ ${CLUSTER_KEEP:-0} == 1 ]] || trap '"$SMBLAB" -dir "$LAB_DIR" cluster down' EXIT
ip netns exec "$CLIENT_NS" env CSI_SMB_LAB_DIR="$LAB_DIR" CSI_SMB_IMAGES="$IMAGES" CSI_SMB_CHART="$PWD/charts/csi-smb" \
  HELM="$HELM_BIN" CLUSTER_KEEP="${CLUSTER_KEEP:-0}" "$@"
