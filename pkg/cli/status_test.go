package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/diag"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount/mounttest"
	"github.com/csi-smb/csi-smb/pkg/plugin"
)

const statusPassword = "Pw-Cli-Status-4r"

// node is a node plugin assembled as main assembles it (plugin.New) over
// a fake mounter, a statfs that fails for the paths in broken, and SMB
// servers that are in-process responders.
type node struct {
	endpoint string
	csi      csi.NodeClient
	dir      string
	mu       sync.Mutex
	broken   map[string]bool
}

func startNode(t *testing.T, mode string) *node {
	t.Helper()
	n := &node{dir: t.TempDir(), broken: map[string]bool{}}
	n.endpoint = "unix://" + filepath.Join(n.dir, "csi.sock")
	ctx, cancel := context.WithCancel(context.Background())
	servers := map[string]*smbresponder.Server{
		"10.0.0.1:445": smbresponder.New(smbresponder.Options{Referral: smbresponder.LabNamespace}),
		"10.0.0.2:445": smbresponder.New(smbresponder.Options{}),
		"10.0.0.3:445": smbresponder.New(smbresponder.Options{}),
		"10.0.0.9:445": smbresponder.New(smbresponder.Options{}),
	}
	dial := smbresponder.Network(servers).Dial(ctx)
	opts := driver.DefaultOptions()
	opts.Mode, opts.NodeID, opts.DFSFailover, opts.Endpoint, opts.Version = mode, "node-1", false, n.endpoint, "test"
	p, err := plugin.New(opts, plugin.Parts{Dial: dial, Mounter: mounttest.New(), Statfs: func(path string, st *unix.Statfs_t) error {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.broken[path] {
			return unix.EIO
		}
		st.Bsize, st.Blocks, st.Bfree, st.Bavail = 4096, 100, 50, 50
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-p.Driver.Serving():
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin does not serve")
	}
	conn, err := grpc.NewClient(n.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	n.csi = csi.NewNodeClient(conn)
	return n
}

// stage stages a static volume on source, as the kubelet would.
func (n *node) stage(t *testing.T, id, source string, broken bool) string {
	t.Helper()
	staging := filepath.Join(n.dir, id, "globalmount")
	n.mu.Lock()
	n.broken[staging] = broken
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := n.csi.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging,
		VolumeContext: map[string]string{"source": source},
		Secrets:       map[string]string{"username": "alice", "password": statusPassword},
		VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}})
	if err != nil {
		t.Fatalf("NodeStageVolume(%s): %v", id, err)
	}
	return staging
}

func (n *node) status(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), append([]string{"status", "--endpoint", n.endpoint}, args...),
		Env{Stdout: &out, Stderr: &errb})
	if strings.Contains(out.String()+errb.String(), statusPassword) {
		t.Fatalf("status output carries a password:\n%s%s", out.String(), errb.String())
	}
	return code, out.String(), errb.String()
}

// TestStatusFromARunningNode: volumes staged on an assembled node plugin
// are listed by `csi-smb status` over the real unix socket, with their
// health, server and DFS target; a broken one makes the exit code 2.
func TestStatusFromARunningNode(t *testing.T) {
	n := startNode(t, driver.ModeNode)
	code, out, errs := n.status(t)
	if code != ExitHealthy || out != "node node-1, driver smb.csi-smb.io: 0 volume(s), 0 not healthy\n" {
		t.Fatalf("no volumes: exit %d\n%s%s", code, out, errs)
	}
	okStaging := n.stage(t, "static-ok", "//10.0.0.9/share/ok", false)
	n.stage(t, "static-dfs", "//10.0.0.1/dfs/multi/vol", false)
	code, out, errs = n.status(t)
	if code != ExitHealthy {
		t.Fatalf("healthy volumes: exit %d\n%s%s", code, out, errs)
	}
	rows := []string{
		`^VOLUME +STATE +REASON +SERVER +DFS TARGET +LAST CHECK$`,
		`^static-dfs +Healthy +VolumeHealthy +10\.0\.0\.1:445 +10\.0\.0\.2:445 +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)$`,
		`^static-ok +Healthy +VolumeHealthy +10\.0\.0\.9:445 +- +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)$`,
	}
	lines := strings.Split(out, "\n")
	if len(lines) < 4 || lines[0] != "node node-1, driver smb.csi-smb.io: 2 volume(s), 0 not healthy" {
		t.Fatalf("output:\n%s", out)
	}
	for i, re := range rows {
		if !regexp.MustCompile(re).MatchString(lines[i+1]) {
			t.Fatalf("line %d %q does not match %s; output:\n%s", i+1, lines[i+1], re, out)
		}
	}
	n.stage(t, "static-broken", "//10.0.0.9/share/broken", true)
	code, out, errs = n.status(t)
	if code != ExitUnreachable || !regexp.MustCompile(`(?m)^static-broken +Unreachable +MountIOError +10\.0\.0\.9:445 +- `).MatchString(out) ||
		!strings.Contains(out, "\nstatic-broken: MountIOError: statfs: I/O error from the SMB server") {
		t.Fatalf("a broken volume: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = n.status(t, "--json")
	var st diag.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != ExitUnreachable {
		t.Fatalf("--json: exit %d, %v\n%s", code, err, out)
	}
	if st.Version != 1 || st.Node != "node-1" || len(st.Volumes) != 3 {
		t.Fatalf("--json: %+v", st)
	}
	dfsVol, okVol := st.Volumes[1], st.Volumes[2]
	if dfsVol.ID != "static-dfs" || dfsVol.Source != "//10.0.0.1/dfs/multi/vol" || dfsVol.DFSTarget != "10.0.0.2:445" ||
		strings.Join(dfsVol.DFSTargets, ",") != "10.0.0.2:445,10.0.0.3:445" {
		t.Fatalf("DFS volume %+v", dfsVol)
	}
	if okVol.ID != "static-ok" || okVol.Staging != okStaging || okVol.CheckState != "MountHealthy" || okVol.LastCheck.IsZero() || okVol.State != "Healthy" {
		t.Fatalf("healthy volume %+v", okVol)
	}
}

// TestStatusWithoutANode: no socket, and a controller (which does not serve
// the diagnostics), are exit code 5; a bad endpoint is a usage error.
func TestStatusWithoutANode(t *testing.T) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), []string{"status", "--endpoint", "unix://" + filepath.Join(t.TempDir(), "none.sock"), "--timeout", "2s"},
		Env{Stdout: &out, Stderr: &errb})
	if code != ExitNoPlugin || !strings.Contains(errb.String(), "cannot ask the node plugin") {
		t.Fatalf("no socket: exit %d\n%s", code, errb.String())
	}
	c := startNode(t, driver.ModeController)
	if code, _, errs := c.status(t); code != ExitNoPlugin || !strings.Contains(errs, "does not serve csismb.diag.v1.Diagnostics") {
		t.Fatalf("a controller: exit %d\n%s", code, errs)
	}
	if code := Run(context.Background(), []string{"status", "--endpoint", "http://x"}, Env{}); code != ExitUsage {
		t.Fatalf("a bad endpoint: exit %d", code)
	}
	if code := Run(context.Background(), []string{"status", "extra"}, Env{}); code != ExitUsage {
		t.Fatalf("an argument: exit %d", code)
	}
}
