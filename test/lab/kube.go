package lab

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// API server facts. etcd listens on the client namespace's loopback only; the
// API server on the client's bridge address, so the guest reaches it too.
const (
	KubePort       = 6443
	KubeServer     = "https://10.213.0.20:6443"
	DefaultKubeBin = "/var/cache/csi-smb/kube/bin/kube-apiserver"
	etcdClientURL  = "http://127.0.0.1:2379"
	etcdPeerURL    = "http://127.0.0.1:2380"
	kubeUser       = "lab-admin"
	kubeReadyWait  = 90 * time.Second
)

func (l *Lab) kubeDir() string { return filepath.Join(l.Dir, "kube") }

// Kubeconfig returns the path of a kubeconfig for the lab's API server
// (server https://10.213.0.20:6443, insecure-skip-tls-verify, a system:masters
// token). It works from the client namespace and from the guest; it exists
// once KubeUp has run.
func (l *Lab) Kubeconfig() string { return filepath.Join(l.kubeDir(), "kubeconfig") }

// WriteKubeconfig copies the kubeconfig to path (for instance into the guest's
// 9p share), creating its directory.
func (l *Lab) WriteKubeconfig(path string) error {
	b, err := os.ReadFile(l.Kubeconfig())
	if err != nil {
		return fmt.Errorf("kubeconfig (is the API server up? run: smblab kube up): %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// KubeToken returns the bearer token of the kubeconfig's user (system:masters).
func (l *Lab) KubeToken() (string, error) {
	b, err := os.ReadFile(filepath.Join(l.kubeDir(), "token"))
	if err != nil {
		return "", fmt.Errorf("kube token (is the API server up?): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

const kubeconfigTmpl = `apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: %s
  user:
    token: %s
contexts:
- name: lab
  context:
    cluster: lab
    user: %s
    namespace: default
current-context: lab
`

// KubeUp starts etcd and kube-apiserver inside the lab's client namespace
// (l.ClientNS(), address ClientIP=10.213.0.20), listening on
// https://10.213.0.20:6443, token auth (a token with system:masters), RBAC, a
// service-account key pair, state under l.Dir/kube, PIDs recorded in the lab
// state file so Down kills them. It waits until /readyz answers ok.
//
// Every KubeUp starts from an empty etcd with a new token and key pair.
// Anonymous requests are refused (401), /readyz included: send the token.
//
// extraArgs are appended to kube-apiserver's flags (ClusterUp adds feature
// gates and --allow-privileged).
func (l *Lab) KubeUp(ctx context.Context, apiserverBin string, extraArgs ...string) (err error) {
	if apiserverBin == "" {
		apiserverBin = DefaultKubeBin
	}
	if _, err := os.Stat(filepath.Join("/run/netns", l.ClientNS())); err != nil {
		return fmt.Errorf("lab client namespace %s: %w (run: smblab up)", l.ClientNS(), err)
	}
	if alive(l.EtcdPID) || alive(l.APIServerPID) {
		return fmt.Errorf("the API server is already up (etcd pid %d, kube-apiserver pid %d; run: smblab kube down)", l.EtcdPID, l.APIServerPID)
	}
	if _, err := os.Stat(apiserverBin); err != nil {
		return fmt.Errorf("kube-apiserver: %w (build it: hack/build-kube.sh)", err)
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		return fmt.Errorf("etcd: %w (apt-get install etcd-server)", err)
	}
	defer func() {
		if err != nil {
			_ = l.KubeDown(context.WithoutCancel(ctx))
		}
	}()
	kd := l.kubeDir()
	if err := os.RemoveAll(kd); err != nil {
		return fmt.Errorf("kube dir: %w", err)
	}
	for _, d := range []string{kd, filepath.Join(kd, "certs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("kube dir: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(kd, "etcd"), 0o700); err != nil {
		return fmt.Errorf("kube dir: %w", err)
	}
	token, err := l.writeKubeFiles()
	if err != nil {
		return err
	}

	etcd, err := l.startInClient(etcdBin, filepath.Join(kd, "etcd.log"),
		"--name", "lab", "--data-dir", filepath.Join(kd, "etcd"), "--logger", "zap",
		"--listen-client-urls", etcdClientURL, "--advertise-client-urls", etcdClientURL,
		"--listen-peer-urls", etcdPeerURL, "--initial-advertise-peer-urls", etcdPeerURL,
		"--initial-cluster", "lab="+etcdPeerURL, "--initial-cluster-state", "new")
	if err != nil {
		return err
	}
	l.EtcdPID = etcd
	if err := l.save(); err != nil {
		return err
	}
	if err := waitListen(ctx, etcd, "127.0.0.1", 2379, 30*time.Second, "etcd", filepath.Join(kd, "etcd.log")); err != nil {
		return err
	}

	api, err := l.startInClient(apiserverBin, filepath.Join(kd, "apiserver.log"), append([]string{
		"--etcd-servers=" + etcdClientURL,
		"--bind-address=" + ClientIP, "--advertise-address=" + ClientIP, fmt.Sprintf("--secure-port=%d", KubePort),
		"--cert-dir=" + filepath.Join(kd, "certs"),
		"--anonymous-auth=false", // gotcha G5: with the token every probe is authenticated
		"--token-auth-file=" + filepath.Join(kd, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(kd, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(kd, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--enable-priority-and-fairness=false",
		"--profiling=false"}, extraArgs...)...)
	if err != nil {
		return err
	}
	l.APIServerPID = api
	if err := l.save(); err != nil {
		return err
	}
	return l.waitReady(ctx, token)
}

// writeKubeFiles writes the token file, the service-account key pair and the
// kubeconfig, and returns the token.
func (l *Lab) writeKubeFiles() (string, error) {
	kd := l.kubeDir()
	rnd := make([]byte, 24)
	if _, err := rand.Read(rnd); err != nil {
		return "", fmt.Errorf("kube token: %w", err)
	}
	token := "lab-" + hex.EncodeToString(rnd)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", fmt.Errorf("service-account key: %w", err)
	}
	priv, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("service-account key: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", fmt.Errorf("service-account key: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"token", []byte(token + "\n"), 0o600},
		// token,user,uid,"group1,group2"
		{"tokens.csv", fmt.Appendf(nil, "%s,%s,%s-uid,\"system:masters\"\n", token, kubeUser, kubeUser), 0o600},
		{"sa.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}), 0o600},
		{"sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644},
		// Readable by all: host-side tests run as nobody. The token only opens
		// an API server inside the lab's private namespaces.
		{"kubeconfig", fmt.Appendf(nil, kubeconfigTmpl, KubeServer, kubeUser, token, kubeUser), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(kd, f.name), f.data, f.mode); err != nil {
			return "", fmt.Errorf("kube files: %w", err)
		}
	}
	return token, nil
}

// startInClient starts bin in the client namespace, in a session of its own
// like smbd (see Start), with its output appended to logPath. ip netns exec
// execs bin in place, so the PID is bin's.
func (l *Lab) startInClient(bin, logPath string, args ...string) (int, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ClientNS(), bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Debian's etcd reads ETCD_* variables; none of the caller's may leak in.
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "ETCD_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	go func() { _ = cmd.Wait() }() // reap it if it dies while we run
	return cmd.Process.Pid, nil
}

// waitListen waits until pid listens on ip:port in its namespace.
func waitListen(ctx context.Context, pid int, ip string, port int, limit time.Duration, what, logPath string) error {
	deadline := time.Now().Add(limit)
	for !listening(pid, ip, port) {
		if !alive(pid) {
			return fmt.Errorf("%s exited at start: %s", what, logTail(logPath))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on %s:%d after %s; see %s", what, ip, port, limit, logPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start %s: %w", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitReady polls /readyz from the client namespace until it answers ok.
func (l *Lab) waitReady(ctx context.Context, token string) error {
	logPath := filepath.Join(l.kubeDir(), "apiserver.log")
	hc := l.KubeHTTPClient()
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(kubeReadyWait)
	var last string
	for {
		if !alive(l.APIServerPID) {
			return fmt.Errorf("kube-apiserver exited at start: %s", logTail(logPath))
		}
		if !alive(l.EtcdPID) {
			return fmt.Errorf("etcd exited: %s", logTail(filepath.Join(l.kubeDir(), "etcd.log")))
		}
		if status, body, err := kubeGet(ctx, hc, token, "/readyz"); err != nil {
			last = err.Error()
		} else if status == http.StatusOK && body == "ok" {
			return nil
		} else {
			last = fmt.Sprintf("%d %s", status, body)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready after %s (last: %s); see %s", kubeReadyWait, last, logPath)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for kube-apiserver: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func kubeGet(ctx context.Context, hc *http.Client, token, path string) (int, string, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, KubeServer+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// KubeHTTPClient is an HTTP client whose connections are made from the client
// namespace, with the API server's self-signed certificate accepted. Add the
// token (KubeToken) as "Authorization: Bearer" to each request.
func (l *Lab) KubeHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return DialInNetns(ctx, l.ClientNS(), network, addr)
		},
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // lab API server, self-signed
		TLSHandshakeTimeout: 5 * time.Second,
	}}
}

// DialInNetns dials addr from inside the named network namespace
// (/run/netns/ns), without running anything in it: a locked OS thread enters
// the namespace just long enough to create the socket, which stays there.
// It needs root (CAP_SYS_ADMIN). Give an IP address: a name would be resolved
// outside the namespace.
func DialInNetns(ctx context.Context, ns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		c, restored, err := dialInNetns(ctx, ns, network, addr)
		if restored {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with this goroutine
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// dialInNetns runs on a locked thread; restored says whether the thread is
// back in its own namespace and may be unlocked.
func dialInNetns(ctx context.Context, ns, network, addr string) (c net.Conn, restored bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, fmt.Errorf("dial in %s: %w", ns, err)
	}
	defer self.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return nil, true, fmt.Errorf("dial in %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("dial in %s: setns: %w", ns, err)
	}
	var d net.Dialer
	c, err = d.DialContext(ctx, network, addr)
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return c, false, err
	}
	return c, true, err
}

// KubeDown stops etcd and kube-apiserver by PID (Down calls it). It also
// catches those whose PID never reached the state file by their command line,
// which holds this lab's own absolute kube paths.
func (l *Lab) KubeDown(ctx context.Context) error {
	kd := l.kubeDir()
	var pids []int
	for _, p := range []int{l.APIServerPID, l.EtcdPID} {
		if alive(p) && mentionsDir(p, kd) {
			pids = append(pids, p)
		}
	}
	pids = append(pids, pidsWithArg(filepath.Join(kd, "certs"))...)
	pids = append(pids, pidsWithArg(filepath.Join(kd, "etcd"))...)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGCONT)
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitGone(wctx, pids); err != nil {
		return fmt.Errorf("kube down: %w", err)
	}
	if l.EtcdPID == 0 && l.APIServerPID == 0 {
		return nil
	}
	l.EtcdPID, l.APIServerPID = 0, 0
	if _, err := os.Stat(filepath.Join(l.Dir, stateFile)); err != nil {
		return nil // no state to update (a lab that never came up)
	}
	return l.save()
}

// mentionsDir reports whether pid's command line mentions a file under path, so a
// recycled PID of some other process is never signalled.
func mentionsDir(pid int, path string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(b), path+"/")
}

// logTail returns the last lines of a log file, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return path + ":\n" + strings.Join(lines, "\n")
}
