//go:build integration

// Package integration runs the controller against the lab's real Samba
// servers. It must run as an unprivileged user inside the lab's client
// namespace (make test/integration does both), which proves the controller
// needs neither root nor a kernel mount:
//
//	ip netns exec csismb-c setpriv --reuid=nobody --regid=nogroup --clear-groups ./integration.test
package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/inventory"
	"github.com/csi-smb/csi-smb/pkg/plugin"
	"github.com/csi-smb/csi-smb/test/lab"
)

// env names the lab: its state directory (to look at the servers' disks).
const envLabDir = "CSI_SMB_LAB_DIR"

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "integration tests must run as an unprivileged user to prove the controller needs no root")
		os.Exit(2)
	}
	if os.Getenv(envLabDir) == "" {
		fmt.Fprintln(os.Stderr, envLabDir+" is not set; run: make test/integration")
		os.Exit(2)
	}
	goleak.VerifyTestMain(m)
}

// server is the lab server the tests provision on.
const server = "10.213.0.2"

// serverDisk is where the share "share" of server n2 lives on the host.
func serverDisk(t *testing.T, rel string) string {
	t.Helper()
	return filepath.Join(os.Getenv(envLabDir), "n2", "shares", "share", rel)
}

func secrets() map[string]string {
	return map[string]string{"username": lab.User, "password": lab.Password}
}

// controller starts the controller in-process on a unix socket and returns
// a client for it; everything stops when the test ends.
func controller(t testing.TB) csi.ControllerClient {
	t.Helper()
	c, _ := controllerPlugin(t)
	return c
}

// controllerPlugin is controller, with the assembled plugin for tests that
// seed what a controller would have listed from PersistentVolumes.
func controllerPlugin(t testing.TB) (csi.ControllerClient, *plugin.Plugin) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "csi.sock")
	opts := driver.DefaultOptions()
	opts.Endpoint, opts.Mode, opts.Version, opts.SMBTimeout = "unix://"+sock, driver.ModeController, "test", 10*time.Second
	p, err := plugin.New(opts, plugin.Parts{Inventory: inventory.Options{CheckInterval: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	waitReady(t, conn)
	return csi.NewControllerClient(conn), p
}

func waitReady(t testing.TB, conn *grpc.ClientConn) {
	t.Helper()
	id := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := id.Probe(context.Background(), &csi.ProbeRequest{})
		if err == nil && resp.GetReady().GetValue() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mountCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func createReq(name string, params map[string]string) *csi.CreateVolumeRequest {
	if params == nil {
		params = map[string]string{"source": "//" + server + "/share/it"}
	}
	return &csi.CreateVolumeRequest{
		Name:               name,
		VolumeCapabilities: []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)},
		CapacityRange:      &csi.CapacityRange{RequiredBytes: 1 << 30},
		Parameters:         params,
		Secrets:            secrets(),
	}
}

func uniqueName(t *testing.T) string {
	return fmt.Sprintf("pvc-%d", time.Now().UnixNano())
}
