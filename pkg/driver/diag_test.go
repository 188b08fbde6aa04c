package driver

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/csi-smb/csi-smb/pkg/health"
)

// TestNodeStatus: a staged volume is listed with its source, server and
// the Monitor's verdict; its credentials are not; asking changes nothing.
func TestNodeStatus(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	if got := h.d.NodeStatus(); len(got.Volumes) != 0 || got.Node != "n1" || got.Version != 1 {
		t.Fatalf("before staging: %+v", got)
	}
	h.setStatfs(func(string, *unix.Statfs_t) error { return unix.EHOSTDOWN })
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	h.store.SetServer("srv:445", health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable})
	calls := len(h.mounter.Calls)
	got := h.d.NodeStatus()
	if len(got.Volumes) != 1 {
		t.Fatalf("status %+v", got)
	}
	v := got.Volumes[0]
	if v.ID != vol.GetVolumeId() || v.Source != "//srv/share/pvc-1" || v.Server != "srv:445" || v.ServerState != "Healthy" ||
		v.Staging != st || v.State != "Unreachable" || v.Reason == "" || v.LastCheck.IsZero() || v.DFSTarget != "" || len(v.DFSTargets) != 0 {
		t.Fatalf("volume %+v", v)
	}
	if s := fmt.Sprintf("%+v", got); strings.Contains(s, "Pw-Unit-9x") {
		t.Fatalf("the status carries the password: %s", s)
	}
	if len(h.mounter.Calls) != calls || !reflect.DeepEqual(h.d.NodeStatus(), got) {
		t.Fatal("NodeStatus changed something")
	}
}
