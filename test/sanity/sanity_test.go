// Package sanity runs csi-sanity (csi-test v5.6.0) in-process against the
// whole gRPC surface with a fake mounter and an in-memory share. It is the
// fast conformance check of `go test ./...`; the same suite runs against
// real Samba and kernel cifs in the guest (test/vm/guest).
package sanity

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount"
	"github.com/csi-smb/csi-smb/pkg/mount/mounttest"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/provision/provisiontest"
	"github.com/csi-smb/csi-smb/pkg/smb"
)

func TestSanityWithFakes(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	share := provisiontest.New()
	d, err := driver.New(driver.Options{
		Endpoint: "unix://" + sock, Mode: driver.ModeAll, DriverName: driver.DefaultDriverName, NodeID: "sanity",
		Version: "test", MountTimeout: time.Second, SMBTimeout: time.Second, StatsTimeout: time.Second,
	}, driver.Deps{
		Mounter: mounttest.New(),
		Statter: mount.NewStatter(nil), // statfs of the real target directories
		OpenShare: func(context.Context, string, string, smb.Credentials) (provision.FS, func(), error) {
			return share, func() {}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + sock
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeParameters = map[string]string{"source": "//fake-server/share"}
	cfg.IdempotentCount = 2
	sanity.Test(t, cfg)
}
