#!/usr/bin/env bash
# vm-suite.sh LAB_DIR SHARE PROGRAM [ARGS...]: with the lab up, starts the
# lab's kube-apiserver, hands its kubeconfig to the guest through the share,
# and runs PROGRAM (relative to SHARE) in the qemu guest.
set -euo pipefail
cd "$(dirname "$0")/.."
lab=$1 share=$2 prog=$3
shift 3
bin/smblab -dir "$lab" kube up
cp "$lab/kube/kubeconfig" "$share/kubeconfig"
trap 'rm -f "$share/kubeconfig"' EXIT
bin/smblab -dir "$lab" vm -share "$share" -run "$prog" -timeout "${VM_TIMEOUT:-40m}" -- "$@"
