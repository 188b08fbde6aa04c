package registration

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// start runs a server in a fresh directory and returns it with a client
// that dials its socket the way the kubelet does, and a stop function.
func start(t *testing.T, dir string) (*Server, registerapi.RegistrationClient, func() error) {
	t.Helper()
	s, err := New(Options{Dir: dir, DriverName: "smb.csi-smb.io", Endpoint: "/var/lib/kubelet/plugins/smb.csi-smb.io/csi.sock"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if fi, err := os.Lstat(s.Socket()); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no socket at %s: %v", s.Socket(), <-done)
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+s.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = conn.Close()
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return s, registerapi.NewRegistrationClient(conn), stop
}

func TestGetInfoAndStatus(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plugins_registry") // created by Run
	s, client, stop := start(t, dir)
	if got, want := s.Socket(), filepath.Join(dir, "smb.csi-smb.io-reg.sock"); got != want {
		t.Errorf("socket %s, want %s", got, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "smb.csi-smb.io" ||
		info.Endpoint != "/var/lib/kubelet/plugins/smb.csi-smb.io/csi.sock" ||
		len(info.SupportedVersions) != 1 || info.SupportedVersions[0] != "1.0.0" {
		t.Errorf("GetInfo = %+v", info)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check before the kubelet answered: %v", err)
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: false, Error: "version mismatch"}); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); !st.Notified || st.Registered || st.Error != "version mismatch" {
		t.Errorf("status after a refusal = %+v", st)
	}
	if err := s.Check(); err == nil {
		t.Error("Check is nil after the kubelet refused the registration")
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Errorf("Check after registration: %v", err)
	}
	if err := os.Remove(s.Socket()); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err == nil {
		t.Error("Check is nil with the socket gone (the kubelet cannot find the driver)")
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestStopRemovesSocket: the kubelet deregisters a plugin whose socket
// disappears; a stopped driver must not stay registered.
func TestStopRemovesSocket(t *testing.T) {
	s, _, stop := start(t, t.TempDir())
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := os.Lstat(s.Socket()); !os.IsNotExist(err) {
		t.Errorf("socket still there after stop: %v", err)
	}
}

// TestReplacesStaleSocket: a crashed run leaves its socket; the next run
// serves on a new one.
func TestReplacesStaleSocket(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "smb.csi-smb.io-reg.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, client, _ := start(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.GetInfo(ctx, &registerapi.InfoRequest{}); err != nil {
		t.Fatalf("GetInfo over the replaced socket: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	for name, o := range map[string]Options{
		"no dir":            {DriverName: "d", Endpoint: "/x/csi.sock"},
		"relative dir":      {Dir: "plugins_registry", DriverName: "d", Endpoint: "/x/csi.sock"},
		"no driver":         {Dir: "/r", Endpoint: "/x/csi.sock"},
		"relative endpoint": {Dir: "/r", DriverName: "d", Endpoint: "csi.sock"},
		"no endpoint":       {Dir: "/r", DriverName: "d"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
}
