//go:build vmguest

// Package guest is the test suite that runs inside the qemu guest (kernel
// cifs) against the real csi-smb binary and the lab's real Samba servers:
// csi-sanity, secret exposure, and dead-server behaviour. make test/vm
// builds it and boots the guest; see test/lab.
package guest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/csi-smb/csi-smb/test/lab"
)

const (
	hostDir     = "/host"
	socket      = "/tmp/csi.sock"
	driverLog   = "/tmp/csi-smb.log"
	kubeconfig  = hostDir + "/kubeconfig"
	metricsAddr = "127.0.0.1:9809"
)

// env is the running driver and clients to it.
type env struct {
	cmd  *exec.Cmd
	conn *grpc.ClientConn
	ctl  csi.ControllerClient
	node csi.NodeClient
	ctrl *lab.Control
}

var theEnv *env //nolint:gochecknoglobals // the one driver process shared by the suite's tests

func TestMain(m *testing.M) {
	e, err := startDriver()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start driver:", err)
		os.Exit(1)
	}
	theEnv = e
	code := m.Run()
	e = theEnv // a test may have restarted the driver
	_ = e.conn.Close()
	_ = e.cmd.Process.Signal(os.Interrupt)
	waitErr := e.cmd.Wait()
	if code == 0 {
		code = checkLogForSecrets()
	}
	if code != 0 {
		dumpDriverLog(waitErr)
	}
	// The whole log, for the host: _out/vm/driver.log (the password was
	// checked to be absent above when the suite passed; on failure the
	// lab's password is a lab-only secret).
	if b, err := os.ReadFile(driverLog); err == nil {
		_ = os.WriteFile(filepath.Join(hostDir, "driver.log"), b, 0o644)
	}
	os.Exit(code)
}

// startDriver starts the driver with the suite's flags and extra ones.
func startDriver(extra ...string) (*env, error) {
	logf, err := os.OpenFile(driverLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600) // a restarted driver appends
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(kubeconfig); err != nil {
		return nil, fmt.Errorf("the guest suite needs the lab's API server (hack/vm-suite.sh): %w", err)
	}
	args := append([]string{"--endpoint=unix://" + socket, "--mode=all", "--node-id=guest", "--mount-timeout=15s",
		"--remount-grace=5s", "--dfs-unfence-after=5s", "--metrics-address=" + metricsAddr, "--kube-api", "--kubeconfig=" + kubeconfig,
		"--v=6", "--logtostderr"}, extra...)
	cmd := exec.Command(filepath.Join(hostDir, "bin", "csi-smb"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	id := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := id.Probe(context.Background(), &csi.ProbeRequest{})
		if err == nil && resp.GetReady().GetValue() {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("driver not ready after 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &env{cmd: cmd, conn: conn, ctl: csi.NewControllerClient(conn), node: csi.NewNodeClient(conn),
		ctrl: lab.NewControl(filepath.Join(hostDir, lab.ControlDir))}, nil
}

// dumpDriverLog prints how the driver ended and the tail of its log.
func dumpDriverLog(waitErr error) {
	b, _ := os.ReadFile(driverLog)
	lines := strings.Split(string(b), "\n")
	fmt.Printf("--- driver exit: %v; last %d log lines:\n", waitErr, min(150, len(lines)))
	for _, l := range lines[max(0, len(lines)-150):] {
		if !strings.Contains(l, lab.Password) {
			fmt.Println(l)
		}
	}
}

// checkLogForSecrets fails the run when the driver log, written at -v=6
// where every request is logged, holds the password.
func checkLogForSecrets() int {
	b, err := os.ReadFile(driverLog)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read driver log:", err)
		return 1
	}
	if bytes.Contains(b, []byte(lab.Password)) {
		fmt.Fprintln(os.Stderr, "FAIL: the driver log contains the password")
		return 1
	}
	if !bytes.Contains(b, []byte("NodeStageVolume")) || !bytes.Contains(b, []byte("***stripped***")) {
		fmt.Fprintln(os.Stderr, "FAIL: the driver log does not show sanitized NodeStageVolume requests; the secret check proves nothing")
		return 1
	}
	fmt.Printf("RESULT driver log: %d bytes at -v=6, password not present, secrets stripped\n", len(b))
	return 0
}

// fault asks the host to apply a lab fault and fails the test if it cannot.
func fault(t testing.TB, action, target string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := theEnv.ctrl.Do(ctx, action, target); err != nil {
		t.Fatalf("fault %s %s: %v", action, target, err)
	}
}

// driverThreads is the OS thread count of the driver: a statfs stuck in the
// kernel pins one thread, so a pile-up of them shows here.
func driverThreads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", theEnv.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// mountedOn reports whether mountinfo lists path.
func mountedOn(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}
