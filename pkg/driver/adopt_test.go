package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// TestAdoptsStagedAtStart: a node plugin restarted under running pods
// watches every volume the kubelet staged with this driver (vol_data.json
// beside globalmount), and only those.
func TestAdoptsStagedAtStart(t *testing.T) {
	h := newHarness(t)
	ours := h.volume(t).GetVolumeId()
	root := filepath.Join(t.TempDir(), "plugins", "kubernetes.io", "csi")
	stage := func(driverName, handle, volData string) string {
		dir := filepath.Join(root, driverName, strings.NewReplacer("/", "_", "#", "_").Replace(handle))
		if err := os.MkdirAll(filepath.Join(dir, "globalmount"), 0o750); err != nil {
			t.Fatal(err)
		}
		if volData != "" {
			if err := os.WriteFile(filepath.Join(dir, "vol_data.json"), []byte(volData), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		target := filepath.Join(dir, "globalmount")
		if err := h.mounter.MountCIFS(context.Background(), "//srv/share/"+filepath.Base(dir), target, nil, auth.Credentials{}); err != nil {
			t.Fatal(err)
		}
		return target
	}
	stage(DefaultDriverName, ours, `{"driverName":"`+DefaultDriverName+`","volumeHandle":"`+ours+`","specVolID":"pv-1"}`)
	stage("smb.csi.k8s.io", "other#1", `{"driverName":"smb.csi.k8s.io","volumeHandle":"other#1"}`)
	stage(DefaultDriverName, "no-data", "")
	stage(DefaultDriverName, "garbage", `{"driverName":`)
	stage(DefaultDriverName, "huge", `{"driverName":"`+DefaultDriverName+`","volumeHandle":"huge","pad":"`+strings.Repeat("x", maxVolData)+`"}`)

	h.d.adoptStaged()
	if _, ok := h.store.Volume(ours); !ok {
		t.Fatalf("volume %s staged before the start is not watched", ours)
	}
	for _, id := range []string{"other#1", "no-data", "garbage", "huge"} {
		if _, ok := h.store.Volume(id); ok {
			t.Errorf("volume %s adopted: not ours or no volume data", id)
		}
	}
}
