#!/usr/bin/env bash
# with-lab.sh CMD...: brings the lab up (three smbd in network namespaces),
# runs CMD with CSI_SMB_LAB_DIR set, and always tears the lab down by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_DIR=${CSI_SMB_LAB_DIR:-/run/csi-smb-lab}
SMBLAB=${SMBLAB:-bin/smblab}
"$SMBLAB" -dir "$LAB_DIR" down >/dev/null 2>&1 || true   # leftovers of a killed run
"$SMBLAB" -dir "$LAB_DIR" up
trap '"$SMBLAB" -dir "$LAB_DIR" down' EXIT
export CSI_SMB_LAB_DIR="$LAB_DIR"
"$@"
