//go:build labkube

// This test needs root, the lab's packages (hack/install-deps.sh) and a built
// kube-apiserver (hack/build-kube.sh, or KUBE_APISERVER=PATH):
//
//	go test -tags labkube -count=1 -v ./test/lab/
package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/test/lab"
)

func TestKubeUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	bin := os.Getenv("KUBE_APISERVER")
	if bin == "" {
		bin = lab.DefaultKubeBin
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no kube-apiserver (%v): run hack/build-kube.sh", err)
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Skip("no etcd: apt-get install etcd-server")
	}

	// A prefix of our own: another lab (default prefix csismb-) may be up on
	// this machine, and it must never be touched.
	prefix := fmt.Sprintf("ck%d-", os.Getpid())
	if left := netnsWithPrefix(t, prefix); len(left) > 0 {
		t.Fatalf("namespaces %v already exist; not ours, refusing to run", left)
	}
	tmp := t.TempDir()
	if err := os.Chmod(tmp, 0o755); err != nil { // smbd's force user must reach the shares
		t.Fatal(err)
	}
	l, err := lab.NewWithPrefix(filepath.Join(tmp, "lab"), prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	if err := l.Up(ctx); err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up in %s", time.Since(start).Round(time.Millisecond))
	downed := false
	t.Cleanup(func() {
		if !downed {
			_ = l.Down(context.Background())
		}
	})

	start = time.Now()
	if err := l.KubeUp(ctx, bin); err != nil {
		t.Fatalf("KubeUp: %v", err)
	}
	t.Logf("KubeUp in %s (etcd pid %d, kube-apiserver pid %d)", time.Since(start).Round(time.Millisecond), l.EtcdPID, l.APIServerPID)
	if err := l.KubeUp(ctx, bin); err == nil {
		t.Error("a second KubeUp succeeded")
	}

	// The PIDs are in the state file, for a later smblab down.
	saved, err := lab.Load(l.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if saved.EtcdPID != l.EtcdPID || saved.APIServerPID != l.APIServerPID || l.EtcdPID == 0 || l.APIServerPID == 0 {
		t.Errorf("state has etcd %d apiserver %d, want %d %d", saved.EtcdPID, saved.APIServerPID, l.EtcdPID, l.APIServerPID)
	}

	// Server and token come from the kubeconfig, as a client would take them.
	kc, err := os.ReadFile(l.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	server, token := kubeconfigField(string(kc), "server"), kubeconfigField(string(kc), "token")
	if server != "https://10.213.0.20:6443" || token == "" || !strings.Contains(string(kc), "insecure-skip-tls-verify: true") {
		t.Fatalf("kubeconfig:\n%s", kc)
	}
	if tok, err := l.KubeToken(); err != nil || tok != token {
		t.Errorf("KubeToken = %q, %v; kubeconfig has %q", tok, err, token)
	}
	copyPath := filepath.Join(tmp, "share", "kube", "kubeconfig")
	if err := l.WriteKubeconfig(copyPath); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(copyPath); err != nil || !bytes.Equal(b, kc) {
		t.Errorf("WriteKubeconfig copy differs: %v", err)
	}

	hc := l.KubeHTTPClient() // connections from the client netns
	defer hc.CloseIdleConnections()
	do := func(method, path, body, tok string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, server+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	if code, b := do("GET", "/readyz", "", token); code != 200 || string(b) != "ok" {
		t.Errorf("/readyz = %d %q", code, b)
	}
	if code, _ := do("GET", "/readyz", "", ""); code != http.StatusUnauthorized {
		t.Errorf("anonymous /readyz = %d, want 401 (anonymous auth is off)", code)
	}
	if code, _ := do("GET", "/api/v1/namespaces", "", "wrong-token"); code != http.StatusUnauthorized {
		t.Errorf("wrong token = %d, want 401", code)
	}

	const ns = "lab-kube-test"
	code, b := do("POST", "/api/v1/namespaces", `{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"`+ns+`"}}`, token)
	if code != http.StatusCreated {
		t.Fatalf("create namespace = %d %s", code, b)
	}
	var got struct {
		Metadata struct{ Name string }
		Status   struct{ Phase string }
	}
	code, b = do("GET", "/api/v1/namespaces/"+ns, "", token)
	if err := json.Unmarshal(b, &got); code != 200 || err != nil || got.Metadata.Name != ns || got.Status.Phase != "Active" {
		t.Fatalf("get namespace = %d %s (%v)", code, b, err)
	}

	// What the node plugin will do: write an Event, then read it back.
	ev := `{"apiVersion":"v1","kind":"Event","metadata":{"name":"lab-probe"},
		"involvedObject":{"apiVersion":"v1","kind":"Pod","namespace":"` + ns + `","name":"lab-pod"},
		"reason":"LabProbe","message":"hello from the lab test","type":"Normal","source":{"component":"lab-test"}}`
	if code, b := do("POST", "/api/v1/namespaces/"+ns+"/events", ev, token); code != http.StatusCreated {
		t.Fatalf("create event = %d %s", code, b)
	}
	var events struct {
		Items []struct{ Reason, Message string }
	}
	code, b = do("GET", "/api/v1/namespaces/"+ns+"/events", "", token)
	if err := json.Unmarshal(b, &events); code != 200 || err != nil || len(events.Items) != 1 || events.Items[0].Reason != "LabProbe" {
		t.Errorf("list events = %d %s (%v)", code, b, err)
	}

	// The guest reaches the API server over the bridge, as n1's namespace does.
	conn, err := lab.DialInNetns(ctx, prefix+"n1", "tcp", "10.213.0.20:6443")
	if err != nil {
		t.Errorf("dial the API server from %sn1 over the bridge: %v", prefix, err)
	} else {
		conn.Close()
	}
	// etcd is on the client's loopback only.
	if conn, err := lab.DialInNetns(ctx, prefix+"n1", "tcp", "10.213.0.20:2379"); err == nil {
		conn.Close()
		t.Error("etcd is reachable from the bridge")
	}

	// KubeDown then KubeUp again works (fresh etcd).
	if err := l.KubeDown(ctx); err != nil {
		t.Fatal(err)
	}
	if l.EtcdPID != 0 || l.APIServerPID != 0 {
		t.Errorf("PIDs after KubeDown: %d %d", l.EtcdPID, l.APIServerPID)
	}
	start = time.Now()
	if err := l.KubeUp(ctx, bin); err != nil {
		t.Fatalf("second KubeUp: %v", err)
	}
	t.Logf("second KubeUp in %s", time.Since(start).Round(time.Millisecond))

	// Down (which calls KubeDown) leaves no process and no namespace.
	var pids []int
	pids = append(pids, l.EtcdPID, l.APIServerPID)
	for _, s := range l.Servers {
		pids = append(pids, s.PID)
	}
	downed = true
	if err := l.Down(ctx); err != nil {
		t.Fatalf("Down: %v", err)
	}
	for _, p := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && !bytes.Contains(b, []byte(") Z ")) {
			t.Errorf("process %d still alive after Down: %s", p, b)
		}
	}
	if left := netnsWithPrefix(t, prefix); len(left) > 0 {
		t.Errorf("namespaces left after Down: %v", left)
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("lab dir left after Down: %v", err)
	}
}

// netnsWithPrefix lists the named network namespaces starting with prefix.
func netnsWithPrefix(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

// kubeconfigField returns the value of the first "key: value" line.
func kubeconfigField(kc, key string) string {
	for line := range strings.SplitSeq(kc, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
