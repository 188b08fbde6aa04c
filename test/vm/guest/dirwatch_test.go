//go:build vmguest

package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/internal/testrun"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
	"github.com/csi-smb/csi-smb/test/lab"
)

// TestVolumeDirectoryRemovedUnderPod: a staged, published volume whose
// directory another SMB client renames, renames back, and then removes on
// the server turns NodeGetVolumeHealth INACCESSIBLE with the reason within
// 3 s (the node's CHANGE_NOTIFY watch on its parent directory), healthy
// again when it is back, and the node's metrics count what was seen.
func TestVolumeDirectoryRemovedUnderPod(t *testing.T) {
	vol := volumeOn(t, victim)
	_, target := stagedAndPublished(t, vol)
	waitHealth(t, vol, target, 10*time.Second, "healthy", healthy)
	if err := os.WriteFile(filepath.Join(target, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := volume.ParseID(vol.GetVolumeId())
	if err != nil {
		t.Fatal(err)
	}
	dir := v.Dir()
	pool := smb.NewPool(smb.Options{})
	testrun.Background(t, pool.Run) // closes its sessions when the test ends
	sh, release, err := pool.Share(tctx(t, 30*time.Second), v.Source.Server, v.Source.Share, auth.Credentials{Username: lab.User, Password: lab.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	before := metric(t, `csi_smb_volume_dir_events_total{action="removed",role="all"}`)
	for _, s := range []struct {
		what   string
		change func() error
		want   func(string) bool
		bound  time.Duration
	}{
		{"renamed", func() error { return sh.Rename(tctx(t, 10*time.Second), dir, dir+".moved") },
			func(h string) bool { return h == "INACCESSIBLE/"+health.ReasonDirRenamed }, 3 * time.Second},
		{"renamed back", func() error { return sh.Rename(tctx(t, 10*time.Second), dir+".moved", dir) }, healthy, 6 * time.Second},
		{"removed", func() error { return sh.RemoveAll(tctx(t, 10*time.Second), dir) },
			func(h string) bool { return h == "INACCESSIBLE/"+health.ReasonDirMissing }, 3 * time.Second},
		{"made again", func() error { return sh.Mkdir(tctx(t, 10*time.Second), dir) }, healthy, 6 * time.Second},
	} {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		took := waitHealth(t, vol, target, 30*time.Second, s.what, s.want)
		fmt.Printf("RESULT node watch: %s on the server -> NodeGetVolumeHealth %q after %v\n", s.what,
			volumeHealth(t, vol, target), took.Round(time.Millisecond))
		if took > s.bound {
			t.Errorf("%s seen after %v, want <= %v", s.what, took, s.bound)
		}
	}
	if got := metric(t, `csi_smb_volume_dir_events_total{action="removed",role="all"}`); got != before+1 {
		t.Errorf("node removed-directory events %v, want %v", got, before+1)
	}
	if got := metric(t, `csi_smb_dir_watches{role="all",state="watching"}`); got < 1 {
		t.Errorf("node watches watching: %v", got)
	}
	if !strings.HasPrefix(dir, "guest/") {
		t.Fatalf("volume directory %q is not below guest/", dir)
	}
}
