//go:build chart

package chart

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// allOff is how the lab cluster installs: no sidecar image can be pulled.
var allOff = []string{
	"--set", "controller.provisioner.enabled=false", "--set", "controller.healthMonitor.enabled=false",
	"--set", "livenessProbe.sidecar=false", "--set", "node.registrar.mode=embedded",
}

func TestCSIDriver(t *testing.T) {
	t.Parallel()
	m := render(t)
	if len(m.csiDrivers) != 1 {
		t.Fatalf("%d CSIDrivers, want 1", len(m.csiDrivers))
	}
	d := m.csiDrivers[0]
	if d.Name != driverName {
		t.Errorf("CSIDriver %q, want %q", d.Name, driverName)
	}
	s := d.Spec
	if s.AttachRequired == nil || *s.AttachRequired {
		t.Errorf("attachRequired %v, want false", s.AttachRequired)
	}
	if s.PodInfoOnMount == nil || !*s.PodInfoOnMount {
		t.Errorf("podInfoOnMount %v, want true", s.PodInfoOnMount)
	}
	if s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.FileFSGroupPolicy {
		t.Errorf("fsGroupPolicy %v, want File", s.FSGroupPolicy)
	}
	if !slices.Equal(s.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}) {
		t.Errorf("volumeLifecycleModes %v, want [Persistent]", s.VolumeLifecycleModes)
	}
	if s.RequiresRepublish != nil || s.StorageCapacity != nil || s.TokenRequests != nil {
		t.Errorf("requiresRepublish/storageCapacity/tokenRequests should be unset: %+v", s)
	}

	renamed := render(t, "--set", "driver.name=smb.example.com")
	if got := renamed.csiDrivers[0].Name; got != "smb.example.com" {
		t.Errorf("driver.name: CSIDriver %q", got)
	}
	wantFlag(t, container(t, renamed.node.Spec.Template.Spec, "csi-smb"), "endpoint",
		"unix:///var/lib/kubelet/plugins/smb.example.com/csi.sock")
	wantFlag(t, container(t, renamed.controller.Spec.Template.Spec, "csi-smb"), "driver-name", "smb.example.com")
}

func TestControllerDefaults(t *testing.T) {
	t.Parallel()
	d := render(t).controller
	if d == nil {
		t.Fatal("no controller Deployment")
	}
	if d.Name != "csi-smb-controller" || d.Namespace != namespace {
		t.Errorf("Deployment %s/%s", d.Namespace, d.Name)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != "Recreate" {
		t.Errorf("strategy %q, want Recreate", d.Spec.Strategy.Type)
	}
	p := d.Spec.Template.Spec
	if got := containerNames(p); !slices.Equal(got, []string{"csi-smb", "csi-provisioner", "liveness-probe", "csi-external-health-monitor-controller"}) {
		t.Errorf("containers %v", got)
	}
	if p.NodeSelector["kubernetes.io/os"] != "linux" || len(p.NodeSelector) != 1 {
		t.Errorf("nodeSelector %v", p.NodeSelector)
	}
	if p.PriorityClassName != "system-cluster-critical" {
		t.Errorf("priorityClassName %q", p.PriorityClassName)
	}
	if p.ServiceAccountName != "csi-smb-controller" {
		t.Errorf("serviceAccountName %q", p.ServiceAccountName)
	}
	keys := map[string]bool{}
	for _, tol := range p.Tolerations {
		keys[tol.Key] = tol.Operator == corev1.TolerationOpExists
	}
	if !keys["node-role.kubernetes.io/control-plane"] || !keys["CriticalAddonsOnly"] {
		t.Errorf("tolerations %+v: want control-plane and CriticalAddonsOnly (Exists)", p.Tolerations)
	}
	if sel := d.Spec.Selector.MatchLabels; sel["app.kubernetes.io/component"] != "controller" ||
		d.Spec.Template.Labels["app.kubernetes.io/component"] != "controller" {
		t.Errorf("selector %v, pod labels %v", sel, d.Spec.Template.Labels)
	}
	images := map[string]string{
		"csi-smb":                                "ghcr.io/csi-smb/csi-smb:v0.1.0",
		"csi-provisioner":                        "registry.k8s.io/sig-storage/csi-provisioner:v6.3.0",
		"liveness-probe":                         "registry.k8s.io/sig-storage/livenessprobe:v2.19.0",
		"csi-external-health-monitor-controller": "registry.k8s.io/sig-storage/csi-external-health-monitor-controller:v0.18.0",
	}
	for name, want := range images {
		if got := container(t, p, name).Image; got != want {
			t.Errorf("%s image %q, want %q", name, got, want)
		}
	}
	if v := volume(t, p, "socket-dir"); v.EmptyDir == nil {
		t.Errorf("controller socket-dir %+v, want an emptyDir", v.VolumeSource)
	}
}

func TestControllerArgs(t *testing.T) {
	t.Parallel()
	p := render(t).controller.Spec.Template.Spec
	drv := container(t, p, "csi-smb")
	for _, a := range []string{"--mode=controller", "--endpoint=unix:///csi/csi.sock", "--kube-api",
		"--metrics-address=:29675", "--health-address=:29674", "--probe-interval=1s", "--v=2", "--driver-name=" + driverName} {
		if !hasArg(drv.Args, a) {
			t.Errorf("controller driver args %q: no %s", drv.Args, a)
		}
	}
	// Node-only flags stay off the controller.
	for _, f := range []string{"node-id", "mount-timeout", "dfs-failover", "kubelet-registration-dir"} {
		noFlag(t, drv, f)
	}
	if mount(t, drv, "socket-dir").MountPath != "/csi" {
		t.Errorf("driver socket-dir mount %+v", mount(t, drv, "socket-dir"))
	}

	prov := container(t, p, "csi-provisioner")
	for _, a := range []string{"--csi-address=/csi/csi.sock", "--leader-election", "--leader-election-namespace=kube-system",
		"--extra-create-metadata=true", "--retry-interval-max=30m", "--timeout=30s"} {
		if !hasArg(prov.Args, a) {
			t.Errorf("provisioner args %q: no %s", prov.Args, a)
		}
	}
	lp := container(t, p, "liveness-probe")
	for _, a := range []string{"--csi-address=/csi/csi.sock", "--probe-timeout=3s", "--http-endpoint=:29676"} {
		if !hasArg(lp.Args, a) {
			t.Errorf("livenessprobe args %q: no %s", lp.Args, a)
		}
	}
	hm := container(t, p, "csi-external-health-monitor-controller")
	for _, a := range []string{"--csi-address=/csi/csi.sock", "--leader-election", "--leader-election-namespace=kube-system"} {
		if !hasArg(hm.Args, a) {
			t.Errorf("health monitor args %q: no %s", hm.Args, a)
		}
	}
	for _, c := range []string{"csi-provisioner", "liveness-probe", "csi-external-health-monitor-controller"} {
		if mount(t, container(t, p, c), "socket-dir").MountPath != "/csi" {
			t.Errorf("%s does not mount the socket at /csi", c)
		}
	}

	// Another namespace reaches the leader election flags.
	out, err := helmTemplate(t, "--namespace", "csi")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "--leader-election-namespace=csi\n") || strings.Contains(out, "--leader-election-namespace=kube-system") {
		t.Error("--namespace csi does not set --leader-election-namespace=csi")
	}
}

// restricted fails unless c runs unprivileged: no privilege, drop ALL, read-only
// root, no escalation, non-root (its own or the pod's setting).
func restricted(t *testing.T, pod corev1.PodSpec, c corev1.Container, wantNonRoot bool) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", c.Name)
		return
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation %v, want false", c.Name, sc.AllowPrivilegeEscalation)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem %v, want true", c.Name, sc.ReadOnlyRootFilesystem)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: capabilities %+v, want drop [ALL] and no add", c.Name, sc.Capabilities)
	}
	if !wantNonRoot {
		return
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && pod.SecurityContext != nil {
		nonRoot = pod.SecurityContext.RunAsNonRoot
	}
	uid := sc.RunAsUser
	if uid == nil && pod.SecurityContext != nil {
		uid = pod.SecurityContext.RunAsUser
	}
	if nonRoot == nil || !*nonRoot || uid == nil || *uid == 0 {
		t.Errorf("%s: runAsNonRoot %v runAsUser %v, want true and non-zero", c.Name, nonRoot, uid)
	}
}

func TestControllerUnprivileged(t *testing.T) {
	t.Parallel()
	for name, args := range map[string][]string{"defaults": nil, "sidecars off": allOff} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := render(t, args...).controller.Spec.Template.Spec
			if p.HostNetwork || p.HostPID || p.HostIPC {
				t.Errorf("hostNetwork %v hostPID %v hostIPC %v, want none", p.HostNetwork, p.HostPID, p.HostIPC)
			}
			if p.SecurityContext == nil || p.SecurityContext.SeccompProfile == nil ||
				p.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("pod seccompProfile %+v, want RuntimeDefault", p.SecurityContext)
			}
			if p.SecurityContext.RunAsUser == nil || *p.SecurityContext.RunAsUser != 65532 {
				t.Errorf("pod runAsUser %v, want 65532", p.SecurityContext.RunAsUser)
			}
			for _, v := range p.Volumes {
				if v.HostPath != nil {
					t.Errorf("controller mounts host path %s", v.HostPath.Path)
				}
			}
			for _, c := range p.Containers {
				restricted(t, p, c, true)
				for _, vm := range c.VolumeMounts {
					if vm.MountPropagation != nil {
						t.Errorf("%s: mountPropagation %s", c.Name, *vm.MountPropagation)
					}
				}
			}
		})
	}
}

func TestNodePrivileged(t *testing.T) {
	t.Parallel()
	ds := render(t).node
	if ds == nil {
		t.Fatal("no node DaemonSet")
	}
	if ds.Name != "csi-smb-node" || ds.Namespace != namespace {
		t.Errorf("DaemonSet %s/%s", ds.Namespace, ds.Name)
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != "RollingUpdate" || us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable == nil ||
		*us.RollingUpdate.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1", us)
	}
	p := ds.Spec.Template.Spec
	if got := containerNames(p); !slices.Equal(got, []string{"csi-smb", "node-driver-registrar", "liveness-probe"}) {
		t.Errorf("containers %v", got)
	}
	if !p.HostNetwork || p.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v dnsPolicy %q", p.HostNetwork, p.DNSPolicy)
	}
	if p.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", p.PriorityClassName)
	}
	if p.TerminationGracePeriodSeconds == nil || *p.TerminationGracePeriodSeconds != 30 {
		t.Errorf("terminationGracePeriodSeconds %v, want 30", p.TerminationGracePeriodSeconds)
	}
	if len(p.Tolerations) != 1 || p.Tolerations[0].Operator != corev1.TolerationOpExists || p.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v, want one operator: Exists", p.Tolerations)
	}
	if p.ServiceAccountName != "csi-smb-node" {
		t.Errorf("serviceAccountName %q", p.ServiceAccountName)
	}

	drv := container(t, p, "csi-smb")
	if drv.SecurityContext == nil || drv.SecurityContext.Privileged == nil || !*drv.SecurityContext.Privileged {
		t.Errorf("node driver securityContext %+v, want privileged", drv.SecurityContext)
	}
	km := mount(t, drv, "kubelet-dir")
	if km.MountPath != defaultDir || km.MountPropagation == nil || *km.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("kubelet-dir mount %+v, want %s Bidirectional", km, defaultDir)
	}
	if kv := volume(t, p, "kubelet-dir"); kv.HostPath == nil || kv.HostPath.Path != defaultDir {
		t.Errorf("kubelet-dir volume %+v", kv.VolumeSource)
	}
	sv := volume(t, p, "socket-dir")
	if sv.HostPath == nil || sv.HostPath.Path != defaultDir+"/plugins/"+driverName ||
		sv.HostPath.Type == nil || *sv.HostPath.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("socket-dir volume %+v", sv.VolumeSource)
	}
	if rv := volume(t, p, "registration-dir"); rv.HostPath == nil || rv.HostPath.Path != defaultDir+"/plugins_registry" {
		t.Errorf("registration-dir volume %+v", rv.VolumeSource)
	}
	var nodeEnv *corev1.EnvVar
	for i := range drv.Env {
		if drv.Env[i].Name == "KUBE_NODE_NAME" {
			nodeEnv = &drv.Env[i]
		}
	}
	if nodeEnv == nil || nodeEnv.ValueFrom == nil || nodeEnv.ValueFrom.FieldRef == nil || nodeEnv.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("KUBE_NODE_NAME %+v, want from spec.nodeName", nodeEnv)
	}
	// The sidecars need no privilege.
	for _, c := range []string{"node-driver-registrar", "liveness-probe"} {
		restricted(t, p, container(t, p, c), false)
	}
}

func TestNodeArgs(t *testing.T) {
	t.Parallel()
	drv := container(t, render(t).node.Spec.Template.Spec, "csi-smb")
	for _, a := range []string{"--mode=node", "--node-id=$(KUBE_NODE_NAME)", "--kube-api", "--v=2", "--driver-name=" + driverName} {
		if !hasArg(drv.Args, a) {
			t.Errorf("node driver args %q: no %s", drv.Args, a)
		}
	}
	for flag, want := range map[string]string{
		"endpoint": "unix:///var/lib/kubelet/plugins/smb.csi-smb.io/csi.sock", "metrics-address": ":29672",
		"health-address": ":29671", "probe-interval": "1s", "check-interval": "2s", "remount-grace": "10s",
		"mount-timeout": "30s", "dfs-failover": "true", "dfs-unfence-after": "30s",
		"state-dir": "/var/lib/kubelet/plugins/smb.csi-smb.io/state",
	} {
		wantFlag(t, drv, flag, want)
	}

	set := render(t, "--set", "driver.probeInterval=500ms", "--set", "driver.checkInterval=5s",
		"--set", "driver.remountGrace=1m", "--set", "driver.mountTimeout=45s", "--set", "driver.dfsFailover=false",
		"--set", "driver.dfsUnfenceAfter=2m", "--set", "node.logLevel=5", "--set", "controller.logLevel=4")
	drv = container(t, set.node.Spec.Template.Spec, "csi-smb")
	for flag, want := range map[string]string{"probe-interval": "500ms", "check-interval": "5s", "remount-grace": "1m",
		"mount-timeout": "45s", "dfs-failover": "false", "dfs-unfence-after": "2m", "v": "5"} {
		wantFlag(t, drv, flag, want)
	}
	ctl := container(t, set.controller.Spec.Template.Spec, "csi-smb")
	wantFlag(t, ctl, "probe-interval", "500ms")
	wantFlag(t, ctl, "v", "4")
}

// portOf returns the port of a flag value like ":29671" or "127.0.0.1:29671".
func portOf(t *testing.T, addr string) int32 {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	n, err := strconv.ParseInt(addr[i+1:], 10, 32)
	if i < 0 || err != nil {
		t.Fatalf("address %q has no port", addr)
	}
	return int32(n)
}

// resolvePort finds the liveness probe's port among the container's ports.
func resolvePort(t *testing.T, c corev1.Container) (string, int32) {
	t.Helper()
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
		t.Fatalf("%s: no httpGet liveness probe", c.Name)
	}
	hg := c.LivenessProbe.HTTPGet
	if hg.Path != "/healthz" {
		t.Errorf("%s: liveness path %q", c.Name, hg.Path)
	}
	if hg.Port.Type == intstr.Int {
		return "", hg.Port.IntVal
	}
	for _, p := range c.Ports {
		if p.Name == hg.Port.StrVal {
			return p.Name, p.ContainerPort
		}
	}
	t.Fatalf("%s: liveness port %q is not one of its ports %+v", c.Name, hg.Port.StrVal, c.Ports)
	return "", 0
}

func TestPorts(t *testing.T) {
	t.Parallel()
	incumbent := func(p int32) bool { return (p >= 29641 && p <= 29644) || (p >= 29652 && p <= 29653) }
	for name, args := range map[string][]string{"defaults": nil, "sidecars off": allOff} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m := render(t, args...)
			seen := map[int32]string{}
			for _, pod := range []struct {
				name string
				spec corev1.PodSpec
			}{{"controller", m.controller.Spec.Template.Spec}, {"node", m.node.Spec.Template.Spec}} {
				for _, c := range pod.spec.Containers {
					for _, p := range c.Ports {
						where := pod.name + "/" + c.Name + "/" + p.Name
						if prev, dup := seen[p.ContainerPort]; dup {
							t.Errorf("port %d used by %s and %s", p.ContainerPort, prev, where)
						}
						seen[p.ContainerPort] = where
						if incumbent(p.ContainerPort) {
							t.Errorf("%s: port %d is csi-driver-smb's or csi-driver-nfs's", where, p.ContainerPort)
						}
					}
					// Every listening flag has its declared port.
					for _, f := range []string{"metrics-address", "health-address", "http-endpoint"} {
						if v, ok := flagValue(c.Args, f); ok {
							port := portOf(t, v)
							if _, declared := seen[port]; !declared {
								t.Errorf("%s/%s: --%s=%s has no containerPort", pod.name, c.Name, f, v)
							}
						}
					}
				}
			}
			if len(seen) == 0 {
				t.Fatal("no ports")
			}
		})
	}
}

func TestLiveness(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		args      []string
		component string
		wantPort  int32
		wantName  string
	}{
		{"controller sidecar", nil, "controller", 29676, "liveness"},
		{"node sidecar", nil, "node", 29673, "liveness"},
		{"controller own healthz", []string{"--set", "livenessProbe.sidecar=false"}, "controller", 29674, "health"},
		{"node own healthz", []string{"--set", "livenessProbe.sidecar=false"}, "node", 29671, "health"},
		{"node ports moved", []string{"--set", "livenessProbe.sidecar=false", "--set", "node.ports.health=30001"}, "node", 30001, "health"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := render(t, tc.args...)
			spec := m.controller.Spec.Template.Spec
			if tc.component == "node" {
				spec = m.node.Spec.Template.Spec
			}
			drv := container(t, spec, "csi-smb")
			name, port := resolvePort(t, drv)
			if name != tc.wantName || port != tc.wantPort {
				t.Errorf("liveness probe goes to %s:%d, want %s:%d", name, port, tc.wantName, tc.wantPort)
			}
			if tc.wantName == "health" {
				wantFlag(t, drv, "health-address", fmt.Sprintf(":%d", tc.wantPort))
				if slices.Contains(containerNames(spec), "liveness-probe") {
					t.Error("livenessProbe.sidecar=false still renders the liveness-probe container")
				}
			} else {
				wantFlag(t, container(t, spec, "liveness-probe"), "http-endpoint", fmt.Sprintf(":%d", tc.wantPort))
			}
		})
	}
}

func TestKubeletDir(t *testing.T) {
	t.Parallel()
	const k3s = "/var/lib/rancher/k3s/agent/kubelet"
	for _, mode := range []string{"sidecar", "embedded"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			m := render(t, "--set", "kubeletDir="+k3s, "--set", "node.registrar.mode="+mode)
			if strings.Contains(m.raw, defaultDir) {
				t.Errorf("kubeletDir=%s still renders %s somewhere", k3s, defaultDir)
			}
			p := m.node.Spec.Template.Spec
			for _, v := range p.Volumes {
				if v.HostPath != nil && !strings.HasPrefix(v.HostPath.Path, k3s) {
					t.Errorf("volume %s: host path %s not under %s", v.Name, v.HostPath.Path, k3s)
				}
			}
			drv := container(t, p, "csi-smb")
			socket := k3s + "/plugins/" + driverName + "/csi.sock"
			wantFlag(t, drv, "endpoint", "unix://"+socket)
			km := mount(t, drv, "kubelet-dir")
			if km.MountPath != k3s {
				t.Errorf("kubelet-dir mounted at %s, want %s", km.MountPath, k3s)
			}
			if volume(t, p, "kubelet-dir").HostPath.Path != k3s || volume(t, p, "socket-dir").HostPath.Path != k3s+"/plugins/"+driverName {
				t.Error("kubelet-dir or socket-dir not moved")
			}
			if mode == "sidecar" {
				wantFlag(t, container(t, p, "node-driver-registrar"), "kubelet-registration-path", socket)
				if volume(t, p, "registration-dir").HostPath.Path != k3s+"/plugins_registry" {
					t.Error("registration-dir not moved")
				}
			} else {
				wantFlag(t, drv, "kubelet-registration-path", socket)
				wantFlag(t, drv, "kubelet-registration-dir", k3s+"/plugins_registry")
			}
		})
	}
}

func TestRegistrarModes(t *testing.T) {
	t.Parallel()
	socket := defaultDir + "/plugins/" + driverName + "/csi.sock"

	p := render(t).node.Spec.Template.Spec
	reg := container(t, p, "node-driver-registrar")
	wantFlag(t, reg, "kubelet-registration-path", socket)
	wantFlag(t, reg, "csi-address", "/csi/csi.sock")
	if mount(t, reg, "registration-dir").MountPath != "/registration" || mount(t, reg, "socket-dir").MountPath != "/csi" {
		t.Errorf("registrar mounts %+v", reg.VolumeMounts)
	}
	if got := reg.Image; got != "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.17.0" {
		t.Errorf("registrar image %q", got)
	}
	drv := container(t, p, "csi-smb")
	noFlag(t, drv, "kubelet-registration-dir")
	noFlag(t, drv, "kubelet-registration-path")

	p = render(t, "--set", "node.registrar.mode=embedded").node.Spec.Template.Spec
	if slices.Contains(containerNames(p), "node-driver-registrar") {
		t.Error("embedded mode renders node-driver-registrar")
	}
	if hasVolume(p, "registration-dir") {
		t.Error("embedded mode renders the registration-dir volume (the driver reaches it through the kubelet dir)")
	}
	drv = container(t, p, "csi-smb")
	wantFlag(t, drv, "kubelet-registration-dir", defaultDir+"/plugins_registry")
	wantFlag(t, drv, "kubelet-registration-path", socket)
}

func TestSidecarsOff(t *testing.T) {
	t.Parallel()
	m := render(t, allOff...)
	if got := containerNames(m.controller.Spec.Template.Spec); !slices.Equal(got, []string{"csi-smb"}) {
		t.Errorf("controller containers %v, want [csi-smb]", got)
	}
	if got := containerNames(m.node.Spec.Template.Spec); !slices.Equal(got, []string{"csi-smb"}) {
		t.Errorf("node containers %v, want [csi-smb]", got)
	}
	for _, name := range []string{"csi-smb-provisioner", "csi-smb-health-monitor"} {
		if _, ok := m.clusterRoles[name]; ok {
			t.Errorf("ClusterRole %s rendered with its sidecar off", name)
		}
		if _, ok := m.clusterBindings[name]; ok {
			t.Errorf("ClusterRoleBinding %s rendered with its sidecar off", name)
		}
	}
	if len(m.roles) != 0 || len(m.roleBindings) != 0 {
		t.Errorf("leader-election Role rendered without a leader-electing sidecar: %v", m.roles)
	}
	for _, name := range []string{"csi-smb-controller", "csi-smb-node"} {
		if _, ok := m.clusterRoles[name]; !ok {
			t.Errorf("ClusterRole %s missing", name)
		}
	}
	for _, s := range []string{"registry.k8s.io", "livenessprobe", "csi-provisioner", "node-driver-registrar"} {
		if strings.Contains(m.raw, s) {
			t.Errorf("rendered output still mentions %q", s)
		}
	}
}

func TestOverrides(t *testing.T) {
	t.Parallel()
	m := render(t, valuesFile(t, `
imagePullSecrets: [{name: regcred}]
image:
  baseRepo: mirror.example.com/k8s
  csiSMB: {tag: v9.9.9, pullPolicy: Always}
customLabels: {team: storage}
controller:
  extraArgs: ["--smb-timeout=10s"]
  tolerations: [{key: dedicated, operator: Equal, value: storage, effect: NoSchedule}]
  nodeSelector: {pool: infra}
  podAnnotations: {prometheus.io/scrape: "true"}
  env: [{name: GODEBUG, value: "x=1"}]
  priorityClassName: ""
node:
  extraArgs: ["--stats-timeout=3s", "--shutdown-timeout=15s"]
  tolerations: [{key: gpu, operator: Exists}]
  podLabels: {tier: storage}
  resources: {limits: {memory: 1Gi}}
`)...)
	cp, np := m.controller.Spec.Template.Spec, m.node.Spec.Template.Spec
	for _, p := range []corev1.PodSpec{cp, np} {
		if len(p.ImagePullSecrets) != 1 || p.ImagePullSecrets[0].Name != "regcred" {
			t.Errorf("imagePullSecrets %+v", p.ImagePullSecrets)
		}
		for _, c := range p.Containers {
			if !strings.HasPrefix(c.Image, "mirror.example.com/k8s/") {
				t.Errorf("%s image %q not from image.baseRepo", c.Name, c.Image)
			}
		}
	}
	drv := container(t, cp, "csi-smb")
	if drv.Image != "mirror.example.com/k8s/csi-smb:v9.9.9" || drv.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("driver image %q %s", drv.Image, drv.ImagePullPolicy)
	}
	if got := container(t, cp, "csi-provisioner").Image; got != "mirror.example.com/k8s/csi-provisioner:v6.3.0" {
		t.Errorf("provisioner image %q", got)
	}
	if got := container(t, np, "node-driver-registrar").Image; got != "mirror.example.com/k8s/csi-node-driver-registrar:v2.17.0" {
		t.Errorf("registrar image %q", got)
	}
	if drv.Args[len(drv.Args)-1] != "--smb-timeout=10s" {
		t.Errorf("controller extraArgs not last: %q", drv.Args)
	}
	nd := container(t, np, "csi-smb")
	if !hasArg(nd.Args, "--stats-timeout=3s") || !hasArg(nd.Args, "--shutdown-timeout=15s") {
		t.Errorf("node extraArgs missing: %q", nd.Args)
	}
	if nd.Resources.Limits.Memory().String() != "1Gi" {
		t.Errorf("node resources %+v", nd.Resources)
	}
	if len(cp.Tolerations) != 1 || cp.Tolerations[0].Key != "dedicated" || cp.Tolerations[0].Value != "storage" {
		t.Errorf("controller tolerations %+v", cp.Tolerations)
	}
	if len(np.Tolerations) != 1 || np.Tolerations[0].Key != "gpu" {
		t.Errorf("node tolerations %+v", np.Tolerations)
	}
	if cp.NodeSelector["pool"] != "infra" || cp.PriorityClassName != "" {
		t.Errorf("controller nodeSelector %v priorityClassName %q", cp.NodeSelector, cp.PriorityClassName)
	}
	if m.controller.Spec.Template.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("podAnnotations %v", m.controller.Spec.Template.Annotations)
	}
	if m.node.Spec.Template.Labels["tier"] != "storage" {
		t.Errorf("podLabels %v", m.node.Spec.Template.Labels)
	}
	if len(drv.Env) != 1 || drv.Env[0].Name != "GODEBUG" {
		t.Errorf("controller env %+v", drv.Env)
	}
	for _, labels := range []map[string]string{m.controller.Labels, m.node.Labels, m.csiDrivers[0].Labels, m.clusterRoles["csi-smb-node"].Labels} {
		if labels["team"] != "storage" {
			t.Errorf("customLabels missing: %v", labels)
		}
	}
}

func TestServiceAccountsAndRBACOff(t *testing.T) {
	t.Parallel()
	m := render(t, "--set", "serviceAccount.create=false", "--set", "rbac.create=false",
		"--set", "serviceAccount.controller=ctl", "--set", "serviceAccount.node=nd")
	if len(m.serviceAccounts) != 0 || len(m.clusterRoles) != 0 || len(m.clusterBindings) != 0 || len(m.roles) != 0 {
		t.Errorf("rendered %d ServiceAccounts, %d ClusterRoles, %d bindings, %d Roles; want none",
			len(m.serviceAccounts), len(m.clusterRoles), len(m.clusterBindings), len(m.roles))
	}
	if m.controller.Spec.Template.Spec.ServiceAccountName != "ctl" || m.node.Spec.Template.Spec.ServiceAccountName != "nd" {
		t.Error("serviceAccount names not used by the pods")
	}
}

func rulesOf(rules []rbacv1.PolicyRule) map[string][]string {
	out := map[string][]string{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := res
				if g != "" {
					key = g + "/" + res
				}
				verbs := slices.Clone(r.Verbs)
				slices.Sort(verbs)
				out[key] = verbs
			}
		}
	}
	return out
}

func TestRBAC(t *testing.T) {
	t.Parallel()
	m := render(t)
	want := map[string]map[string][]string{
		// Exactly what pkg/kube calls.
		"csi-smb-controller": {"persistentvolumes": {"list"}},
		"csi-smb-node":       {"events": {"create", "patch"}, "persistentvolumeclaims": {"get"}},
		"csi-smb-provisioner": {
			"persistentvolumes":                {"create", "delete", "get", "list", "watch"},
			"persistentvolumeclaims":           {"get", "list", "update", "watch"},
			"storage.k8s.io/storageclasses":    {"get", "list", "watch"},
			"events":                           {"create", "get", "list", "patch", "update", "watch"},
			"storage.k8s.io/csinodes":          {"get", "list", "watch"},
			"nodes":                            {"get", "list", "watch"},
			"storage.k8s.io/volumeattachments": {"get", "list", "watch"},
			"secrets":                          {"get"},
		},
		"csi-smb-health-monitor": {
			"persistentvolumes": {"get", "list", "watch"}, "persistentvolumeclaims": {"get", "list", "watch"},
			"nodes": {"get", "list", "watch"}, "pods": {"get", "list", "watch"},
			"events": {"create", "get", "list", "patch", "watch"},
		},
	}
	if len(m.clusterRoles) != len(want) {
		t.Errorf("%d ClusterRoles, want %d", len(m.clusterRoles), len(want))
	}
	for name, rules := range want {
		cr, ok := m.clusterRoles[name]
		if !ok {
			t.Errorf("no ClusterRole %s", name)
			continue
		}
		got := rulesOf(cr.Rules)
		if fmt.Sprint(got) != fmt.Sprint(rules) {
			t.Errorf("ClusterRole %s rules\n got %v\nwant %v", name, got, rules)
		}
		b, ok := m.clusterBindings[name]
		if !ok || b.RoleRef.Name != name || len(b.Subjects) != 1 || b.Subjects[0].Namespace != namespace {
			t.Errorf("ClusterRoleBinding %s: %+v", name, b)
			continue
		}
		sa := "csi-smb-controller"
		if name == "csi-smb-node" {
			sa = "csi-smb-node"
		}
		if b.Subjects[0].Name != sa {
			t.Errorf("ClusterRoleBinding %s binds %s, want %s", name, b.Subjects[0].Name, sa)
		}
	}
	role, ok := m.roles["csi-smb-controller-leases"]
	if !ok || role.Namespace != namespace {
		t.Fatalf("leases Role %+v", role)
	}
	if got := rulesOf(role.Rules); len(got) != 1 || got["coordination.k8s.io/leases"] == nil {
		t.Errorf("leases Role rules %v", got)
	}
	if len(m.serviceAccounts) != 2 {
		t.Errorf("%d ServiceAccounts, want 2", len(m.serviceAccounts))
	}
}

func TestStorageClasses(t *testing.T) {
	t.Parallel()
	if n := len(render(t).storageClasses); n != 0 {
		t.Errorf("defaults render %d StorageClasses, want 0", n)
	}
	m := render(t, valuesFile(t, `
storageClasses:
  - name: smb
    annotations: {storageclass.kubernetes.io/is-default-class: "true"}
    parameters:
      source: //fs1.example.com/projects
      subDir: ${pvc.metadata.namespace}/${pvc.metadata.name}
      csi.storage.k8s.io/node-stage-secret-name: smb-creds
      csi.storage.k8s.io/node-stage-secret-namespace: kube-system
    mountOptions: [dir_mode=0777, file_mode=0777]
  - name: smb-retain
    parameters: {source: //fs2.example.com/archive, onDelete: archive}
    reclaimPolicy: Retain
    volumeBindingMode: WaitForFirstConsumer
  - name: smb-dfs
    parameters: {source: //corp.example.com/dfs/link}
`)...)
	if len(m.storageClasses) != 3 {
		t.Fatalf("%d StorageClasses, want 3", len(m.storageClasses))
	}
	byName := map[string]*storagev1.StorageClass{}
	for _, sc := range m.storageClasses {
		byName[sc.Name] = sc
		if sc.Provisioner != driverName {
			t.Errorf("%s: provisioner %q", sc.Name, sc.Provisioner)
		}
		if sc.AllowVolumeExpansion == nil || *sc.AllowVolumeExpansion {
			t.Errorf("%s: allowVolumeExpansion %v, want false", sc.Name, sc.AllowVolumeExpansion)
		}
	}
	smb := byName["smb"]
	if smb == nil || smb.Parameters["source"] != "//fs1.example.com/projects" ||
		smb.Parameters["subDir"] != "${pvc.metadata.namespace}/${pvc.metadata.name}" ||
		smb.Parameters["csi.storage.k8s.io/node-stage-secret-name"] != "smb-creds" {
		t.Fatalf("smb parameters %+v", smb)
	}
	if !slices.Equal(smb.MountOptions, []string{"dir_mode=0777", "file_mode=0777"}) {
		t.Errorf("smb mountOptions %v", smb.MountOptions)
	}
	if smb.Annotations["storageclass.kubernetes.io/is-default-class"] != "true" {
		t.Errorf("smb annotations %v", smb.Annotations)
	}
	if *smb.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete || *smb.VolumeBindingMode != storagev1.VolumeBindingImmediate {
		t.Errorf("smb defaults: reclaim %v binding %v", *smb.ReclaimPolicy, *smb.VolumeBindingMode)
	}
	r := byName["smb-retain"]
	if r == nil || *r.ReclaimPolicy != corev1.PersistentVolumeReclaimRetain || *r.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
		r.Parameters["onDelete"] != "archive" || len(r.MountOptions) != 0 {
		t.Errorf("smb-retain %+v", r)
	}
}

func TestSchemaRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string // in helm's error
	}{
		{"unknown registrar mode", []string{"--set", "node.registrar.mode=daemon"}, "/node/registrar/mode"},
		{"log level as text", []string{"--set", "controller.logLevel=high"}, "/controller/logLevel"},
		{"port as text", []string{"--set-string", "node.ports.health=abc"}, "/node/ports/health"},
		{"port out of range", []string{"--set", "controller.ports.metrics=70000"}, "/controller/ports/metrics"},
		{"relative kubeletDir", []string{"--set", "kubeletDir=var/lib/kubelet"}, "/kubeletDir"},
		{"bad duration", []string{"--set", "driver.probeInterval=fast"}, "/driver/probeInterval"},
		{"sidecar flag as text", []string{"--set-string", "livenessProbe.sidecar=no"}, "/livenessProbe/sidecar"},
		{"typo in a key", []string{"--set", "node.registrar.mod=embedded"}, "mod"},
		{"extraArgs not a list", []string{"--set", "node.extraArgs=--v=5"}, "/node/extraArgs"},
		{"StorageClass without source", []string{"--set", "storageClasses[0].name=x", "--set", "storageClasses[0].parameters.subDir=a"}, "source"},
		{"StorageClass bad reclaimPolicy", []string{"--set", "storageClasses[0].name=x", "--set", "storageClasses[0].parameters.source=//s/x",
			"--set", "storageClasses[0].reclaimPolicy=Recycle"}, "reclaimPolicy"},
		{"bad pullPolicy", []string{"--set", "image.csiSMB.pullPolicy=Sometimes"}, "/image/csiSMB/pullPolicy"},
		{"prometheusRule.enabled as text", []string{"--set", "monitoring.prometheusRule.enabled=yes"}, "/monitoring/prometheusRule/enabled"},
		{"prometheusRule labels not a map", []string{"--set", "monitoring.prometheusRule.labels=x"}, "/monitoring/prometheusRule/labels"},
		{"dashboard label value a number", []string{"--set", "monitoring.dashboard.labelValue=1"}, "/monitoring/dashboard/labelValue"},
		{"typo in a monitoring key", []string{"--set", "monitoring.dashboard.enable=true"}, "enable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := helmTemplate(t, tc.args...)
			if err == nil {
				t.Fatalf("helm template %v succeeded:\n%.300s", tc.args, out)
			}
			if msg := err.Error(); !strings.Contains(msg, "schema") || !strings.Contains(msg, tc.want) {
				t.Errorf("helm's error does not name the schema and %q: %v", tc.want, err)
			}
		})
	}
}

// freeForm are maps of the user's keys: one value each.
var freeForm = map[string]bool{"nodeSelector": true, "affinity": true, "podAnnotations": true, "podLabels": true,
	"customLabels": true, "resources": true}

// leafKeys lists the dotted paths of values' leaves (lists, empty and free-form maps are leaves).
func leafKeys(prefix string, v any) []string {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 || freeForm[prefix[strings.LastIndex(prefix, ".")+1:]] {
		return []string{prefix}
	}
	var out []string
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		out = append(out, leafKeys(p, sub)...)
	}
	return out
}

func TestReadmeListsEveryValue(t *testing.T) {
	t.Parallel()
	values, err := os.ReadFile(chartDir + "/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(chartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := utilyaml.Unmarshal(values, &v); err != nil {
		t.Fatal(err)
	}
	keys := leafKeys("", v)
	if len(keys) < 50 {
		t.Fatalf("only %d values found", len(keys))
	}
	for _, k := range keys {
		// Images are listed as image.<name>.{registry,repository,tag,pullPolicy}.
		candidates := []string{"`" + k + "`"}
		if i := strings.LastIndex(k, "."); i > 0 && strings.HasPrefix(k, "image.") {
			candidates = append(candidates, "`"+k[:i]+".{registry,repository,tag,pullPolicy}`")
		}
		found := false
		for _, c := range candidates {
			found = found || strings.Contains(string(readme), "| "+c+" |")
		}
		if !found {
			t.Errorf("README.md has no row for %s", k)
		}
	}
}
