//go:build vmguest

package guest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// TestPublishModes: a read-write and a read-only publish of one staged
// volume, with the pod's fsGroup applied as the mount's gid.
func TestPublishModes(t *testing.T) {
	vol := volumeOn(t, "n2")
	c := capability(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "4242")
	staging, rw := paths(t)
	ro := filepath.Join(filepath.Dir(rw), "ro")
	if err := stage(t, vol, staging, c); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unstage(tctx(t, 30e9), vol, staging) }()
	if err := publish(t, vol, staging, rw, c, false); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unpublish(tctx(t, 30e9), vol, rw) }()
	if err := publish(t, vol, staging, ro, c, true); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unpublish(tctx(t, 30e9), vol, ro) }()
	if err := publish(t, vol, staging, ro, c, true); err != nil {
		t.Fatalf("publish is not idempotent: %v", err)
	}
	want := []byte("written through the rw publish\n")
	if err := os.WriteFile(filepath.Join(rw, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(ro, "f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read through the ro publish: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(ro, "g"), want, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write through the ro publish: %v, want EROFS", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(rw, "f"), &st); err != nil || st.Gid != 4242 || st.Mode&0o020 == 0 {
		t.Fatalf("file gid %d mode %o: want gid 4242 (fsGroup) and group-writable (%v)", st.Gid, st.Mode, err)
	}
}
