package driver

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/inventory"
	"github.com/csi-smb/csi-smb/pkg/kube"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

func (h *harness) volume(t *testing.T) *csi.Volume {
	t.Helper()
	resp, err := h.d.CreateVolume(context.Background(), createReq("pvc-1"))
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetVolume()
}

func stageReq(vol *csi.Volume, path string, c *csi.VolumeCapability) *csi.NodeStageVolumeRequest {
	return &csi.NodeStageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: path, VolumeCapability: c,
		VolumeContext: vol.GetVolumeContext(), Secrets: creds}
}

func TestNodeStageCodes(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	flags := func(f ...string) *csi.VolumeCapability {
		return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: f}},
			AccessMode: rwx.AccessMode}
	}
	group := func(g string) *csi.VolumeCapability {
		return &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{VolumeMountGroup: g}},
			AccessMode: rwx.AccessMode}
	}
	tests := []struct {
		name string
		req  *csi.NodeStageVolumeRequest
		want codes.Code
	}{
		{"no id", &csi.NodeStageVolumeRequest{StagingTargetPath: st, VolumeCapability: rwx}, codes.InvalidArgument},
		{"no path", &csi.NodeStageVolumeRequest{VolumeId: vol.GetVolumeId(), VolumeCapability: rwx}, codes.InvalidArgument},
		{"relative path", stageReq(vol, "rel/path", rwx), codes.InvalidArgument},
		{"no cap", stageReq(vol, st, nil), codes.InvalidArgument},
		{"block", stageReq(vol, st, block), codes.InvalidArgument},
		{"password in mount options", stageReq(vol, st, flags("password=x")), codes.InvalidArgument},
		{"bad group", stageReq(vol, st, group("wheel")), codes.InvalidArgument},
		{"group conflicts with gid", stageReq(vol, st, &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{
			Mount: &csi.VolumeCapability_MountVolume{VolumeMountGroup: "5", MountFlags: []string{"gid=6"}}}, AccessMode: rwx.AccessMode}), codes.InvalidArgument},
		{"unknown volume", &csi.NodeStageVolumeRequest{VolumeId: "fake", StagingTargetPath: st, VolumeCapability: rwx}, codes.NotFound},
		{"static with bad source", &csi.NodeStageVolumeRequest{VolumeId: "static-1", StagingTargetPath: st, VolumeCapability: rwx,
			VolumeContext: map[string]string{"source": "nope"}}, codes.InvalidArgument},
		{"ok", stageReq(vol, st, rwx), codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.d.NodeStageVolume(context.Background(), tc.req)
			if code(err) != tc.want {
				t.Fatalf("code = %v (%v), want %v", code(err), err, tc.want)
			}
		})
	}
}

func TestNodeStageMountsWithOptionsAndIsIdempotent(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	c := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{
		MountFlags: []string{"vers=3.0", "hard"}, VolumeMountGroup: "2000"}}, AccessMode: rwx.AccessMode}
	for range 2 {
		if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, c)); err != nil {
			t.Fatal(err)
		}
	}
	if len(h.mounter.Calls) != 1 {
		t.Fatalf("staged %d times, want 1 (second call finds a healthy mount)", len(h.mounter.Calls))
	}
	call := h.mounter.Calls[0]
	want := []string{"echo_interval=5", "nosharesock", "nohandlecache", "vers=3.0", "hard", "gid=2000", "dir_mode=0775", "file_mode=0775"}
	if call.Source != "//srv/share/pvc-1" || !slices.Equal(call.Options, want) {
		t.Fatalf("mount %s %v, want //srv/share/pvc-1 %v", call.Source, call.Options, want)
	}
	if call.Creds.Password != "Pw-Unit-9x" || strings.Contains(strings.Join(call.Options, ","), "Pw-Unit-9x") {
		t.Fatal("the password must travel as credentials, never as a mount option")
	}
	other := stageReq(vol, st, rwx)
	other.VolumeId = "static-x"
	other.VolumeContext = map[string]string{"source": "//srv/other"}
	if _, err := h.d.NodeStageVolume(context.Background(), other); code(err) != codes.AlreadyExists {
		t.Fatalf("another volume on a staged path: %v, want AlreadyExists", err)
	}
}

func TestNodeStageRemountsBrokenMount(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	h.setStatfs(func(string, *unix.Statfs_t) error { return unix.EHOSTDOWN })
	unmounts := 0
	h.mounter.UnmountHook = func(context.Context, string) error { unmounts++; return nil }
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	if unmounts != 1 || len(h.mounter.Calls) != 2 || !h.mounter.Mounted(st) {
		t.Fatalf("broken mount: %d unmounts, %d mounts; want 1 and 2", unmounts, len(h.mounter.Calls))
	}
}

func TestPublishAndUnpublish(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, target := staging(t)
	ctx := context.Background()
	pub := func(target string, c *csi.VolumeCapability, ro bool) error {
		_, err := h.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: st,
			TargetPath: target, VolumeCapability: c, Readonly: ro})
		return err
	}
	if err := pub(target, rwx, false); code(err) != codes.FailedPrecondition {
		t.Fatalf("publish before stage: %v, want FailedPrecondition", err)
	}
	if _, err := h.d.NodeStageVolume(ctx, stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	if err := pub(target, rwx, false); err != nil {
		t.Fatal(err)
	}
	if err := pub(target, rwx, false); err != nil {
		t.Fatalf("idempotent publish: %v", err)
	}
	if err := pub(target, rwx, true); code(err) != codes.AlreadyExists {
		t.Fatalf("same target, now read-only: %v, want AlreadyExists", err)
	}
	sw := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER)
	if err := pub(target+"-2", sw, false); code(err) != codes.FailedPrecondition {
		t.Fatalf("single writer at a second path: %v, want FailedPrecondition", err)
	}
	if err := pub(target+"-ro", rwx, true); err != nil {
		t.Fatal(err)
	}
	if info, _, _ := h.mounter.Find(target + "-ro"); !info.ReadOnly() {
		t.Fatal("read-only publish is writable")
	}
	for _, p := range []string{target, target + "-ro"} {
		if _, err := h.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: p}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) || h.mounter.Mounted(p) {
			t.Fatalf("%s still there after unpublish: %v", p, err)
		}
	}
	if _, err := h.d.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.GetVolumeId(), TargetPath: target}); err != nil {
		t.Fatalf("unpublish twice: %v", err)
	}
	if _, err := h.d.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: st}); err != nil || h.mounter.Mounted(st) {
		t.Fatalf("unstage: %v", err)
	}
}

// TestUnstageDetachesWhenTheServerIsDown: with the volume's server known
// unreachable, or a probe of it just missed, unstage detaches lazily instead
// of waiting for a clean unmount nobody will answer; with the server
// answering, even slowly, it unmounts cleanly.
func TestUnstageDetachesWhenTheServerIsDown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server health.Verdict
		detach bool
	}{
		{"unreachable", health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable}, true},
		{"probe missed", health.Verdict{State: health.StateDegraded, Reason: health.ReasonProbeMissed}, true},
		{"slow", health.Verdict{State: health.StateDegraded, Reason: health.ReasonSlow}, false},
		{"healthy", health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			vol := h.volume(t)
			st, _ := staging(t)
			if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
				t.Fatal(err)
			}
			h.store.SetServer("srv:445", tc.server)
			if _, err := h.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: st}); err != nil {
				t.Fatal(err)
			}
			if got := h.mounter.Detaches == 1; got != tc.detach || h.mounter.Mounted(st) {
				t.Fatalf("%d detaches, mounted=%v; want detach=%v", h.mounter.Detaches, h.mounter.Mounted(st), tc.detach)
			}
		})
	}
}

func TestUnmountFailureIsReported(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	h.mounter.UnmountHook = func(context.Context, string) error { return mount.ErrTimeout }
	_, err := h.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: st})
	if code(err) != codes.Unavailable {
		t.Fatalf("unstage with a stuck unmount: %v, want Unavailable", err)
	}
}

func TestStatsCodes(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	for _, tc := range []struct {
		name     string
		id, path string
		want     codes.Code
	}{
		{"no id", "", st, codes.InvalidArgument},
		{"no path", vol.GetVolumeId(), "", codes.InvalidArgument},
		{"not mounted", vol.GetVolumeId(), st, codes.NotFound},
		{"relative, unknown", "fake", "some/path", codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: tc.id, VolumePath: tc.path})
			if code(err) != tc.want {
				t.Fatalf("code = %v (%v), want %v", code(err), err, tc.want)
			}
		})
	}
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	resp, err := h.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: st})
	if err != nil {
		t.Fatal(err)
	}
	u := resp.GetUsage()
	if len(u) != 2 || u[0].GetTotal() != 400<<10 || u[0].GetAvailable() != 120<<10 || u[0].GetUsed() != 240<<10 || u[1].GetUsed() != 6 {
		t.Fatalf("usage = %v", u)
	}
	if abnormal, _, ok := LegacyCondition(resp, legacyStatsConditionField); !ok || abnormal {
		t.Fatal("healthy volume must report abnormal=false")
	}
}

// TestStatsAndHealthFollowTheMonitor: with the mount's statfs hanging (a
// dead server), stats and health answer at once from the monitor, with the
// last good usage and the reason, and recover with the mount.
func TestStatsAndHealthFollowTheMonitor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		vol := h.volume(t)
		st, _ := staging(t)
		if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- h.monitor.Run(ctx) }()
		stats := &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: st}
		healthReq := &csi.NodeGetVolumeHealthRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: st}
		hang := make(chan struct{})
		h.setStatfs(func(string, *unix.Statfs_t) error { <-hang; return nil })
		defer func() {
			select {
			case <-hang:
			default:
				close(hang)
			}
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			synctest.Wait()
		}()
		time.Sleep(5 * time.Second)
		start := time.Now()
		resp, err := h.d.NodeGetVolumeStats(context.Background(), stats)
		if err != nil || time.Since(start) != 0 {
			t.Fatalf("stats on a hung mount: %v after %v; must answer at once", err, time.Since(start))
		}
		abnormal, msg, _ := LegacyCondition(resp, legacyStatsConditionField)
		if !abnormal || !strings.HasPrefix(msg, health.ReasonMountStalled) || resp.GetUsage()[0].GetTotal() != 400<<10 {
			t.Fatalf("condition %v %q usage %v", abnormal, msg, resp.GetUsage())
		}
		hr, err := h.d.NodeGetVolumeHealth(context.Background(), healthReq)
		if err != nil || len(hr.GetVolumeHealth().GetHealthStatuses()) != 1 ||
			hr.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE {
			t.Fatalf("health on a hung mount: %v %v", hr, err)
		}
		close(hang)
		time.Sleep(5 * time.Second)
		resp, _ = h.d.NodeGetVolumeStats(context.Background(), stats)
		if abnormal, msg, _ := LegacyCondition(resp, legacyStatsConditionField); abnormal {
			t.Fatalf("after the mount recovered: %q", msg)
		}
		hr, _ = h.d.NodeGetVolumeHealth(context.Background(), healthReq)
		if len(hr.GetVolumeHealth().GetHealthStatuses()) != 0 {
			t.Fatalf("healthy volume reports %v", hr.GetVolumeHealth().GetHealthStatuses())
		}
		if _, err := h.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: vol.GetVolumeId(), StagingTargetPath: st}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestServerVerdictsReachVolumesAndStorageHealth(t *testing.T) {
	synctest.Test(t, testServerVerdictsReachVolumesAndStorageHealth)
}

func testServerVerdictsReachVolumesAndStorageHealth(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st, _ := staging(t)
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	h.startMonitor(t)
	h.store.SetServer("srv:445", health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable, Message: "2 probes failed"})
	h.store.SetServer("other:445", health.Verdict{State: health.StateDegraded, Reason: health.ReasonSlow, Message: "round trip 1.5s"})
	h.store.SetServer("fine:445", health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable})
	synctest.Wait() // the Monitor takes the server verdict in
	hr, err := h.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: vol.GetVolumeId()})
	if err != nil || hr.GetVolumeHealth().GetHealthStatuses()[0].GetReason() != health.ReasonUnreachable {
		t.Fatalf("volume on an unreachable server: %v %v", hr, err)
	}
	sh, err := h.d.NodeGetStorageHealth(context.Background(), &csi.NodeGetStorageHealthRequest{})
	if err != nil || len(sh.GetBackendHealth()) != 2 {
		t.Fatalf("storage health %v %v, want 2 unhealthy servers", sh, err)
	}
	if b := sh.GetBackendHealth()[1]; b.GetStatus() != csi.StorageHealthErrorType_STORAGE_UNREACHABLE || b.GetReason() != health.ReasonUnreachable {
		t.Fatalf("srv entry %v", b)
	}
	if _, err := h.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{}); code(err) != codes.InvalidArgument {
		t.Fatalf("no id: %v", err)
	}
	if _, err := h.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: "nope"}); code(err) != codes.NotFound {
		t.Fatalf("unknown volume: %v", err)
	}
	h.monitor.Remove(vol.GetVolumeId())
}

// TestAdoptsVolumesStagedBeforeARestart: a volume mounted by an earlier
// plugin process is watched from the first stats call that names it.
func TestAdoptsVolumesStagedBeforeARestart(t *testing.T) {
	h := newHarness(t)
	vol := h.volume(t)
	st := "/var/lib/kubelet/plugins/x/globalmount"
	if err := h.mounter.MountCIFS(context.Background(), "//srv/share/pvc-1", st, nil, auth.Credentials{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: st}); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.store.Volume(vol.GetVolumeId()); !ok {
		t.Fatal("mounted volume not adopted")
	}
	static := "/var/lib/kubelet/pods/p/volumes/static"
	if err := h.mounter.MountCIFS(context.Background(), "//10.0.0.9/data/dir", static, nil, auth.Credentials{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: "static-pv-handle", VolumePath: static}); err != nil {
		t.Fatalf("static volume: %v", err)
	}
}

func TestControllerHealthAndListing(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var ids []string
	for _, n := range []string{"pvc-a", "pvc-b", "pvc-c"} {
		r, err := h.d.CreateVolume(ctx, createReq(n))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetVolume().GetVolumeId())
	}
	page, err := h.d.ListVolumes(ctx, &csi.ListVolumesRequest{MaxEntries: 2})
	if err != nil || len(page.GetEntries()) != 2 || page.GetNextToken() != "2" {
		t.Fatalf("first page %v %v", page, err)
	}
	rest, err := h.d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: page.GetNextToken()})
	if err != nil || len(rest.GetEntries()) != 1 || rest.GetNextToken() != "" {
		t.Fatalf("second page %v %v", rest, err)
	}
	if _, err := h.d.ListVolumes(ctx, &csi.ListVolumesRequest{StartingToken: "bogus"}); code(err) != codes.Aborted {
		t.Fatalf("bad token: %v, want Aborted", err)
	}
	gv, err := h.d.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: ids[0]})
	if err != nil {
		t.Fatal(err)
	}
	if abnormal, _, ok := LegacyCondition(gv.GetStatus(), legacyStatsConditionField); !ok || abnormal {
		t.Fatal("an unchecked volume must carry a normal legacy condition")
	}
	h.store.SetServer("srv:445", health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable})
	gv, _ = h.d.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: ids[0]})
	if abnormal, msg, _ := LegacyCondition(gv.GetStatus(), legacyStatsConditionField); !abnormal || !strings.HasPrefix(msg, inventory.ReasonUnreachable+":") {
		t.Fatalf("unreachable server: abnormal=%v %q", abnormal, msg)
	}
	vh, err := h.d.ControllerGetVolumeHealth(ctx, &csi.ControllerGetVolumeHealthRequest{VolumeId: ids[1]})
	if err != nil || vh.GetVolumeHealth().GetHealthStatuses()[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE {
		t.Fatalf("controller volume health %v %v", vh, err)
	}
	lh, err := h.d.ControllerListVolumeHealth(ctx, &csi.ControllerListVolumeHealthRequest{})
	if err != nil || len(lh.GetEntries()) != 3 {
		t.Fatalf("list health %v %v", lh, err)
	}
	if _, err := h.d.ControllerGetVolume(ctx, &csi.ControllerGetVolumeRequest{VolumeId: "fake"}); code(err) != codes.NotFound {
		t.Fatalf("malformed id: %v", err)
	}
	if _, err := h.d.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: ids[0], Secrets: creds}); err != nil {
		t.Fatal(err)
	}
	if all, _ := h.d.ListVolumes(ctx, &csi.ListVolumesRequest{}); len(all.GetEntries()) != 2 {
		t.Fatalf("deleted volume still listed: %d", len(all.GetEntries()))
	}
}

func TestProbeAndCapabilities(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if r, _ := h.d.Probe(ctx, &csi.ProbeRequest{}); r.GetReady().GetValue() {
		t.Fatal("ready before serving")
	}
	h.d.ready = true
	if r, _ := h.d.Probe(ctx, &csi.ProbeRequest{}); !r.GetReady().GetValue() {
		t.Fatal("not ready while serving")
	}
	h.mounter.CheckErr = errors.New("no mount.cifs")
	if r, _ := h.d.Probe(ctx, &csi.ProbeRequest{}); r.GetReady().GetValue() {
		t.Fatal("ready without mount helpers")
	}
	nc, _ := h.d.NodeGetCapabilities(ctx, nil)
	var got []int32
	for _, c := range nc.GetCapabilities() {
		got = append(got, int32(c.GetRpc().GetType()))
	}
	for _, want := range []int32{1, 4, 7, 8} {
		if !slices.Contains(got, want) {
			t.Fatalf("node capabilities %v must include STAGE_UNSTAGE (1), the legacy VOLUME_CONDITION (4), GET_VOLUME_HEALTH (7), GET_STORAGE_HEALTH (8)", got)
		}
	}
	cc, _ := h.d.ControllerGetCapabilities(ctx, nil)
	got = nil
	for _, c := range cc.GetCapabilities() {
		got = append(got, int32(c.GetRpc().GetType()))
	}
	for _, want := range []int32{3, 11, 12, 16, 17} {
		if !slices.Contains(got, want) {
			t.Fatalf("controller capabilities %v must include LIST_VOLUMES (3), legacy VOLUME_CONDITION (11), GET_VOLUME (12), GET_VOLUME_HEALTH (16), LIST_VOLUME_HEALTH (17)", got)
		}
	}
	info, _ := h.d.GetPluginInfo(ctx, nil)
	if info.GetName() != DefaultDriverName {
		t.Fatalf("name %q", info.GetName())
	}
}

// events records what the driver tells Kubernetes.
type events struct {
	mu      sync.Mutex
	reasons []string
}

func (e *events) VolumeHealthChanged(_ string, v health.VolumeVerdict, _ []kube.Object) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reasons = append(e.reasons, v.Reason)
}

func (e *events) list() []string { e.mu.Lock(); defer e.mu.Unlock(); return slices.Clone(e.reasons) }

// TestWedgedMountIsRemountedThroughTheStore: a mount whose statfs hangs
// while its server answers is asked for a remount by the Monitor; the
// driver, following the store, remounts it, and the volume's Events say
// MountStalled, then Remounted.
func TestWedgedMountIsRemountedThroughTheStore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		ev := &events{}
		h.d.deps.Events = ev
		vol := h.volume(t)
		st, _ := staging(t)
		if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
			t.Fatal(err)
		}
		h.store.SetServer("srv:445", health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable})
		hang := make(chan struct{})
		h.setStatfs(func(string, *unix.Statfs_t) error { <-hang; return nil })
		h.startMonitor(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); h.d.follow(ctx) }()
		var unhang sync.Once
		defer func() { unhang.Do(func() { close(hang) }); cancel(); <-done }()
		var remounts atomic.Int32
		h.mounter.MountHook = func(_ context.Context, source, _ string) error {
			if strings.HasPrefix(source, "//") {
				remounts.Add(1)
				unhang.Do(func() { close(hang) }) // the new mount answers
			}
			return nil
		}
		time.Sleep(9 * time.Second)
		if v, _ := h.store.Volume(vol.GetVolumeId()); v.Reason != health.ReasonMountStalled || remounts.Load() != 0 {
			t.Fatalf("before the grace: %s, %d remounts", v.Reason, remounts.Load())
		}
		time.Sleep(10 * time.Second)
		v, _ := h.store.Volume(vol.GetVolumeId())
		if remounts.Load() != 1 || v.Reason != health.ReasonRemounted || !v.RemountWanted.IsZero() {
			t.Fatalf("after the grace: %d remounts, verdict %s (remount wanted %v)", remounts.Load(), v.Reason, v.RemountWanted)
		}
		if got := ev.list(); !slices.Equal(got, []string{health.ReasonVolumeHealthy, health.ReasonMountStalled, health.ReasonRemounted}) {
			t.Fatalf("events %v", got)
		}
	})
}

// TestControllerReadsHaveNoSideEffects: asking about a volume the controller
// does not know answers NotFound and starts no probe.
func TestControllerReadsHaveNoSideEffects(t *testing.T) {
	h := newHarness(t)
	v := volume.Volume{Source: volume.Source{Server: "elsewhere", Share: "s"}, SubDir: "d", OnDelete: volume.OnDeleteDelete, UID: volume.UIDFor("x")}
	if _, err := h.d.ControllerGetVolume(context.Background(), &csi.ControllerGetVolumeRequest{VolumeId: v.ID()}); code(err) != codes.NotFound {
		t.Fatalf("unknown volume: %v, want NotFound", err)
	}
	if _, err := h.d.ControllerGetVolumeHealth(context.Background(), &csi.ControllerGetVolumeHealthRequest{VolumeId: v.ID()}); code(err) != codes.NotFound {
		t.Fatalf("unknown volume health: %v, want NotFound", err)
	}
	if n := len(h.inventory.List()); n != 0 {
		t.Fatalf("a read tracked %d volumes", n)
	}
}
