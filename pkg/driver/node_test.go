package driver

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"github.com/csi-smb/csi-smb/pkg/mount"
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
	want := []string{"echo_interval=5", "nosharesock", "vers=3.0", "hard", "gid=2000", "dir_mode=0775", "file_mode=0775"}
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
	h.statfs = func(string, *unix.Statfs_t) error { return unix.EHOSTDOWN }
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

// TestStatsAnswerWhileStatfsHangs: a statfs that never returns (a dead hard
// mount) costs each caller StatsTimeout, never more, and the answer is a
// success with the last good usage and an abnormal condition.
func TestStatsAnswerWhileStatfsHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		vol := h.volume(t)
		st := "/var/lib/kubelet/plugins/x/globalmount"
		if err := h.mounter.MountCIFS(context.Background(), "//srv/share/pvc-1", st, nil, mount.Credentials{}); err != nil {
			t.Fatal(err)
		}
		req := &csi.NodeGetVolumeStatsRequest{VolumeId: vol.GetVolumeId(), VolumePath: st}
		if _, err := h.d.NodeGetVolumeStats(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		hang := make(chan struct{})
		h.statfs = func(string, *unix.Statfs_t) error { <-hang; return unix.EHOSTDOWN }
		for range 5 {
			start := time.Now()
			resp, err := h.d.NodeGetVolumeStats(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took != 200*time.Millisecond {
				t.Fatalf("took %v, want exactly StatsTimeout", took)
			}
			abnormal, msg, _ := LegacyCondition(resp, legacyStatsConditionField)
			if !abnormal || !strings.HasPrefix(msg, "MountStalled") || resp.GetUsage()[0].GetTotal() != 400<<10 {
				t.Fatalf("condition %v %q usage %v", abnormal, msg, resp.GetUsage())
			}
		}
		close(hang)
		synctest.Wait()
		resp, _ := h.d.NodeGetVolumeStats(context.Background(), req)
		if _, msg, _ := LegacyCondition(resp, legacyStatsConditionField); !strings.HasPrefix(msg, "volume is healthy") && !strings.Contains(msg, "ServerUnreachable") {
			t.Fatalf("after the hang ended: %q", msg)
		}
	})
}

func TestDescribeStatFailure(t *testing.T) {
	for err, prefix := range map[error]string{
		&os.PathError{Err: unix.EHOSTDOWN}:    "ServerUnreachable",
		&os.PathError{Err: errnoENOTSUPP}:     "MountStalled",
		&os.PathError{Err: unix.EDEADLK}:      "MountStalled",
		&os.PathError{Err: unix.ESTALE}:       "MountStalled",
		&os.PathError{Err: unix.EACCES}:       "AccessDenied",
		mount.ErrStatTimeout:                  "MountStalled",
		errors.New("something else entirely"): "MountStalled",
	} {
		if got := describeStatFailure(err, time.Second); !strings.HasPrefix(got, prefix) {
			t.Errorf("%v -> %q, want prefix %q", err, got, prefix)
		}
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
	if !slices.Contains(got, 4) || !slices.Contains(got, int32(csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)) {
		t.Fatalf("node capabilities %v must include STAGE_UNSTAGE and the legacy VOLUME_CONDITION (4)", got)
	}
	info, _ := h.d.GetPluginInfo(ctx, nil)
	if info.GetName() != DefaultDriverName {
		t.Fatalf("name %q", info.GetName())
	}
}
