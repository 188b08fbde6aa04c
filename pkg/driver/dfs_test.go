package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/dfs"
	"github.com/csi-smb/csi-smb/pkg/failover"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/inventory"
)

// fakeDFS records what the driver asks of the node's DFS parts, in order.
type fakeDFS struct {
	mu    sync.Mutex
	calls []string
	added failover.Volume
}

func (f *fakeDFS) log(s string) { f.mu.Lock(); f.calls = append(f.calls, s); f.mu.Unlock() }

func (f *fakeDFS) Resolve(_ context.Context, path string, _ auth.Credentials) (dfs.Resolution, error) {
	f.log("resolve " + path)
	if !strings.HasPrefix(path, `\root\dfs\ha`) {
		return dfs.Resolution{}, dfs.ErrNotDFS
	}
	return dfs.Resolution{Link: `\root\dfs\ha`, Targets: []string{`\10.0.0.2\ha\d`, `\10.0.0.3\ha\d`}}, nil
}

func (f *fakeDFS) Acquire(targets []string, _ auth.Credentials) func() {
	f.log("acquire " + strings.Join(targets, ","))
	return func() { f.log("release") }
}

func (f *fakeDFS) Prepare(_ context.Context, targets []string) (func(), error) {
	f.log("prepare " + strings.Join(targets, ","))
	return func() { f.log("prepared") }, nil
}

func (f *fakeDFS) Add(v failover.Volume, active string) {
	f.mu.Lock()
	f.added = v
	f.mu.Unlock()
	f.log("add " + v.ID + " on " + active)
}

func (f *fakeDFS) Remove(id string) { f.log("remove " + id) }

// TestStageOnDFSPath: a static volume on a DFS link is resolved, its
// targets probed and prepared (fenced if dead) before the mount of the DFS
// path itself, then watched with every target; unstage lets it go. A plain
// share only costs the referral question.
func TestStageOnDFSPath(t *testing.T) {
	h := newHarness(t)
	fd := &fakeDFS{}
	h.d.deps.DFS = fd
	vol := &csi.Volume{VolumeId: "static-dfs", VolumeContext: map[string]string{"source": "//root/dfs/ha/d", "dfsFailover": "consistency"}}
	st, _ := staging(t)
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(vol, st, rwx)); err != nil {
		t.Fatal(err)
	}
	if got := h.mounter.Calls[len(h.mounter.Calls)-1].Source; got != "//root/dfs/ha/d" {
		t.Fatalf("mounted %s, want the DFS path itself", got)
	}
	want := []string{`resolve \root\dfs\ha\d`, "acquire 10.0.0.2:445,10.0.0.3:445", "prepare 10.0.0.2:445,10.0.0.3:445",
		"add static-dfs on 10.0.0.2:445", "prepared", "release"}
	fd.mu.Lock()
	got, added := slices.Clone(fd.calls), fd.added
	fd.mu.Unlock()
	if !slices.Equal(got, want) {
		t.Fatalf("calls\n%v\nwant\n%v", got, want)
	}
	if !added.Consistency || added.Path != `\root\dfs\ha\d` || !slices.Equal(added.Targets, []string{"10.0.0.2:445", "10.0.0.3:445"}) {
		t.Fatalf("added %+v", added)
	}
	if v, ok := h.store.Volume("static-dfs"); !ok || v.Server != "10.0.0.2:445" {
		t.Fatalf("watched %+v %v, want against the active target", v, ok)
	}
	if _, err := h.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: "static-dfs", StagingTargetPath: st}); err != nil {
		t.Fatal(err)
	}
	if last := fd.calls[len(fd.calls)-1]; last != "remove static-dfs" {
		t.Fatalf("unstage: last call %q", last)
	}
	bad := &csi.Volume{VolumeId: "bad", VolumeContext: map[string]string{"source": "//root/dfs/ha", "dfsFailover": "sometimes"}}
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(bad, st, rwx)); code(err) != codes.InvalidArgument {
		t.Fatalf("bad dfsFailover: %v, want InvalidArgument", err)
	}
	plain := h.volume(t)
	fd.calls = nil
	st2, _ := staging(t)
	if _, err := h.d.NodeStageVolume(context.Background(), stageReq(plain, st2, rwx)); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(fd.calls) != `[resolve \srv\share\pvc-1]` {
		t.Fatalf("plain share: %v", fd.calls)
	}
}

// TestControllerHealthListsDFSTargets: ControllerGetVolumeHealth names each
// DFS target that is not healthy, besides the volume's own verdict.
func TestControllerHealthListsDFSTargets(t *testing.T) {
	vh := entryHealth(inventory.Entry{ID: "v", Verdict: health.VolumeVerdict{State: health.StateHealthy},
		Targets: []inventory.Target{
			{Addr: "10.0.0.2:445", Verdict: health.Verdict{State: health.StateHealthy}},
			{Addr: "10.0.0.3:445", Verdict: health.Verdict{State: health.StateUnreachable, Message: "refused"}},
		}})
	hs := vh.GetHealthStatuses()
	if len(hs) != 1 || hs[0].GetReason() != health.ReasonTargetUnreachable || !strings.Contains(hs[0].GetMessage(), "10.0.0.3:445") ||
		hs[0].GetStatus() != csi.VolumeHealthErrorType_DEGRADED {
		t.Fatalf("health %v", hs)
	}
}
