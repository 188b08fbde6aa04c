package main

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this binary's main as a child process.
func TestMain(m *testing.M) {
	if os.Getenv("CSI_SMB_TEST_MAIN") == "1" {
		os.Args = append([]string{"csi-smb"}, strings.Fields(os.Getenv("CSI_SMB_TEST_ARGS"))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSIGTERMStopsCleanly: what a DaemonSet rollout does to the old pod.
// The driver serves, gets SIGTERM, stops within 2 s with status 0
// and leaves no socket behind.
func TestSIGTERMStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	health := lis.Addr().String()
	_ = lis.Close()
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CSI_SMB_TEST_MAIN=1",
		"CSI_SMB_TEST_ARGS=--mode=controller --endpoint=unix://"+sock+" --health-address="+health)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			t.Logf("killed: %v", <-exited)
		}
	}()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := c.Get("http://" + health + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver never healthy (%v); output:\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("no CSI socket while serving: %v", err)
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; output:\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM; output:\n%s", out.String())
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("stopping took %s", took)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("CSI socket left after stop: %v", err)
	}
	if !strings.Contains(out.String(), `"stopped"`) {
		t.Errorf("no stop in the log:\n%s", out.String())
	}
}

// TestSubcommands: `csi-smb probe` and `csi-smb status` are dispatched to
// pkg/cli with its exit codes; anything else is still the driver's flags.
func TestSubcommands(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args string
		code int
		says string
	}{
		{"probe --help", 0, "Usage: csi-smb probe [flags] //server/share[/path]"},
		{"probe", 3, "want one //server/share[/path]"},
		{"status --endpoint unix://" + sock + " --timeout 1s", 5, "cannot ask the node plugin"},
		{"--version", 0, "csi-smb dev"},
		{"--help", 0, "csi-smb probe"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "CSI_SMB_TEST_MAIN=1", "CSI_SMB_TEST_ARGS="+tc.args)
		out, err := cmd.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(string(out), tc.says) {
			t.Errorf("csi-smb %s: exit %d, want %d saying %q:\n%s", tc.args, code, tc.code, tc.says, out)
		}
	}
}
