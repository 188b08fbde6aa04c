//go:build integration

package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/csi-smb/csi-smb/internal/testrun"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/test/lab"
)

// TestVolumeDirectoryWatched: the controller's CHANGE_NOTIFY watch on the
// base directory "it" sees a volume's directory renamed, renamed back,
// removed and made again by another SMB client, and ControllerGetVolumeHealth
// says so at once (the poll interval here is 1 s, so every step must beat
// it by far to show it was the watch).
func TestVolumeDirectoryWatched(t *testing.T) {
	c, p := controllerPlugin(t)
	name := uniqueName(t)
	vol := mustCreate(t, c, createReq(name, nil))
	id := vol.GetVolumeId()
	defer mustDelete(t, c, id)
	watchKey := health.DirTarget{Addr: server + ":445", Share: "share", Dir: "it"}.WatchKey()
	deadline := time.Now().Add(15 * time.Second)
	for !p.Store.Watches()[watchKey].Watching {
		if time.Now().After(deadline) {
			t.Fatalf("no standing watch on %s after 15 s: %+v", watchKey, p.Store.Watches())
		}
		time.Sleep(10 * time.Millisecond)
	}
	entry := func() *csi.VolumeHealth_VolumeHealthEntry {
		r, err := c.ControllerGetVolumeHealth(ctxT(t), &csi.ControllerGetVolumeHealthRequest{VolumeId: id})
		if err != nil {
			t.Fatal(err)
		}
		if hs := r.GetVolumeHealth().GetHealthStatuses(); len(hs) > 0 {
			return hs[0]
		}
		return nil
	}
	waitFor := func(what string, ok func(*csi.VolumeHealth_VolumeHealthEntry) bool) time.Duration {
		start := time.Now()
		for time.Since(start) < 3*time.Second {
			if ok(entry()) {
				return time.Since(start)
			}
			time.Sleep(2 * time.Millisecond)
		}
		t.Fatalf("%s: health %v after 3 s", what, entry())
		return 0
	}
	healthy := func(e *csi.VolumeHealth_VolumeHealthEntry) bool { return e == nil }
	waitFor("created", healthy)
	pool := smb.NewPool(smb.Options{})
	testrun.Background(t, pool.Run) // closes its sessions when the test ends
	sh, release, err := pool.Share(ctxT(t), server, "share", auth.Credentials{Username: lab.User, Password: lab.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	dir := "it/" + name
	for _, s := range []struct {
		what   string
		change func() error
		ok     func(*csi.VolumeHealth_VolumeHealthEntry) bool
	}{
		{"renamed", func() error { return sh.Rename(ctxT(t), dir, dir+".moved") }, func(e *csi.VolumeHealth_VolumeHealthEntry) bool {
			return e.GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE && e.GetReason() == health.ReasonDirRenamed &&
				e.GetMessage() == "the volume's directory was renamed on the share to "+name+".moved"
		}},
		{"renamed back", func() error { return sh.Rename(ctxT(t), dir+".moved", dir) }, healthy},
		{"removed", func() error { return sh.RemoveAll(ctxT(t), dir) }, func(e *csi.VolumeHealth_VolumeHealthEntry) bool {
			return e.GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE && e.GetReason() == health.ReasonDirMissing
		}},
		{"made again", func() error { return sh.Mkdir(ctxT(t), dir) }, healthy},
	} {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		took := waitFor(s.what, s.ok)
		fmt.Printf("RESULT controller watch: %s -> ControllerGetVolumeHealth after %v\n", s.what, took.Round(100*time.Microsecond))
		if took > 500*time.Millisecond {
			t.Errorf("%s seen after %v: slower than a watch", s.what, took)
		}
	}
	if ws := p.Store.Watches()[watchKey]; ws.Removed != 1 || ws.Renamed != 1 || ws.Restored != 2 {
		t.Errorf("watch totals %+v", ws)
	}
}
