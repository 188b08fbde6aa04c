#!/usr/bin/env bash
# demo-cluster.sh: with the lab up (hack/with-lab.sh; make demo/cluster does
# both), brings up its one-node Kubernetes v1.37 cluster, installs csi-smb with
# helm as README's "Install on a cluster" says, runs a pod that writes to an SMB
# volume, kills its server and starts it again, and shows what a user sees:
# pod.status.volumeHealth (the kubelet's) and `kubectl describe` (our Events).
# Then it uninstalls everything and takes the cluster down.
# The lab cannot pull csi-provisioner, so the TEST-ONLY stand-in
# (test/cluster/provisioner) provisions in its place. CLUSTER_KEEP=1 keeps it all up.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib-cluster.sh
kubectl() { ip netns exec "$CLIENT_NS" /var/cache/csi-smb/kube/bin/kubectl --kubeconfig "$LAB_DIR/kube/kubeconfig" "$@"; }
helm() { ip netns exec "$CLIENT_NS" "$HELM_BIN" --kubeconfig "$LAB_DIR/kube/kubeconfig" "$@"; }
tag() { awk -v p="localhost/$1:" 'index($1, p) == 1 { print substr($1, length(p) + 1); exit }' "$IMAGES/images.txt"; }
step() { printf '\n=== %s\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
# until_health WANT: waits for the kubelet's volumeHealth of pod demo to contain WANT (or, for "", nothing).
until_health() {
  local t0=$SECONDS h
  while :; do
    h=$(kubectl get pod demo -o jsonpath='{.status.volumeHealth[*].healthConditions[*].status}')
    if [[ -n $1 && $h == *"$1"* ]] || [[ -z $1 && -z $h ]]; then break; fi
    ((SECONDS - t0 < 120)) || { echo "demo-cluster: volumeHealth is '$h' after 120 s" >&2; exit 1; }
    sleep 0.5
  done
  echo "(after $((SECONDS - t0)) s)"
}

step "a one-node cluster: control plane on the host, the qemu guest (kernel cifs) as the node"
"$SMBLAB" -dir "$LAB_DIR" cluster up -images "$IMAGES" | grep "^cluster up in"
cleanup() {
  step "clean up: pod, PVC, release, cluster"
  kubectl delete pod demo --wait=true --ignore-not-found >/dev/null || true
  kubectl delete pvc demo --wait=true --ignore-not-found >/dev/null || true
  helm uninstall csi-smb --namespace kube-system --wait >/dev/null || true
  "$SMBLAB" -dir "$LAB_DIR" cluster down
}
[[ ${CLUSTER_KEEP:-0} == 1 ]] || trap cleanup EXIT
VERSION=$(tag csi-smb)
[[ -n $VERSION ]] || { echo "demo-cluster: no localhost/csi-smb image in $IMAGES (make image)" >&2; exit 1; }

step "install csi-smb $VERSION with helm (images loaded on the node; the driver registers itself with the kubelet)"
show helm install csi-smb charts/csi-smb --namespace kube-system --wait \
  --set image.baseRepo=localhost --set image.csiSMB.tag="$VERSION" --set image.csiSMB.pullPolicy=Never \
  --set node.registrar.mode=embedded --set livenessProbe.sidecar=false --set controller.healthMonitor.enabled=false \
  --set image.csiProvisioner.repository=csi-smb-test-provisioner --set image.csiProvisioner.tag="$(tag csi-smb-test-provisioner)" \
  --set image.csiProvisioner.pullPolicy=Never | sed -n '1,6p'
show kubectl -n kube-system get pods -o wide -l app.kubernetes.io/instance=csi-smb

step "a Secret, a StorageClass on //10.213.0.2/share, a PVC and a pod that writes to it"
mkdir -p "$LAB_DIR/n2/shares/share/k8s" && chmod 0777 "$LAB_DIR/n2/shares/share/k8s"  # writable by the lab's SMB user
kubectl apply -f - <<YAML
apiVersion: v1
kind: Secret
metadata: {name: smb-creds, namespace: kube-system}
stringData: {username: csitest, password: "Lab-S3cret-7f3a9c!"}  # the lab's own (test/lab)
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: smb}
provisioner: smb.csi-smb.io
parameters:
  source: //10.213.0.2/share/k8s
  subDir: \${pvc.metadata.namespace}/\${pvc.metadata.name}
  csi.storage.k8s.io/provisioner-secret-name: smb-creds
  csi.storage.k8s.io/provisioner-secret-namespace: kube-system
  csi.storage.k8s.io/node-stage-secret-name: smb-creds
  csi.storage.k8s.io/node-stage-secret-namespace: kube-system
mountOptions: [dir_mode=0777, file_mode=0777]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: demo}
spec: {accessModes: [ReadWriteMany], storageClassName: smb, resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: demo}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: localhost/busybox:$(tag busybox)
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "while :; do date >> /data/log; sleep 1; done"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: demo}}
YAML
kubectl wait --for=condition=Ready pod/demo --timeout=3m >/dev/null
show kubectl get pvc demo
echo "on the server: $(wc -l <"$LAB_DIR/n2/shares/share/k8s/default/demo/log") line(s) in k8s/default/demo/log"

step "kill the SMB server"
show "$SMBLAB" -dir "$LAB_DIR" fault kill n2
until_health Inaccessible
show kubectl get pod demo -o jsonpath='{.status.volumeHealth}'
echo
show kubectl describe pod demo

step "start it again"
show "$SMBLAB" -dir "$LAB_DIR" fault start n2
until_health ""
sleep 2
show kubectl get events --field-selector involvedObject.name=demo
echo "on the server: $(wc -l <"$LAB_DIR/n2/shares/share/k8s/default/demo/log") line(s) in k8s/default/demo/log"
