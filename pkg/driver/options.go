package driver

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
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
	StatsTimeout time.Duration // how long NodeGetVolumeStats waits for a fresh statfs
}

// AddFlags registers the options on fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: unix:///path or tcp://host:port")
	fs.StringVar(&o.Mode, "mode", ModeAll, "services to serve: controller, node or all")
	fs.StringVar(&o.DriverName, "driver-name", DefaultDriverName, "CSI driver name")
	fs.StringVar(&o.NodeID, "node-id", "", "node name (required for node mode)")
	fs.DurationVar(&o.MountTimeout, "mount-timeout", 30*time.Second, "kill a cifs mount helper that takes longer")
	fs.DurationVar(&o.SMBTimeout, "smb-timeout", 30*time.Second, "bound on controller SMB operations when the caller sets no deadline")
	fs.DurationVar(&o.StatsTimeout, "stats-timeout", time.Second, "NodeGetVolumeStats waits this long for statfs, then answers from cache")
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
	for name, d := range map[string]time.Duration{"--mount-timeout": o.MountTimeout, "--smb-timeout": o.SMBTimeout, "--stats-timeout": o.StatsTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	return errors.Join(errs...)
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
