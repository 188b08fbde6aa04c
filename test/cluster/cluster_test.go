//go:build cluster

// Package cluster installs charts/csi-smb with helm into the lab's one-node
// Kubernetes v1.37 cluster (control plane on the host, the qemu guest as the
// node, kernel cifs) and checks what a user sees: the CSINode, static and
// dynamic volumes in pods, the volume's health in pod.status.volumeHealth and
// `kubectl describe` while the SMB server is killed and frozen, a rollout of
// the node plugin under a writing pod, and a clean uninstall.
//
// Honestly stated: csi-provisioner's image cannot be pulled here, so the
// controller's provisioner container runs the TEST-ONLY stand-in in
// test/cluster/provisioner (built on sig-storage-lib-external-provisioner, the
// library csi-provisioner is built on); node registration is the driver's
// embedded registrar and liveness its /healthz, since node-driver-registrar,
// livenessprobe and external-health-monitor cannot be pulled either.
//
// It runs as root in the lab's client namespace with the cluster up:
// make test/cluster brings it up (smblab cluster up) and down.
package cluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/test/lab"
)

const (
	envLabDir = "CSI_SMB_LAB_DIR"
	envImages = "CSI_SMB_IMAGES" // images.txt and its tars (make image)
	envHelm   = "HELM"           // hack/build-helm.sh prints it
	envChart  = "CSI_SMB_CHART"
	envTrials = "CSI_SMB_CLUSTER_TRIALS" // fault trials each (BENCHMARKS.md), default 1

	namespace = "kube-system"
	release   = "csi-smb"
	driver    = "smb.csi-smb.io"
	appNS     = "default"
	server    = "n2" // the SMB server the volumes live on, killed and frozen
	serverIP  = "10.213.0.2"
	baseDir   = "k8s" // the StorageClass's directory on the share
)

type env struct {
	lab          *lab.Lab
	kubectl      tool
	helm         tool
	chart        string
	driverTag    string
	provisionTag string
	busybox      string
	shareDir     string // the server's share directory on the host
}

func setup(t *testing.T) *env {
	t.Helper()
	l, err := lab.Load(os.Getenv(envLabDir))
	if err != nil {
		t.Fatalf("needs the lab and its cluster up (make test/cluster): %v", err)
	}
	helm := os.Getenv(envHelm)
	if helm == "" {
		t.Fatal(envHelm + " must name the helm binary (hack/build-helm.sh | tail -1)")
	}
	images := os.Getenv(envImages)
	if images == "" {
		images = "../../_out/images"
	}
	chart := os.Getenv(envChart)
	if chart == "" {
		chart = "../../charts/csi-smb"
	}
	e := &env{
		lab:     l,
		kubectl: tool{bin: filepath.Join(lab.DefaultKubeBinDir, "kubectl"), kubeconfig: l.Kubeconfig()},
		helm:    tool{bin: helm, kubeconfig: l.Kubeconfig()},
		chart:   chart,
	}
	e.driverTag = imageTag(t, images, "localhost/csi-smb:")
	e.provisionTag = imageTag(t, images, "localhost/csi-smb-test-provisioner:")
	e.busybox = "localhost/busybox:" + imageTag(t, images, "localhost/busybox:") // the workload image
	s, err := l.Server(server)
	if err != nil {
		t.Fatal(err)
	}
	e.shareDir = filepath.Join(s.Dir, "shares", "share")
	return e
}

// imageTag is the tag of the image images.txt lists with prefix.
func imageTag(t *testing.T, dir, prefix string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "images.txt"))
	if err != nil {
		t.Fatalf("images (make image): %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if ref, _, ok := strings.Cut(sc.Text(), " "); ok && strings.HasPrefix(ref, prefix) {
			return strings.TrimPrefix(ref, prefix)
		}
	}
	t.Fatalf("no %s* image in %s/images.txt", prefix, dir)
	return ""
}

// values are the chart values for the lab: the local images (never pulled),
// the embedded registrar and /healthz instead of the sidecars that cannot be
// pulled here, and a StorageClass on the lab's server.
func (e *env) values() string {
	return fmt.Sprintf(`image:
  baseRepo: localhost
  csiSMB: {tag: %q, pullPolicy: Never}
  csiProvisioner: {repository: csi-smb-test-provisioner, tag: %q, pullPolicy: Never}
livenessProbe: {sidecar: false}
controller:
  healthMonitor: {enabled: false}
node:
  logLevel: 4
  registrar: {mode: embedded}
storageClasses:
  - name: smb-lab
    parameters:
      source: //%s/share/%s
      subDir: ${pvc.metadata.namespace}/${pvc.metadata.name}
      onDelete: delete
      csi.storage.k8s.io/provisioner-secret-name: smb-creds
      csi.storage.k8s.io/provisioner-secret-namespace: %s
      csi.storage.k8s.io/node-stage-secret-name: smb-creds
      csi.storage.k8s.io/node-stage-secret-namespace: %s
    mountOptions: [dir_mode=0777, file_mode=0777]
    reclaimPolicy: Delete
`, e.driverTag, e.provisionTag, serverIP, baseDir, namespace, namespace)
}

// TestCluster runs the steps in order; each needs the ones before it.
func TestCluster(t *testing.T) {
	e := setup(t)
	valuesFile := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(valuesFile, []byte(e.values()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The StorageClass's directory, writable by the lab's SMB user (as a share admin would make it).
	if err := os.MkdirAll(filepath.Join(e.shareDir, baseDir), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(e.shareDir, baseDir), 0o777); err != nil {
		t.Fatal(err)
	}
	installed := false
	t.Cleanup(func() {
		if t.Failed() {
			e.diagnose(t)
		}
		if !installed || os.Getenv("CLUSTER_KEEP") == "1" {
			return
		}
		// A failed run leaves nothing behind for the next: workloads, then the release.
		_, _ = e.kubectl.run(2*time.Minute, "", "-n", appNS, "delete", "pod,pvc", "--all", "--wait=true")
		_, _ = e.kubectl.run(time.Minute, "", "delete", "pv", "--all", "--wait=false")
		_, _ = e.helm.run(3*time.Minute, "", "uninstall", release, "-n", namespace, "--wait")
	})
	steps := []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"DryRunServer", func(t *testing.T) { e.dryRun(t, valuesFile) }},
		{"HelmInstall", func(t *testing.T) { e.install(t, valuesFile); installed = true }},
		{"CSINode", e.csiNode},
		{"StaticVolume", e.staticVolume},
		{"DynamicVolume", e.dynamicVolume},
		{"ServerKilled", func(t *testing.T) { e.faults(t, "killed", lab.ActKill, lab.ActStart) }},
		{"ServerFrozen", func(t *testing.T) { e.faults(t, "frozen", lab.ActStop, lab.ActCont) }},
		{"NodePluginRollout", e.rollout},
		{"Uninstall", func(t *testing.T) { e.uninstall(t); installed = false }},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.fn) {
			t.Fatalf("%s failed; the later steps need it", s.name)
		}
	}
}

// diagnose logs what explains a failure: objects, events, the driver's logs.
func (e *env) diagnose(t *testing.T) {
	for _, args := range [][]string{
		{"get", "pods,pvc", "-A", "-o", "wide"},
		{"get", "pv", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", appNS, "describe", "pvc"},
		{"-n", namespace, "logs", "-l", "app.kubernetes.io/instance=" + release, "--all-containers", "--prefix", "--tail=60"},
	} {
		out, err := e.kubectl.run(time.Minute, "", args...)
		t.Logf("diagnose: kubectl %s:\n%s%v", strings.Join(args, " "), out, err)
	}
}

// dryRun: the rendered chart is accepted by the lab's API server (schema,
// admission) without creating anything.
func (e *env) dryRun(t *testing.T, valuesFile string) {
	manifest := e.helm.must(t, "template", release, e.chart, "-n", namespace, "-f", valuesFile)
	out, err := e.kubectl.run(2*time.Minute, manifest, "apply", "--dry-run=server", "-f", "-")
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(out, "(server dry run)")
	t.Logf("kubectl apply --dry-run=server: %d objects accepted", n)
	if n < 10 {
		t.Fatalf("expected every object of the chart, got:\n%s", out)
	}
}

// install creates the credentials Secret (from stdin, never argv) and the
// release, and waits for the controller and node pods.
func (e *env) install(t *testing.T, valuesFile string) {
	e.kubectl.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: smb-creds, namespace: %s}
stringData: {username: %q, password: %q}
`, namespace, lab.User, lab.Password))
	start := time.Now()
	out := e.helm.must(t, "install", release, e.chart, "-n", namespace, "-f", valuesFile, "--wait", "--timeout", "5m")
	t.Logf("helm install: %.1f s\n%s", time.Since(start).Seconds(), out)
	t.Log(e.kubectl.must(t, "-n", namespace, "get", "pods", "-o", "wide", "-l", "app.kubernetes.io/instance="+release))
}

func (e *env) csiNode(t *testing.T) {
	waitFor(t, time.Minute, "CSINode lists the driver", func() (bool, string) {
		var n struct {
			Spec struct {
				Drivers []struct {
					Name   string `json:"name"`
					NodeID string `json:"nodeID"`
				} `json:"drivers"`
			} `json:"spec"`
		}
		if err := e.kubectl.getJSON(&n, "csinode", lab.NodeName); err != nil {
			return false, err.Error()
		}
		for _, d := range n.Spec.Drivers {
			if d.Name == driver {
				return d.NodeID == lab.NodeName, "node ID " + d.NodeID
			}
		}
		return false, fmt.Sprintf("drivers %+v", n.Spec.Drivers)
	})
	t.Log(e.kubectl.must(t, "get", "csinode", lab.NodeName, "-o", "yaml"))
}

// staticVolume: a PV for an existing directory, bound by a PVC, used by a pod
// whose file appears on the server.
func (e *env) staticVolume(t *testing.T) {
	dir := filepath.Join(e.shareDir, baseDir, "static")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	e.kubectl.apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolume
metadata: {name: smb-static}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  mountOptions: [dir_mode=0777, file_mode=0777]
  csi:
    driver: %s
    volumeHandle: lab-static-1
    volumeAttributes: {source: //%s/share/%s/static}
    nodeStageSecretRef: {name: smb-creds, namespace: %s}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: static, namespace: %s}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: smb-static
  resources: {requests: {storage: 1Gi}}
`, driver, serverIP, baseDir, namespace, appNS))
	e.kubectl.apply(t, e.pod("static-reader", "static", "echo hello from $(hostname) > /data/hello.txt && sleep 3600"))
	took := waitFor(t, 3*time.Minute, "static pod Running and its file on the share", func() (bool, string) {
		b, err := os.ReadFile(filepath.Join(dir, "hello.txt"))
		if err != nil {
			return false, err.Error()
		}
		return string(b) == "hello from static-reader\n", string(b)
	})
	t.Logf("static PV: pod Running, hello.txt on //%s/share/%s/static in %.1f s", serverIP, baseDir, took.Seconds())
	e.kubectl.must(t, "-n", appNS, "delete", "pod", "static-reader", "--wait=true")
}

// pod is a busybox pod running script with the PVC claim at /data.
func (e *env) pod(name, claim, script string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: %s
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", %s]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: %s}
`, name, appNS, e.busybox, strconv.Quote(script), claim)
}

// The writer appends a numbered line with the node's uptime every 100 ms;
// a failed write goes to its log. Its gaps show how long writes stalled.
const writerScript = `i=0; while :; do i=$((i+1)); read up idle < /proc/uptime; echo "$i $up" >> /data/log || echo "write $i failed at $up"; sleep 0.1; done`

// dynamicVolume: a PVC of the chart's StorageClass is provisioned through
// CreateVolume (by the test-only stand-in for csi-provisioner) and a pod
// writes to it.
func (e *env) dynamicVolume(t *testing.T) {
	e.kubectl.apply(t, fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: dyn, namespace: %s}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: smb-lab
  resources: {requests: {storage: 1Gi}}
`, appNS))
	took := waitFor(t, 2*time.Minute, "PVC dyn Bound", func() (bool, string) {
		out, err := e.kubectl.run(30*time.Second, "", "-n", appNS, "get", "pvc", "dyn", "-o", "jsonpath={.status.phase}")
		return err == nil && out == "Bound", out
	})
	pv := e.kubectl.must(t, "-n", appNS, "get", "pvc", "dyn", "-o", "jsonpath={.spec.volumeName}")
	handle := e.kubectl.must(t, "get", "pv", pv, "-o", "jsonpath={.spec.csi.volumeHandle}")
	t.Logf("PVC dyn Bound in %.1f s: PV %s, volume %s", took.Seconds(), pv, handle)
	if !strings.HasPrefix(handle, "v1#") {
		t.Fatalf("volume handle %q is not one of ours", handle)
	}
	if fi, err := os.Stat(filepath.Join(e.shareDir, baseDir, appNS, "dyn")); err != nil || !fi.IsDir() {
		t.Fatalf("CreateVolume made no directory %s/dyn on the share: %v", appNS, err)
	}
	e.kubectl.apply(t, e.pod("writer", "dyn", writerScript))
	e.kubectl.must(t, "-n", appNS, "wait", "--for=condition=Ready", "pod/writer", "--timeout=3m")
	waitFor(t, time.Minute, "the writer's lines on the share", func() (bool, string) {
		n := len(e.writerLines(t))
		return n > 10, strconv.Itoa(n)
	})
}

// writerLines reads the writer's log from the server's directory.
func (e *env) writerLines(t *testing.T) []logLine {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.shareDir, baseDir, appNS, "dyn", "log"))
	if err != nil {
		return nil
	}
	var out []logLine
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		n, err1 := strconv.Atoi(f[0])
		up, err2 := strconv.ParseFloat(f[1], 64)
		if err1 == nil && err2 == nil {
			out = append(out, logLine{n: n, uptime: up})
		}
	}
	return out
}

type logLine struct {
	n      int
	uptime float64 // the node's uptime in seconds, 10 ms resolution
}

// waitHealthAndEvents polls the writer's pod.status.volumeHealth
// until its Inaccessible condition is there (inaccessible) or gone, and our
// events that say what on the writer and on the PVC dyn until both count
// more than before; it returns when each was first seen, counted from start.
func (e *env) waitHealthAndEvents(t *testing.T, start time.Time, inaccessible bool, what string, before [2]int) (health, events time.Duration) {
	t.Helper()
	limit := 90 * time.Second
	last := ""
	for health == 0 || events == 0 {
		if time.Since(start) > limit {
			t.Fatalf("within %v: volumeHealth (inaccessible=%v) after %v, events saying %q after %v; last: %s",
				limit, inaccessible, health, what, events, last)
		}
		if health == 0 {
			var p podJSON
			if err := e.kubectl.getJSON(&p, "-n", appNS, "pod", "writer"); err != nil {
				last = err.Error()
			} else if hasStatus(p.volumeConditions("data"), "Inaccessible") == inaccessible {
				health = time.Since(start)
			} else {
				last = fmt.Sprintf("volumeHealth %+v", p.Status.VolumeHealth)
			}
		}
		if events == 0 {
			now := e.eventCounts(t, what)
			if now[0] > before[0] && now[1] > before[1] {
				events = time.Since(start)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return health, events
}

// driverEvent is one of our node plugin's events, as kubectl describe shows it.
type driverEvent struct {
	Type, Reason, Message string
	Count                 int
}

// driverEvents lists our node plugin's events on an object; nil on an error
// (the callers poll).
func (e *env) driverEvents(t *testing.T, kind, name string) []driverEvent {
	t.Helper()
	var l eventList
	if err := e.kubectl.getJSON(&l, "-n", appNS, "events", "--field-selector", "involvedObject.kind="+kind+",involvedObject.name="+name); err != nil {
		t.Log(err)
		return nil
	}
	var out []driverEvent
	for _, ev := range l.Items {
		if ev.Source.Component == driver {
			out = append(out, driverEvent{Type: ev.Type, Reason: ev.Reason, Message: ev.Message, Count: max(ev.Count, 1)})
		}
	}
	return out
}

// Our events say what the volume is (pkg/kube): a Warning "... is
// inaccessible: ..." when it is, a Normal "... is healthy: ..." when it
// recovers (a Warning "... is degraded: ..." may come first, e.g. one probe missed).
const (
	saysInaccessible = " is inaccessible: "
	saysHealthy      = " is healthy: "
)

// countEvents is the total count of our events on kind/name that say what.
func (e *env) countEvents(t *testing.T, kind, name, what string) int {
	t.Helper()
	n := 0
	for _, ev := range e.driverEvents(t, kind, name) {
		if strings.Contains(ev.Message, what) {
			n += ev.Count
		}
	}
	return n
}

// eventCounts counts what on the writer pod and on the PVC dyn.
func (e *env) eventCounts(t *testing.T, what string) [2]int {
	t.Helper()
	return [2]int{e.countEvents(t, "Pod", "writer", what), e.countEvents(t, "PersistentVolumeClaim", "dyn", what)}
}

// faults runs fault CSI_SMB_CLUSTER_TRIALS times (default 1).
func (e *env) faults(t *testing.T, name, breakIt, heal string) {
	n := 1
	if v := os.Getenv(envTrials); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", envTrials, v)
		}
	}
	for i := range n {
		if i > 0 {
			time.Sleep(3 * time.Second) // let the mount settle after the last recovery
		}
		e.fault(t, name, breakIt, heal)
	}
}

// fault breaks the server, waits for what a user sees (the kubelet's
// Inaccessible in pod.status.volumeHealth, our Warning events on the pod and
// the PVC, in kubectl describe), heals it and waits for the way back.
// client-go's event spam filter passes 25 events per object, type and
// reason (pkg/kube), then one per 5 minutes: up to 24 trials of a fault
// (CSI_SMB_CLUSTER_TRIALS) each get their events.
func (e *env) fault(t *testing.T, name, breakIt, heal string) {
	warnings, normals := e.eventCounts(t, saysInaccessible), e.eventCounts(t, saysHealthy)
	ctx := t.Context()
	brokeAt := time.Now()
	if err := e.lab.Fault(ctx, breakIt, server); err != nil {
		t.Fatal(err)
	}
	healed := false
	defer func() {
		if !healed {
			_ = e.lab.Fault(ctx, heal, server)
		}
	}()
	detect, warned := e.waitHealthAndEvents(t, brokeAt, true, saysInaccessible, warnings)
	t.Logf("server %s: pod.status.volumeHealth Inaccessible after %s, our inaccessible events on the pod and the PVC after %s",
		name, secs(detect), secs(warned))
	t.Logf("kubectl get pod writer -o jsonpath={.status.volumeHealth}:\n%s",
		e.kubectl.must(t, "-n", appNS, "get", "pod", "writer", "-o", "jsonpath={.status.volumeHealth}"))
	t.Logf("kubectl describe pod writer:\n%s", e.kubectl.must(t, "-n", appNS, "describe", "pod", "writer"))
	t.Logf("kubectl describe pvc dyn:\n%s", e.kubectl.must(t, "-n", appNS, "describe", "pvc", "dyn"))
	t.Logf("kubectl get csinode %s -o jsonpath={.status}:\n%s", lab.NodeName,
		e.kubectl.must(t, "get", "csinode", lab.NodeName, "-o", "jsonpath={.status}"))

	healedAt := time.Now()
	if err := e.lab.Fault(ctx, heal, server); err != nil {
		t.Fatal(err)
	}
	healed = true
	back, told := e.waitHealthAndEvents(t, healedAt, false, saysHealthy, normals)
	n := len(e.writerLines(t))
	waitFor(t, time.Minute, "the writer writes again", func() (bool, string) {
		m := len(e.writerLines(t))
		return m > n+5, fmt.Sprintf("%d lines, %d before", m, n)
	})
	t.Logf("kubectl describe pod writer (healed):\n%s", e.kubectl.must(t, "-n", appNS, "describe", "pod", "writer"))
	fmt.Printf("RESULT cluster server %s: volumeHealth Inaccessible after %s, inaccessible events after %s; volumeHealth clear after %s, healthy events after %s\n",
		name, secs(detect), secs(warned), secs(back), secs(told))
}

// secs renders a measured time.
func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// rollout restarts the node DaemonSet while the writer writes: the pod's
// writes never stop for long, the new node plugin adopts the mount and
// reports its health (a kill after the rollout is seen again).
func (e *env) rollout(t *testing.T) {
	sel := "app.kubernetes.io/instance=" + release + ",app.kubernetes.io/component=node"
	oldPod := e.kubectl.must(t, "-n", namespace, "get", "pods", "-l", sel, "-o", "jsonpath={.items[0].metadata.uid}")
	ds := strings.TrimSpace(e.kubectl.must(t, "-n", namespace, "get", "ds", "-l", sel, "-o", "name"))
	before := len(e.writerLines(t))
	logsBefore := strings.Count(e.kubectl.must(t, "-n", appNS, "logs", "writer"), "failed")
	start := time.Now()
	e.kubectl.must(t, "-n", namespace, "rollout", "restart", ds)
	e.kubectl.must(t, "-n", namespace, "rollout", "status", ds, "--timeout=3m")
	took := time.Since(start)
	newPod := e.kubectl.must(t, "-n", namespace, "get", "pods", "-l", sel, "-o", "jsonpath={.items[0].metadata.uid}")
	if newPod == oldPod {
		t.Fatal("the node pod was not replaced")
	}
	time.Sleep(5 * time.Second) // writes after the new plugin is up
	lines := e.writerLines(t)
	if len(lines) <= before+20 {
		t.Fatalf("the writer wrote %d lines during the rollout", len(lines)-before)
	}
	gap, failed := 0.0, 0
	for i := max(before, 1); i < len(lines); i++ {
		gap = max(gap, lines[i].uptime-lines[i-1].uptime)
		if lines[i].n != lines[i-1].n+1 {
			failed += lines[i].n - lines[i-1].n - 1
		}
	}
	logsAfter := strings.Count(e.kubectl.must(t, "-n", appNS, "logs", "writer"), "failed")
	t.Logf("rollout restart of %s: %.1f s; %d lines written, longest gap %.2f s, %d lines missing, %d failed writes",
		ds, took.Seconds(), len(lines)-before, gap, failed, logsAfter-logsBefore)
	if failed != 0 || logsAfter != logsBefore {
		t.Errorf("writes failed during the rollout: %d missing lines, %d failures in the pod's log", failed, logsAfter-logsBefore)
	}
	if gap > 2 {
		t.Errorf("the pod stopped writing for %.2f s during the rollout", gap)
	}
	fmt.Printf("RESULT cluster rollout: node plugin replaced in %.1f s; pod's longest write gap %.2f s, %d failed writes\n",
		took.Seconds(), gap, failed+logsAfter-logsBefore)
	// The new plugin adopted the staged volume: a fault is reported again.
	e.fault(t, "killed after the rollout", lab.ActKill, lab.ActStart)
}

// uninstall deletes the workloads and the release and checks the node is as
// before: no cifs mount, no driver process, no registration socket, no
// CSINode entry.
func (e *env) uninstall(t *testing.T) {
	pv := e.kubectl.must(t, "-n", appNS, "get", "pvc", "dyn", "-o", "jsonpath={.spec.volumeName}")
	e.kubectl.must(t, "-n", appNS, "delete", "pod", "writer", "--wait=true")
	e.kubectl.must(t, "-n", appNS, "delete", "pvc", "dyn", "static", "--wait=true")
	waitFor(t, 2*time.Minute, "the dynamic PV deleted (DeleteVolume)", func() (bool, string) {
		out, err := e.kubectl.run(30*time.Second, "", "get", "pv", pv, "--ignore-not-found", "-o", "name")
		return err == nil && strings.TrimSpace(out) == "", out
	})
	if _, err := os.Stat(filepath.Join(e.shareDir, baseDir, appNS, "dyn")); !os.IsNotExist(err) {
		t.Errorf("DeleteVolume (onDelete: delete) left the directory: %v", err)
	}
	e.kubectl.must(t, "delete", "pv", "smb-static", "--wait=true")
	t.Log(e.helm.must(t, "uninstall", release, "-n", namespace, "--wait", "--timeout", "3m"))
	e.kubectl.must(t, "-n", namespace, "delete", "secret", "smb-creds")
	waitFor(t, 2*time.Minute, "the driver's pods gone", func() (bool, string) {
		out, err := e.kubectl.run(30*time.Second, "", "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/instance="+release, "-o", "name")
		return err == nil && strings.TrimSpace(out) == "", out
	})
	waitFor(t, time.Minute, "CSINode without the driver", func() (bool, string) {
		out, err := e.kubectl.run(30*time.Second, "", "get", "csinode", lab.NodeName, "-o", "jsonpath={.spec.drivers[*].name}")
		return err == nil && !strings.Contains(out, driver), out
	})
	// What is left on the node, seen from a pod in its PID and mount namespaces.
	e.kubectl.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: node-check, namespace: %s}
spec:
  hostPID: true
  restartPolicy: Never
  containers:
  - name: c
    image: %s
    imagePullPolicy: Never
    securityContext: {privileged: true}
    command: ["/bin/sh", "-c", "echo mounts:; grep -c ' cifs ' /proc/1/mountinfo; echo procs:; cat /proc/[0-9]*/comm | grep -c '^csi-smb$'; echo sockets:; ls /kubelet/plugins_registry"]
    volumeMounts: [{name: kubelet, mountPath: /kubelet}]
  volumes:
  - name: kubelet
    hostPath: {path: /var/lib/kubelet, type: Directory}
`, appNS, e.busybox))
	waitFor(t, 2*time.Minute, "node-check done", func() (bool, string) {
		out, err := e.kubectl.run(30*time.Second, "", "-n", appNS, "get", "pod", "node-check", "-o", "jsonpath={.status.phase}")
		return err == nil && (out == "Succeeded" || out == "Failed"), out
	})
	out := e.kubectl.must(t, "-n", appNS, "logs", "node-check")
	e.kubectl.must(t, "-n", appNS, "delete", "pod", "node-check", "--wait=false")
	t.Logf("the node after helm uninstall:\n%s", out)
	want := "mounts:\n0\nprocs:\n0\nsockets:\n"
	if !strings.HasPrefix(out, want) || strings.Contains(out, driver) {
		t.Errorf("helm uninstall left something on the node (want no cifs mount, no csi-smb process, no %s registration socket):\n%s", driver, out)
	}
}
