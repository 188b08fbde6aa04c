// Package sanity runs csi-sanity (csi-test v5.6.0) in-process against the
// whole gRPC surface with a fake mounter and an in-memory share. It is the
// fast conformance check of `go test ./...`; the same suite runs against
// real Samba and kernel cifs in the guest (test/vm/guest).
package sanity

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount/mounttest"
	"github.com/csi-smb/csi-smb/pkg/plugin"
	"github.com/csi-smb/csi-smb/pkg/provision"
	"github.com/csi-smb/csi-smb/pkg/provision/provisiontest"
	"github.com/csi-smb/csi-smb/pkg/smb"
)

func TestSanityWithFakes(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	share := provisiontest.New()
	ctx, cancel := context.WithCancel(context.Background())
	// The prober talks real SMB2 to an in-process responder over pipes.
	responder := smbresponder.New(smbresponder.Options{})
	dialer := smb.ProbeDialer{Dial: func(context.Context, string, string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() { _ = responder.ServeConn(ctx, s) }()
		return c, nil
	}}
	opts := driver.DefaultOptions()
	opts.Endpoint, opts.NodeID, opts.Version = "unix://"+sock, "sanity", "test"
	p, err := plugin.New(opts, plugin.Parts{
		Dial:    dialer.Dial,     // the prober and DFS referrals talk to the responder
		Mounter: mounttest.New(), // statfs is of the real target directories
		OpenShare: func(context.Context, string, string, auth.Credentials) (provision.FS, func(), error) {
			return share, func() {}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
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
