// Package lab runs the project's test lab: real Samba servers, each in its own
// network namespace on a shared bridge, a client namespace for host-side tests,
// fault injection (kill, freeze, partition) and a qemu guest with kernel cifs.
//
// Layout (all addresses inside namespaces this package creates and deletes):
//
//	netns <prefix>br    bridge br0; ports: one veth per server, the client veth, tap0 of the guest
//	netns <prefix>n1    smbd 10.213.0.1  shares share, shareA, shareB and DFS root dfs (links multi, ha -> n2,n3)
//	netns <prefix>n2    smbd 10.213.0.2  also share ha: the directory HADir, which n3 serves too
//	netns <prefix>n3    smbd 10.213.0.3  also share ha
//
// The DFS link dfs\ha has two targets on one backing directory, as a
// clustered NAS serves one file system from several nodes: data written
// through one target is there after a failover to the other.
//
//	netns <prefix>c     10.213.0.20, where host-side integration tests run
//	guest               10.213.0.10 on tap0
//
// Processes are tracked by PID in a state file, so separate invocations of the
// smblab command can inject faults and tear down what an earlier one started.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Fixed lab facts. The password is a lab-only secret; tests also use it to
// prove secrets never leak, so it is deliberately distinctive.
const (
	// HASource is the DFS link whose two targets share one directory.
	HASource = "//10.213.0.1/dfs/ha"
	// HADir is that directory, relative to the lab directory.
	HADir      = "ha"
	Subnet     = "10.213.0.0/24"
	ClientIP   = "10.213.0.20"
	GuestIP    = "10.213.0.10"
	User       = "csitest"
	Password   = "Lab-S3cret-7f3a9c!"
	Domain     = "WORKGROUP"
	stateFile  = "state.json"
	bridge     = "br0"
	prefixDflt = "csismb-"
)

// ErrNotUp is returned when the lab state file is missing.
var ErrNotUp = errors.New("lab is not up (run: smblab up)")

// Server is one smbd instance.
type Server struct {
	Name string `json:"name"` // n1, n2, n3
	IP   string `json:"ip"`
	Dir  string `json:"dir"` // instance root: smb.conf, shares/, private/, log/
	PID  int    `json:"pid"` // the smbd parent; 0 while killed
}

// Netns is the namespace the server runs in.
func (s Server) Netns(l *Lab) string { return l.Prefix + s.Name }

// Port is the bridge-side veth of the server; setting it down partitions it.
func (s Server) Port() string { return "v" + s.Name + "p" }

// Lab is the running lab, as recorded in its state file.
type Lab struct {
	Dir     string    `json:"dir"`
	Prefix  string    `json:"prefix"`
	Servers []*Server `json:"servers"`
	// The API server (KubeUp); 0 while it is not running. Absent from state
	// files written before it existed, which therefore still load.
	EtcdPID      int `json:"etcdPID,omitempty"`
	APIServerPID int `json:"apiserverPID,omitempty"`
	// The one-node cluster (ClusterUp): controller-manager, scheduler and
	// the qemu guest that runs containerd and the kubelet; 0 while down.
	ControllerManagerPID int `json:"controllerManagerPID,omitempty"`
	SchedulerPID         int `json:"schedulerPID,omitempty"`
	NodePID              int `json:"nodePID,omitempty"`
}

// New describes a lab rooted at dir (absolute; smbd needs absolute paths),
// with the default namespace prefix "csismb-".
func New(dir string) (*Lab, error) { return NewWithPrefix(dir, prefixDflt) }

// NewWithPrefix is New with another prefix for the lab's namespace names
// (<prefix>br, <prefix>c, <prefix>n1...), so that two labs can run at once:
// every address and interface name lives inside the lab's own namespaces.
func NewWithPrefix(dir, prefix string) (*Lab, error) {
	if !validPrefix(prefix) {
		return nil, fmt.Errorf("lab prefix %q: want 1-20 of a-z, 0-9, '-'", prefix)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	l := &Lab{Dir: abs, Prefix: prefix}
	for i, n := range []string{"n1", "n2", "n3"} {
		l.Servers = append(l.Servers, &Server{Name: n, IP: fmt.Sprintf("10.213.0.%d", i+1), Dir: filepath.Join(abs, n)})
	}
	return l, nil
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 20 {
		return false
	}
	for _, r := range p {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// Load reads the state of a lab brought up earlier in dir.
func Load(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotUp
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("parse lab state: %w", err)
	}
	return &l, nil
}

func (l *Lab) save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp := filepath.Join(l.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(l.Dir, stateFile)); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}

// Server returns the server called name (n1, n2, n3).
func (l *Lab) Server(name string) (*Server, error) {
	for _, s := range l.Servers {
		if s.Name == name {
			return s, nil
		}
	}
	return nil, fmt.Errorf("no lab server %q (have n1, n2, n3)", name)
}

// BridgeNS is the namespace that holds the bridge and the guest's tap.
func (l *Lab) BridgeNS() string { return l.Prefix + "br" }

// ClientNS is the namespace host-side tests run in.
func (l *Lab) ClientNS() string { return l.Prefix + "c" }
