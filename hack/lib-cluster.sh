# lib-cluster.sh, sourced (from the repository root) by cluster-test.sh and
# demo-cluster.sh: where the lab is, the images of make image, helm (built and
# cached by build-helm.sh) and the lab's client namespace, where the API server is.
LAB_DIR=${CSI_SMB_LAB_DIR:-/run/csi-smb-lab}
SMBLAB=${SMBLAB:-bin/smblab}
IMAGES=$(realpath "${CSI_SMB_IMAGES:-_out/images}")
HELM_BIN=$(hack/build-helm.sh | tail -1)
CLIENT_NS=$(sed -n 's/.*"prefix": "\(.*\)".*/\1/p' "$LAB_DIR/state.json")c
