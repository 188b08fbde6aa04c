//go:build vmguest

package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/diag"
	"github.com/csi-smb/csi-smb/test/lab"
)

// runStatus runs the built `csi-smb status` against the suite's running
// node plugin and returns its exit code and output.
func runStatus(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(hostDir, "bin", "csi-smb"), append([]string{"status", "--endpoint", "unix://" + socket}, args...)...)
	code, out, errs := lab.RunCLI(t, cmd)
	return code, out + errs
}

// statusOf returns the volumes `csi-smb status --json` lists, by ID.
func statusOf(t *testing.T) (int, map[string]diag.Volume) {
	t.Helper()
	code, out := runStatus(t, "--json")
	var st diag.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Version != diag.StatusVersion || st.Node != "guest" {
		t.Fatalf("status --json: %s", out)
	}
	vols := map[string]diag.Volume{}
	for _, v := range st.Volumes {
		vols[v.ID] = v
	}
	return code, vols
}

// TestStatusCommand: `csi-smb status`, the built binary, asks the running
// node plugin about its real cifs mounts: a volume on n2, one on n3 and one
// on the DFS link ha (targets n2 and n3), all healthy with their servers
// and the DFS volume's active target; then n3 is killed and the status
// says which volume is inaccessible (exit 2), and healthy again after.
func TestStatusCommand(t *testing.T) {
	onN2, onN3 := volumeOn(t, "n2"), volumeOn(t, victim)
	dfsVol := &csi.Volume{VolumeId: fmt.Sprintf("dfs-status-%d", time.Now().UnixNano()), VolumeContext: map[string]string{"source": lab.HASource}}
	var targets []string
	for _, v := range []*csi.Volume{onN2, onN3, dfsVol} {
		_, target := stagedAndPublished(t, v)
		targets = append(targets, target)
	}
	for i, v := range []*csi.Volume{onN2, onN3, dfsVol} {
		waitHealth(t, v, targets[i], 15*time.Second, "healthy", healthy)
	}
	// The last mount check comes from the monitor's first statfs round.
	deadline := time.Now().Add(20 * time.Second)
	code, vols := statusOf(t)
	for (code != 0 || vols[onN3.GetVolumeId()].LastCheck.IsZero()) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		code, vols = statusOf(t)
	}
	want := map[string]string{onN2.GetVolumeId(): "10.213.0.2:445", onN3.GetVolumeId(): "10.213.0.3:445"}
	for id, server := range want {
		v, ok := vols[id]
		if !ok || v.State != "Healthy" || v.Server != server || v.ServerState != "Healthy" || v.DFSTarget != "" || v.LastCheck.IsZero() || v.Source == "" {
			t.Fatalf("status of %s: %+v (present %v)", id, v, ok)
		}
	}
	d, ok := vols[dfsVol.GetVolumeId()]
	if code != 0 || !ok || d.State != "Healthy" || len(d.DFSTargets) != 2 || (d.DFSTarget != "10.213.0.2:445" && d.DFSTarget != "10.213.0.3:445") {
		t.Fatalf("exit %d; DFS volume: %+v (present %v)", code, d, ok)
	}
	code, text := runStatus(t)
	if code != 0 || !strings.Contains(text, "0 not healthy") || !strings.Contains(text, d.DFSTarget) {
		t.Fatalf("text: exit %d\n%s", code, text)
	}
	fmt.Printf("RESULT status healthy (exit %d):\n%s", code, text)

	fault(t, lab.ActKill, victim)
	healed := false
	defer func() {
		if !healed {
			fault(t, lab.ActStart, victim)
		}
	}()
	waitHealth(t, onN3, targets[1], 30*time.Second, "INACCESSIBLE", inaccessible)
	code, vols = statusOf(t)
	if v := vols[onN3.GetVolumeId()]; code != 2 || v.State != "Unreachable" || v.ServerState != "Unreachable" || v.Reason == "" {
		t.Fatalf("n3 killed: exit %d, %+v", code, v)
	}
	if v := vols[onN2.GetVolumeId()]; v.State != "Healthy" {
		t.Fatalf("n3 killed: the volume on n2 is %+v", v)
	}
	code, text = runStatus(t)
	if code != 2 || !strings.Contains(text, onN3.GetVolumeId()+": ") {
		t.Fatalf("text with n3 killed: exit %d\n%s", code, text)
	}
	fmt.Printf("RESULT status with n3 killed (exit %d):\n%s", code, text)
	fault(t, lab.ActStart, victim)
	healed = true
	waitHealth(t, onN3, targets[1], 30*time.Second, "healthy after n3 returned", healthy)
}
