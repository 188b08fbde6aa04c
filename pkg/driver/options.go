package driver

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Modes of the binary.
const (
	ModeController = "controller"
	ModeNode       = "node"
	ModeAll        = "all"
)

// DefaultDriverName is ours; csi-driver-smb owns smb.csi.k8s.io, so both can
// run in one cluster.
const DefaultDriverName = "smb.csi-smb.io"

// Options are the driver's settings; flags fill them.
type Options struct {
	Endpoint     string
	Mode         string
	DriverName   string
	NodeID       string
	Version      string
	MountTimeout time.Duration // bound on one mount helper
	SMBTimeout   time.Duration // bound on a controller SMB operation when the RPC has no deadline
	StatsTimeout time.Duration // bound on the statfs made at stage time

	// Health and reporting; main builds the prober, monitor and metrics from these.
	MetricsAddress string        // serve /metrics here; empty: off
	ProbeInterval  time.Duration // SMB2 ECHO period per server
	CheckInterval  time.Duration // statfs period per staged volume
	RemountGrace   time.Duration // a mount broken this long while its server answers is remounted
	KubeAPI        bool          // use the Kubernetes API: node Events, controller PV listing
	Kubeconfig     string        // for KubeAPI; empty: in-cluster

	// DFS.
	DFSFailover     bool          // fence a dead DFS target and end the kernel's connections to it
	DFSUnfenceAfter time.Duration // lift a fence once its target has been healthy this long
	// DirWatch watches the directories that hold volumes with SMB2
	// CHANGE_NOTIFY, so a volume directory removed or renamed on the server
	// is seen at once (the controller polls otherwise).
	DirWatch bool

	// Running under a kubelet.
	HealthAddress string // serve /healthz here; empty: off (/healthz is also on MetricsAddress)
	// KubeletRegistrationDir is the kubelet's plugins_registry: the node
	// registers itself there (as node-driver-registrar would); empty: off.
	KubeletRegistrationDir string
	// KubeletRegistrationPath is the CSI socket's path as the kubelet sees
	// it; default the endpoint's path.
	KubeletRegistrationPath string
	ShutdownTimeout         time.Duration // after SIGTERM, exit at the latest this much later
	// StateDir keeps the node's publication records (records.go): the pods
	// and PVC of each published volume, for Events after a restart; empty: none.
	StateDir string
}

// DefaultOptions are the flag defaults.
func DefaultOptions() Options {
	return Options{
		Endpoint: "unix:///csi/csi.sock", Mode: ModeAll, DriverName: DefaultDriverName,
		MountTimeout: 30 * time.Second, SMBTimeout: 30 * time.Second, StatsTimeout: time.Second,
		ProbeInterval: time.Second, CheckInterval: 2 * time.Second, RemountGrace: 10 * time.Second,
		DFSFailover: true, DirWatch: true, DFSUnfenceAfter: 30 * time.Second, ShutdownTimeout: 20 * time.Second,
	}
}

// AddFlags registers the options on fs, with DefaultOptions as defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	d := DefaultOptions()
	fs.StringVar(&o.Endpoint, "endpoint", d.Endpoint, "CSI endpoint: unix:///path or tcp://host:port")
	fs.StringVar(&o.Mode, "mode", d.Mode, "services to serve: controller, node or all")
	fs.StringVar(&o.DriverName, "driver-name", d.DriverName, "CSI driver name")
	fs.StringVar(&o.NodeID, "node-id", "", "node name (required for node mode)")
	fs.DurationVar(&o.MountTimeout, "mount-timeout", d.MountTimeout, "kill a cifs mount helper that takes longer")
	fs.DurationVar(&o.SMBTimeout, "smb-timeout", d.SMBTimeout, "bound on controller SMB operations when the caller sets no deadline")
	fs.DurationVar(&o.StatsTimeout, "stats-timeout", d.StatsTimeout, "bound on a statfs of a mount (at stage time and in the background checks)")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on this address (e.g. :9809); empty: off")
	fs.DurationVar(&o.ProbeInterval, "probe-interval", d.ProbeInterval, "SMB2 ECHO period per server")
	fs.DurationVar(&o.CheckInterval, "check-interval", d.CheckInterval, "statfs period per staged volume")
	fs.DurationVar(&o.RemountGrace, "remount-grace", d.RemountGrace, "remount a mount that stays broken this long while its server answers")
	fs.BoolVar(&o.KubeAPI, "kube-api", false, "use the Kubernetes API: the node writes Events on the pods and PVC of a volume whose health changes; the controller lists its PersistentVolumes at start to watch their health")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig for --kube-api; empty: in-cluster config")
	fs.BoolVar(&o.DFSFailover, "dfs-failover", d.DFSFailover, "fail a DFS volume over in place when the target it uses is unreachable: fence that target on the node (nftables, needs CAP_NET_ADMIN) and end the kernel's connections to it; false leaves failover to the kernel alone")
	fs.BoolVar(&o.DirWatch, "dir-watch", d.DirWatch, "watch the directories that hold volumes with SMB2 CHANGE_NOTIFY (one watch per directory), so a volume directory removed or renamed on the server is reported at once; false: the controller polls every volume directory and the node does not look")
	fs.DurationVar(&o.DFSUnfenceAfter, "dfs-unfence-after", d.DFSUnfenceAfter, "lift the fence on a DFS target once it has been healthy this long (no failback: mounts stay where they are)")
	fs.StringVar(&o.HealthAddress, "health-address", "", "serve GET /healthz on this address (200 when ready, 503 with the reason otherwise), for a liveness probe without the livenessprobe sidecar; /healthz is also served on --metrics-address; empty: off")
	fs.StringVar(&o.KubeletRegistrationDir, "kubelet-registration-dir", "", "node: register with the kubelet through its plugin registration directory (e.g. /var/lib/kubelet/plugins_registry), instead of node-driver-registrar; empty: off")
	fs.StringVar(&o.KubeletRegistrationPath, "kubelet-registration-path", "", "the CSI socket's path as the kubelet sees it, for --kubelet-registration-dir (default: the --endpoint path)")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", d.ShutdownTimeout, "after SIGTERM, stop gracefully for at most this long, then exit")
	fs.StringVar(&o.StateDir, "state-dir", "", "node: a directory of its own (e.g. <kubeletDir>/plugins/<driver>/state) for the pods and PVC of each published volume, so a restarted plugin sends their Events; empty: none")
}

// Validate checks the options and says what is wrong.
func (o *Options) Validate() error {
	var errs []error
	switch o.Mode {
	case ModeController, ModeNode, ModeAll:
	default:
		errs = append(errs, fmt.Errorf("--mode %q: want controller, node or all", o.Mode))
	}
	if o.ServesNode() && o.NodeID == "" {
		errs = append(errs, errors.New("--node-id is required for node mode"))
	}
	if err := validateDriverName(o.DriverName); err != nil {
		errs = append(errs, err)
	}
	if _, _, err := ParseEndpoint(o.Endpoint); err != nil {
		errs = append(errs, err)
	}
	for name, d := range map[string]time.Duration{"--mount-timeout": o.MountTimeout, "--smb-timeout": o.SMBTimeout,
		"--stats-timeout": o.StatsTimeout, "--probe-interval": o.ProbeInterval, "--check-interval": o.CheckInterval,
		"--remount-grace": o.RemountGrace, "--dfs-unfence-after": o.DFSUnfenceAfter, "--shutdown-timeout": o.ShutdownTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if o.StateDir != "" && (!filepath.IsAbs(o.StateDir) || !o.ServesNode()) {
		errs = append(errs, fmt.Errorf("--state-dir %q: needs node mode and an absolute path", o.StateDir))
	}
	if o.KubeletRegistrationDir != "" {
		if !o.ServesNode() {
			errs = append(errs, errors.New("--kubelet-registration-dir needs node mode"))
		}
		if _, err := o.RegistrationEndpoint(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RegistrationEndpoint is the CSI socket's path as the kubelet sees it:
// --kubelet-registration-path, or the unix endpoint's path.
func (o *Options) RegistrationEndpoint() (string, error) {
	p := o.KubeletRegistrationPath
	if p == "" {
		network, addr, err := ParseEndpoint(o.Endpoint)
		if err != nil {
			return "", err
		}
		if network != "unix" {
			return "", fmt.Errorf("--kubelet-registration-dir with a %s endpoint needs --kubelet-registration-path", network)
		}
		p = addr
	}
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("--kubelet-registration-path %q: must be absolute", p)
	}
	return p, nil
}

// ServesNode reports whether the node service runs.
func (o *Options) ServesNode() bool { return o.Mode == ModeNode || o.Mode == ModeAll }

// ServesController reports whether the controller service runs.
func (o *Options) ServesController() bool { return o.Mode == ModeController || o.Mode == ModeAll }

// validateDriverName applies the CSI rule: at most 63 characters, a DNS-like
// name of alphanumerics, '-', '.'; starting and ending alphanumerically.
func validateDriverName(n string) error {
	if n == "" || len(n) > 63 {
		return fmt.Errorf("--driver-name %q: must be 1-63 characters", n)
	}
	for i, r := range n {
		alnum := ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')
		if !alnum && ((r != '-' && r != '.') || i == 0 || i == len(n)-1) {
			return fmt.Errorf("--driver-name %q: only alphanumerics, '-' and '.', starting and ending alphanumerically", n)
		}
	}
	return nil
}

// ParseEndpoint splits unix:///path, unix:/path or tcp://host:port.
func ParseEndpoint(ep string) (network, address string, err error) {
	u, err := url.Parse(ep)
	if err != nil {
		return "", "", fmt.Errorf("--endpoint %q: %w", ep, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "unix":
		p := u.Path
		if p == "" {
			p = u.Opaque
		}
		if p == "" {
			return "", "", fmt.Errorf("--endpoint %q: no socket path", ep)
		}
		return "unix", p, nil
	case "tcp":
		if u.Host == "" {
			return "", "", fmt.Errorf("--endpoint %q: no host:port", ep)
		}
		return "tcp", u.Host, nil
	}
	return "", "", fmt.Errorf("--endpoint %q: scheme must be unix or tcp", ep)
}
