#!/usr/bin/env bash
# cluster-smoke.sh [IMAGES_DIR]: with the lab up (hack/with-lab.sh), brings the
# one-node cluster up (smblab cluster up), checks what the CSI driver's pods
# need, and takes the cluster down again:
#   1. the node is Ready, the default ServiceAccount and kube-root-ca.crt exist
#   2. a busybox pod (imported image, imagePullPolicy Never) runs; logs and exec work
#   3. a privileged hostNetwork pod mounts under /var/lib/kubelet with
#      Bidirectional propagation, and a second pod (HostToContainer) sees the mount
#   4. the csi-smb image runs (/csi-smb -version), if images.txt lists it
# IMAGES_DIR holds docker-archive tars and images.txt (`name:tag file` lines;
# make image writes _out/images). CLUSTER_KEEP=1 leaves the cluster up.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${1:-_out/images}
LAB_DIR=${CSI_SMB_LAB_DIR:-/run/csi-smb-lab}
SMBLAB=${SMBLAB:-bin/smblab}
ns=$(sed -n 's/.*"prefix": "\(.*\)".*/\1/p' "$LAB_DIR/state.json")c
kubectl() { ip netns exec "$ns" /var/cache/csi-smb/kube/bin/kubectl --kubeconfig "$LAB_DIR/kube/kubeconfig" "$@"; }
image() { awk -v p="localhost/$1:" 'index($1, p) == 1 { print $1; exit }' "$IMAGES/images.txt"; }
fail() { echo "cluster-smoke: FAIL: $*" >&2; exit 1; }
ok() { echo "cluster-smoke: ok: $*"; }

"$SMBLAB" -dir "$LAB_DIR" cluster up -images "$IMAGES"
[[ ${CLUSTER_KEEP:-0} == 1 ]] || trap '"$SMBLAB" -dir "$LAB_DIR" cluster down' EXIT

kubectl get nodes -o wide
kubectl get node lab-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True || fail "node not Ready"
kubectl -n default get sa default >/dev/null && kubectl -n default get cm kube-root-ca.crt >/dev/null || fail "no default ServiceAccount or kube-root-ca.crt"
ok "node Ready, ServiceAccount and kube-root-ca.crt"

bb=$(image busybox)
[[ -n $bb ]] || fail "no localhost/busybox:* in $IMAGES/images.txt"
t=$SECONDS
kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: smoke-bb}
spec:
  containers:
  - name: bb
    image: $bb
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo smoke-hello; sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: smoke-priv}
spec:
  hostNetwork: true
  containers:
  - name: priv
    image: $bb
    imagePullPolicy: Never
    securityContext: {privileged: true}
    command: ["/bin/sh", "-c", "mkdir -p /var/lib/kubelet/smoke && mount -t tmpfs smoke /var/lib/kubelet/smoke && echo mounted; sleep 3600"]
    volumeMounts:
    - {name: kubelet, mountPath: /var/lib/kubelet, mountPropagation: Bidirectional}
  volumes:
  - name: kubelet
    hostPath: {path: /var/lib/kubelet, type: Directory}
EOF
kubectl wait --for=condition=Ready pod/smoke-bb pod/smoke-priv --timeout=180s
echo "cluster-smoke: two pods Ready in $((SECONDS - t)) s"
kubectl logs smoke-bb | grep -qx smoke-hello || fail "kubectl logs"
[[ $(kubectl exec smoke-bb -- echo exec-ok) == exec-ok ]] || fail "kubectl exec"
kubectl exec smoke-bb -- nc -w 3 10.213.0.20 6443 </dev/null || fail "pod cannot reach the API server"
# No kube-proxy: the node DNATs the kubernetes Service (smblab node-nat).
kubectl exec smoke-bb -- sh -c 'nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null' || fail "pod cannot reach the kubernetes Service"
kubectl exec smoke-priv -- sh -c 'nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null' || fail "hostNetwork pod cannot reach the kubernetes Service"
ok "busybox pod: logs, exec, pod network to the API server and its Service"

kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: smoke-h2c}
spec:
  containers:
  - name: h2c
    image: $bb
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "sleep 3600"]
    volumeMounts:
    - {name: kubelet, mountPath: /kl, mountPropagation: HostToContainer}
  volumes:
  - name: kubelet
    hostPath: {path: /var/lib/kubelet, type: Directory}
EOF
kubectl wait --for=condition=Ready pod/smoke-h2c --timeout=120s
kubectl exec smoke-h2c -- grep -q ' /kl/smoke ' /proc/self/mountinfo || fail "the Bidirectional mount did not reach the node"
ok "privileged hostNetwork pod: Bidirectional mount under /var/lib/kubelet propagates"

drv=$(image csi-smb)
if [[ -z $drv ]]; then
  echo "cluster-smoke: no localhost/csi-smb:* in $IMAGES/images.txt; skipping the driver image"
else
  kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: smoke-driver}
spec:
  restartPolicy: Never
  containers:
  - name: csi-smb
    image: $drv
    imagePullPolicy: Never
    args: ["-version"]
EOF
  kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/smoke-driver --timeout=180s || fail "csi-smb -version did not succeed"
  ok "csi-smb image: $(kubectl logs smoke-driver)"
fi
kubectl delete pod --all --wait=false >/dev/null
echo "cluster-smoke: node memory:"
cat "$LAB_DIR/cluster/share/logs/free"
echo "cluster-smoke: PASS"
