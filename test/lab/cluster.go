package lab

import (
	"bytes"
	"context"
	_ "embed" // node.sh
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A one-node Kubernetes cluster in the lab (ClusterUp): etcd, kube-apiserver,
// kube-controller-manager and kube-scheduler in the client namespace
// (10.213.0.20), and the qemu guest (10.213.0.10) as the node, running
// containerd, runc, the CNI bridge plugin and the kubelet from a tmpfs root
// (node.sh). No kube-proxy: pods that talk to the API server set
// KUBERNETES_SERVICE_HOST/PORT to 10.213.0.20/6443 themselves.
const (
	// NodeName is the node's name (the guest's hostname).
	NodeName = "lab-node"
	// PodCIDR is the pod network on the node's cni0 bridge; the client
	// namespace routes it through the guest so the API server can answer pods.
	PodCIDR = "10.88.0.0/16"
	// DefaultKubeBinDir holds the Kubernetes binaries (hack/build-kube.sh).
	DefaultKubeBinDir  = "/var/cache/csi-smb/kube/bin"
	clusterMemoryMiB   = 3072
	clusterReadyWait   = 15 * time.Minute
	nodeStopWait       = 30 * time.Second
	kcmPort, schedPort = 10257, 10259
)

// clusterAPIServerArgs: the 1.37 volume-health path, privileged pods (the CSI
// node plugin), and kubelet connections (logs, exec) to the node's InternalIP
// rather than its hostname, which nothing resolves.
var clusterAPIServerArgs = []string{
	"--feature-gates=CSIVolumeHealth=true",
	"--allow-privileged=true",
	"--kubelet-preferred-address-types=InternalIP",
}

// nodeModules are loaded in the node on top of the guest's own: overlayfs
// for containerd's snapshotter, bridge and veth for the CNI bridge plugin,
// nftables NAT for the kubernetes Service (NodeServiceNAT).
var nodeModules = []string{"overlay", "bridge", "veth", "nft_chain_nat", "nft_nat"}

// nodeBins are the host's Debian binaries the node runs (packages containerd,
// runc, containernetworking-plugins); each goes to the same path in the node.
var nodeBins = []string{
	"containerd", "containerd-shim-runc-v2", "ctr", "runc",
	"/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback",
}

//go:embed node.sh
var nodeScript []byte

// ClusterOptions configures ClusterUp.
type ClusterOptions struct {
	KubeBinDir   string        // kube-apiserver, kube-controller-manager, kube-scheduler, kubelet; default DefaultKubeBinDir
	Images       []string      // docker-archive tars, imported into the node with ctr -n k8s.io images import
	PauseImage   string        // the sandbox image (containerd sandbox_image), one of Images' tags; required
	MemoryMiB    int           // guest memory; default 3072
	ReadyTimeout time.Duration // boot to node Ready; default 15 min
	KubeletV     int           // kubelet -v; default 2
	Log          io.Writer     // progress; default os.Stderr
}

// ClusterTimes are the durations ClusterUp measured.
type ClusterTimes struct {
	ControlPlane time.Duration // etcd + apiserver ready, controller-manager and scheduler listening
	Prepare      time.Duration // share and initramfs
	NodeReady    time.Duration // qemu start to node Ready
	Total        time.Duration
}

// podRouteNS are the namespaces that route PodCIDR via the node: the
// client's and every server's.
func (l *Lab) podRouteNS() []string {
	ns := []string{l.ClientNS()}
	for _, s := range l.Servers {
		ns = append(ns, s.Netns(l))
	}
	return ns
}

func (l *Lab) clusterDir() string   { return filepath.Join(l.Dir, "cluster") }
func (l *Lab) clusterShare() string { return filepath.Join(l.clusterDir(), "share") }

// ClusterLogs is the directory with the node's logs (kubelet.log,
// containerd.log, import.log, free), its status lines and the console.
func (l *Lab) ClusterLogs() string { return filepath.Join(l.clusterShare(), "logs") }

// ClusterUp brings up the one-node cluster: the API server (restarted with
// the cluster's flags if KubeUp already ran), controller-manager, scheduler,
// and the guest as node NodeName; it returns once the node is Ready and the
// default ServiceAccount exists. Every process's PID goes to the lab state, so
// ClusterDown (and Down) stop them. Logs: l.kubeDir() for the control plane,
// ClusterLogs for the node, <lab>/cluster/console.log for the guest console.
func (l *Lab) ClusterUp(ctx context.Context, o ClusterOptions) (t ClusterTimes, err error) {
	start := time.Now()
	if o.KubeBinDir == "" {
		o.KubeBinDir = DefaultKubeBinDir
	}
	if o.MemoryMiB == 0 {
		o.MemoryMiB = clusterMemoryMiB
	}
	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = clusterReadyWait
	}
	if o.KubeletV == 0 {
		o.KubeletV = 2
	}
	if o.Log == nil {
		o.Log = os.Stderr
	}
	if o.PauseImage == "" {
		return t, errors.New("cluster: no pause image (ClusterOptions.PauseImage)")
	}
	if alive(l.NodePID) || alive(l.ControllerManagerPID) || alive(l.SchedulerPID) {
		return t, errors.New("the cluster is already up (run: smblab cluster down)")
	}
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"} {
		if _, err := os.Stat(filepath.Join(o.KubeBinDir, c)); err != nil {
			return t, fmt.Errorf("cluster: %w (build it: hack/build-kube.sh)", err)
		}
	}
	for _, img := range o.Images {
		if _, err := os.Stat(img); err != nil {
			return t, fmt.Errorf("cluster image: %w", err)
		}
	}
	defer func() {
		if err != nil {
			_ = l.ClusterDown(context.WithoutCancel(ctx))
		}
	}()
	if err := os.RemoveAll(l.clusterDir()); err != nil {
		return t, fmt.Errorf("cluster dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(l.clusterShare(), "logs"), 0o755); err != nil {
		return t, fmt.Errorf("cluster dir: %w", err)
	}

	// Control plane.
	if alive(l.APIServerPID) || alive(l.EtcdPID) {
		if err := l.KubeDown(ctx); err != nil {
			return t, err
		}
	}
	if err := l.KubeUp(ctx, filepath.Join(o.KubeBinDir, "kube-apiserver"), clusterAPIServerArgs...); err != nil {
		return t, err
	}
	if err := l.startControllers(ctx, o.KubeBinDir); err != nil {
		return t, err
	}
	t.ControlPlane = time.Since(start)
	fmt.Fprintf(o.Log, "cluster: control plane up in %.1fs\n", t.ControlPlane.Seconds())

	// The node's share and the guest's initramfs.
	prep := time.Now()
	rel, err := newestKernel()
	if err != nil {
		return t, err
	}
	if err := l.writeNodeShare(ctx, rel, o); err != nil {
		return t, err
	}
	initrd := filepath.Join(l.clusterDir(), "initramfs.cpio.gz")
	if err := buildInitramfs(ctx, rel, l.clusterDir(), initrd); err != nil {
		return t, err
	}
	t.Prepare = time.Since(prep)

	// Replies to pods (from the API server, and from the SMB servers to the
	// controller, which is on the pod network) go back through the node.
	for _, ns := range l.podRouteNS() {
		_ = run(ctx, "ip", "-n", ns, "route", "del", PodCIDR)
		if err := run(ctx, "ip", "-n", ns, "route", "add", PodCIDR, "via", GuestIP); err != nil {
			return t, err
		}
	}
	boot := time.Now()
	if err := l.startNode(ctx, rel, initrd, o.MemoryMiB); err != nil {
		return t, err
	}
	fmt.Fprintf(o.Log, "cluster: node booting (qemu pid %d, %d MiB); console %s\n", l.NodePID, o.MemoryMiB, filepath.Join(l.clusterDir(), "console.log"))
	if err := l.waitNodeReady(ctx, o.ReadyTimeout, o.Log); err != nil {
		return t, err
	}
	t.NodeReady = time.Since(boot)
	ready := time.Now()
	if err := l.waitDefaultSA(ctx, time.Minute); err != nil {
		return t, err
	}
	// NodeMemory then reports the node as it is once Ready (node.sh writes
	// it every 5 s).
	for deadline := time.Now().Add(8 * time.Second); time.Now().Before(deadline); {
		if st, err := os.Stat(filepath.Join(l.ClusterLogs(), "free")); err == nil && st.ModTime().After(ready) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Total = time.Since(start)
	return t, nil
}

// startControllers starts kube-controller-manager (ServiceAccounts and their
// tokens, kube-root-ca.crt, the node lifecycle, DaemonSets...) and
// kube-scheduler in the client namespace, on the lab's admin kubeconfig.
func (l *Lab) startControllers(ctx context.Context, binDir string) error {
	kd := l.kubeDir()
	kc := l.Kubeconfig()
	schedConf := filepath.Join(kd, "scheduler.yaml")
	conf := fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
leaderElection:
  leaderElect: false
`, kc)
	if err := os.WriteFile(schedConf, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("scheduler config: %w", err)
	}
	kcmLog := filepath.Join(kd, "controller-manager.log")
	kcm, err := l.startInClient(filepath.Join(binDir, "kube-controller-manager"), kcmLog,
		"--kubeconfig="+kc,
		// The API server's self-signed chain (its cert and the CA that signed
		// it) is what pods must trust: it becomes kube-root-ca.crt.
		"--root-ca-file="+filepath.Join(kd, "certs", "apiserver.crt"),
		"--service-account-private-key-file="+filepath.Join(kd, "sa.key"),
		"--use-service-account-credentials=false",
		"--leader-elect=false",
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", kcmPort),
		"--cert-dir="+filepath.Join(kd, "kcm-certs"),
		"--cluster-name=lab",
		"--profiling=false")
	if err != nil {
		return err
	}
	l.ControllerManagerPID = kcm
	if err := l.save(); err != nil {
		return err
	}
	schedLog := filepath.Join(kd, "scheduler.log")
	sched, err := l.startInClient(filepath.Join(binDir, "kube-scheduler"), schedLog,
		"--config="+schedConf,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", schedPort),
		"--cert-dir="+filepath.Join(kd, "scheduler-certs"),
		"--profiling=false")
	if err != nil {
		return err
	}
	l.SchedulerPID = sched
	if err := l.save(); err != nil {
		return err
	}
	if err := waitListen(ctx, kcm, "127.0.0.1", kcmPort, 60*time.Second, "kube-controller-manager", kcmLog); err != nil {
		return err
	}
	return waitListen(ctx, sched, "127.0.0.1", schedPort, 60*time.Second, "kube-scheduler", schedLog)
}

// writeNodeShare fills the guest share: node.sh as the guest program, root/
// (copied over the initramfs into the node's tmpfs root: binaries with their
// libraries, modules, configuration), images/ and logs/.
func (l *Lab) writeNodeShare(ctx context.Context, rel string, o ClusterOptions) error {
	share := l.clusterShare()
	root := filepath.Join(share, "root")
	if err := os.WriteFile(filepath.Join(share, "node.sh"), nodeScript, 0o755); err != nil {
		return fmt.Errorf("node share: %w", err)
	}
	if err := writeGuestCmd(share, "node.sh", []string{"stage1"}); err != nil {
		return err
	}
	// The kubelet is copied into the tmpfs root with the rest: run from the 9p
	// share it took 15 s from exec to its first log line (page faults over 9p
	// under TCG), against a second or two for the copy.
	files := map[string]string{filepath.Join(root, "usr/local/bin/kubelet"): filepath.Join(o.KubeBinDir, "kubelet")}
	// This very program serves as the node's `smblab node-nat`.
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("node share: %w", err)
	}
	files[filepath.Join(root, "usr/local/bin/smblab")] = self
	for _, b := range append(nodeBins, self) {
		p, err := exec.LookPath(b)
		if err != nil {
			return fmt.Errorf("node binary %s: %w (apt-get install containerd runc containernetworking-plugins)", b, err)
		}
		if p != self {
			files[filepath.Join(root, p)] = p
		}
		libs, err := sharedLibs(ctx, p)
		if err != nil && !isStatic(p) {
			return err
		}
		for _, lib := range libs {
			files[filepath.Join(root, lib)] = lib
		}
	}
	mods, err := modulesWithDeps(ctx, rel, nodeModules)
	if err != nil {
		return err
	}
	for _, m := range mods {
		files[filepath.Join(root, m)] = m
	}
	for dst, src := range files {
		if err := copyFile(src, dst); err != nil {
			return fmt.Errorf("node share: %w", err)
		}
	}
	kc, err := os.ReadFile(l.Kubeconfig())
	if err != nil {
		return fmt.Errorf("node kubeconfig: %w", err)
	}
	env := fmt.Sprintf("NODE_NAME=%s\nNODE_IP=%s\nDEFAULT_GW=%s\nKUBELET_V=%d\n", NodeName, GuestIP, ClientIP, o.KubeletV)
	conf := map[string]string{
		"etc/node.env":                  env,
		"etc/node-modules.list":         strings.Join(mods, "\n") + "\n",
		"etc/containerd/config.toml":    fmt.Sprintf(containerdConfig, o.PauseImage),
		"etc/cni/net.d/10-lab.conflist": fmt.Sprintf(cniConfig, PodCIDR),
		"etc/kubernetes/kubelet.yaml":   kubeletConfig,
		"etc/kubernetes/kubeconfig":     string(kc),
	}
	for name, body := range conf {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("node share: %w", err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return fmt.Errorf("node share: %w", err)
		}
	}
	for _, img := range o.Images {
		if err := copyFile(img, filepath.Join(share, "images", filepath.Base(img))); err != nil {
			return fmt.Errorf("node image: %w", err)
		}
	}
	return nil
}

// isStatic reports whether ldd calls bin not a dynamic executable.
func isStatic(bin string) bool {
	out, _ := exec.Command("ldd", bin).CombinedOutput()
	return bytes.Contains(out, []byte("not a dynamic executable")) || bytes.Contains(out, []byte("statically linked"))
}

// containerd 1.6 configuration (format version 2). The node has no registry:
// the sandbox image is a local one, imported with the others.
const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
`

// The pod network: a bridge with host-local addresses. No masquerading (the
// node has no iptables): the client namespace routes PodCIDR via the node.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "lab",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`

// The kubelet: cgroupfs (no systemd), volume stats and health every 5 s, the
// volume-health gate, no image garbage collection (imported images cannot be
// pulled again), and the API server let in without client certificates
// (anonymous, AlwaysAllow: the kubelet port is only reachable in the lab).
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
volumeStatsAggPeriod: 5s
featureGates:
  CSIVolumeHealth: true
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 50Mi
  nodefs.available: 1%
  imagefs.available: 1%
resolvConf: /etc/resolv.conf
rotateCertificates: false
`

// startNode boots the guest detached from this process (smblab exits while
// the cluster runs): console to <cluster>/console.log, PID in the state.
func (l *Lab) startNode(ctx context.Context, rel, initrd string, memMiB int) error {
	if err := l.tap(ctx, true); err != nil {
		return err
	}
	cd := l.clusterDir()
	logf, err := os.OpenFile(filepath.Join(cd, "qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", l.BridgeNS(), "qemu-system-x86_64",
		"-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", strconv.Itoa(memMiB),
		"-display", "none", "-no-reboot", "-monitor", "none",
		"-serial", "file:"+filepath.Join(cd, "console.log"),
		"-kernel", "/boot/vmlinuz-"+rel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=3 panic=-1 GUEST_IP="+GuestIP+"/24",
		"-virtfs", "local,path="+l.clusterShare()+",mount_tag=hostshare,security_model=none,id=hs",
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node: qemu: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	l.NodePID = cmd.Process.Pid
	return l.save()
}

// waitNodeReady polls the node until its Ready condition is True, relaying
// the node's status lines.
func (l *Lab) waitNodeReady(ctx context.Context, limit time.Duration, log io.Writer) error {
	token, err := l.KubeToken()
	if err != nil {
		return err
	}
	hc := l.KubeHTTPClient()
	defer hc.CloseIdleConnections()
	statusPath := filepath.Join(l.clusterShare(), "status")
	seen := 0
	deadline := time.Now().Add(limit)
	last := ""
	for {
		if b, err := os.ReadFile(statusPath); err == nil && len(b) > seen {
			for line := range strings.SplitSeq(strings.TrimSpace(string(b[seen:])), "\n") {
				fmt.Fprintf(log, "cluster: node %s\n", line)
			}
			seen = len(b)
		}
		if !alive(l.NodePID) {
			return fmt.Errorf("the node's qemu exited: %s", logTail(filepath.Join(l.clusterDir(), "console.log")))
		}
		ready, msg, err := l.nodeReady(ctx, hc, token)
		switch {
		case err != nil:
			last = err.Error()
		case ready:
			return nil
		default:
			last = msg
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready after %s (last: %s); see %s", NodeName, limit, last, l.ClusterLogs())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for node: %w", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

func (l *Lab) nodeReady(ctx context.Context, hc *http.Client, token string) (bool, string, error) {
	status, body, err := kubeGet(ctx, hc, token, "/api/v1/nodes/"+NodeName)
	if err != nil {
		return false, "", err
	}
	if status != http.StatusOK {
		return false, fmt.Sprintf("GET node: %d", status), nil
	}
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &n); err != nil {
		return false, "", fmt.Errorf("node: %w", err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True", c.Reason + ": " + c.Message, nil
		}
	}
	return false, "no Ready condition yet", nil
}

// waitDefaultSA waits until the controller-manager has made the default
// ServiceAccount and kube-root-ca.crt in namespace default (pods need both).
func (l *Lab) waitDefaultSA(ctx context.Context, limit time.Duration) error {
	token, err := l.KubeToken()
	if err != nil {
		return err
	}
	hc := l.KubeHTTPClient()
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	for _, p := range []string{"/api/v1/namespaces/default/serviceaccounts/default", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt"} {
		for {
			status, _, err := kubeGet(ctx, hc, token, p)
			if err == nil && status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s missing after %s (status %d, %w); see %s", p, limit, status, err, filepath.Join(l.kubeDir(), "controller-manager.log"))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// NodeMemory returns the guest's last `free -k` output (written every 5 s).
func (l *Lab) NodeMemory() string {
	b, _ := os.ReadFile(filepath.Join(l.ClusterLogs(), "free"))
	return string(b)
}

// ClusterDown stops the node (asks node.sh to stop the kubelet and
// containerd, then kills qemu if it is still there after 30 s), the
// controller-manager and scheduler, then the API server and etcd (KubeDown).
// It keeps the logs and removes the node's binaries and images. Safe on a
// cluster that is partly or not up.
func (l *Lab) ClusterDown(ctx context.Context) error {
	cd := l.clusterDir()
	var errs []error
	if alive(l.NodePID) && mentionsDir(l.NodePID, cd) {
		_ = os.WriteFile(filepath.Join(l.clusterShare(), "stop"), nil, 0o644)
		wctx, cancel := context.WithTimeout(ctx, nodeStopWait)
		if waitGone(wctx, []int{l.NodePID}) != nil {
			_ = syscall.Kill(l.NodePID, syscall.SIGKILL)
		}
		cancel()
	}
	var pids []int
	if alive(l.NodePID) && mentionsDir(l.NodePID, cd) {
		pids = append(pids, l.NodePID)
	}
	pids = append(pids, pidsWithArg(filepath.Join(cd, "initramfs.cpio.gz"))...)
	kd := l.kubeDir()
	for _, p := range []int{l.ControllerManagerPID, l.SchedulerPID} {
		if alive(p) && mentionsDir(p, kd) {
			pids = append(pids, p)
		}
	}
	pids = append(pids, pidsWithArg(filepath.Join(kd, "certs", "apiserver.crt"))...) // --root-ca-file: the controller-manager
	pids = append(pids, pidsWithArg(filepath.Join(kd, "scheduler.yaml"))...)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitGone(wctx, pids); err != nil {
		errs = append(errs, fmt.Errorf("cluster down: %w", err))
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.BridgeNS())); err == nil {
		_ = run(ctx, "ip", "-n", l.BridgeNS(), "link", "del", "tap0")
	}
	for _, ns := range l.podRouteNS() {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			_ = run(ctx, "ip", "-n", ns, "route", "del", PodCIDR)
		}
	}
	for _, d := range []string{"root", "images"} {
		if err := os.RemoveAll(filepath.Join(l.clusterShare(), d)); err != nil {
			errs = append(errs, err)
		}
	}
	_ = os.Remove(filepath.Join(cd, "initramfs.cpio.gz"))
	if l.NodePID != 0 || l.ControllerManagerPID != 0 || l.SchedulerPID != 0 {
		l.NodePID, l.ControllerManagerPID, l.SchedulerPID = 0, 0, 0
		if _, err := os.Stat(filepath.Join(l.Dir, stateFile)); err == nil {
			if err := l.save(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := l.KubeDown(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
