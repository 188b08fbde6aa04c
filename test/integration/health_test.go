//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// TestExternalHealthMonitorWouldStart checks, over gRPC, the condition
// under which kubernetes-csi/external-health-monitor-controller starts (its
// main.go: a controller service, LIST_VOLUMES or GET_VOLUME, and the legacy
// VOLUME_CONDITION = 11, which spec v1.13 removed), and that the legacy
// volume_condition it reads (field 2 of the VolumeStatus) crosses the wire:
// normal for a volume on a live server, abnormal for one on an unreachable
// address (known from the PersistentVolumes at start). The sidecar itself is not on the module proxy this CI can reach.
func TestExternalHealthMonitorWouldStart(t *testing.T) {
	c, p := controllerPlugin(t)
	caps, err := c.ControllerGetCapabilities(ctxT(t), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	has := map[int32]bool{}
	for _, cp := range caps.GetCapabilities() {
		has[int32(cp.GetRpc().GetType())] = true
	}
	if !(has[3] || has[12]) || !has[11] {
		t.Fatalf("capabilities %v: external-health-monitor needs (3 or 12) and 11", has)
	}
	live := mustCreate(t, c, createReq(uniqueName(t), nil))
	defer mustDelete(t, c, live.GetVolumeId())
	dead := volume.Volume{Source: volume.Source{Server: "10.213.0.99", Share: "share"}, SubDir: "gone",
		OnDelete: volume.OnDeleteRetain, UID: volume.UIDFor("gone")}
	// A volume on a server that is gone, as a controller started with
	// --kube-api finds it among the PersistentVolumes.
	p.Inventory.Track(dead.ID(), dead, 0, auth.Credentials{})
	condition := func(id string) (bool, string) {
		r, err := c.ControllerGetVolume(ctxT(t), &csi.ControllerGetVolumeRequest{VolumeId: id})
		if err != nil {
			t.Fatalf("ControllerGetVolume(%s): %v", id, err)
		}
		abnormal, msg, ok := driver.LegacyCondition(r.GetStatus(), 2)
		if !ok {
			t.Fatalf("ControllerGetVolume(%s) carries no volume_condition on the wire", id)
		}
		return abnormal, msg
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		deadAbnormal, deadMsg := condition(dead.ID())
		liveAbnormal, liveMsg := condition(live.GetVolumeId())
		if deadAbnormal && !liveAbnormal && strings.HasPrefix(liveMsg, "VolumeHealthy") {
			t.Logf("dead: %s", deadMsg)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: dead volume abnormal=%v %q; live volume abnormal=%v %q", deadAbnormal, deadMsg, liveAbnormal, liveMsg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	list, err := c.ListVolumes(context.Background(), &csi.ListVolumesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.GetEntries() {
		if e.GetVolume().GetVolumeId() == dead.ID() {
			if abnormal, _, ok := driver.LegacyCondition(e.GetStatus(), 2); ok && abnormal {
				return
			}
		}
	}
	t.Fatal("ListVolumes does not carry the dead volume's abnormal condition")
}
