package plugin_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/csi-smb/csi-smb/pkg/driver"
	"github.com/csi-smb/csi-smb/pkg/mount/mounttest"
	"github.com/csi-smb/csi-smb/pkg/plugin"
)

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lis.Close() }()
	return lis.Addr().String()
}

func dial(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestKubeletRegistration walks the kubelet's side of plugin registration
// against an assembled node: find the socket in plugins_registry, GetInfo,
// NodeGetInfo on the endpoint it names, NotifyRegistrationStatus; /healthz
// says ok on both addresses; at stop the registration socket is gone.
func TestKubeletRegistration(t *testing.T) {
	dir := t.TempDir()
	registry := filepath.Join(dir, "plugins_registry")
	sock := filepath.Join(dir, "csi.sock")
	opts := driver.DefaultOptions()
	opts.Mode, opts.NodeID, opts.DFSFailover = driver.ModeNode, "node-1", false
	opts.Endpoint, opts.KubeletRegistrationDir = "unix://"+sock, registry
	opts.MetricsAddress, opts.HealthAddress = freeAddr(t), freeAddr(t)
	p, err := plugin.New(opts, plugin.Parts{Mounter: mounttest.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	regSock := filepath.Join(registry, driver.DefaultDriverName+"-reg.sock")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Lstat(regSock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no registration socket %s", regSock)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	reg := registerapi.NewRegistrationClient(dial(t, regSock))
	info, err := reg.GetInfo(rctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != driver.DefaultDriverName || info.Endpoint != sock {
		t.Fatalf("GetInfo = %+v, want a CSIPlugin %s at %s", info, driver.DefaultDriverName, sock)
	}
	// The kubelet dials the endpoint GetInfo named; the CSI server must
	// already serve there.
	nodeInfo, err := csi.NewNodeClient(dial(t, info.Endpoint)).NodeGetInfo(rctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if nodeInfo.NodeId != "node-1" {
		t.Errorf("NodeGetInfo node %q", nodeInfo.NodeId)
	}
	if _, err := reg.NotifyRegistrationStatus(rctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{opts.MetricsAddress, opts.HealthAddress} {
		code, body := get(t, "http://"+addr+"/healthz")
		if code != http.StatusOK || body != "ok\n" {
			t.Errorf("GET %s/healthz: %d %q", addr, code, body)
		}
	}
	if _, err := reg.NotifyRegistrationStatus(rctx, &registerapi.RegistrationStatus{Error: "driver name taken"}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, "http://"+opts.HealthAddress+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after the kubelet refused the registration: %d, want 503", code)
	}
	stop()
	if _, err := os.Lstat(regSock); !os.IsNotExist(err) {
		t.Errorf("registration socket left after stop: %v", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRegistrationNeedsANodeAndAPath(t *testing.T) {
	for name, mod := range map[string]func(*driver.Options){
		"controller": func(o *driver.Options) { o.Mode = driver.ModeController },
		"tcp endpoint": func(o *driver.Options) {
			o.Endpoint = "tcp://127.0.0.1:10000"
		},
		"relative path": func(o *driver.Options) { o.KubeletRegistrationPath = "plugins/csi.sock" },
	} {
		opts := driver.DefaultOptions()
		opts.Mode, opts.NodeID, opts.KubeletRegistrationDir = driver.ModeNode, "n", "/var/lib/kubelet/plugins_registry"
		mod(&opts)
		if _, err := plugin.New(opts, plugin.Parts{Mounter: mounttest.New()}); err == nil {
			t.Errorf("%s: New accepted %+v", name, opts)
		}
	}
}
