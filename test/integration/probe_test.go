//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/internal/testrun"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/probe"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/test/lab"
)

// envBinary names the built csi-smb binary the probe tests run (make
// test/integration builds it and sets it).
const envBinary = "CSI_SMB_BIN"

// Exit codes of csi-smb probe (pkg/cli; csi-smb probe --help).
const (
	exitHealthy     = 0
	exitUnreachable = 2
	exitDenied      = 4
)

// runProbe runs `csi-smb probe args...` with env as its whole environment
// and returns its exit code and output. The password must appear in
// neither.
func runProbe(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	bin := os.Getenv(envBinary)
	if bin == "" {
		t.Fatalf("%s is not set: build the binary (go build -o _out/csi-smb ./cmd/csi-smb) and set it; make test/integration does both", envBinary)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"probe", "--timeout", "2s", "--count", "3"}, args...)...)
	cmd.Env = append([]string{}, env...) // exactly env: nothing inherited
	return lab.RunCLI(t, cmd)
}

// credentialsFile writes a mount.cifs credentials file for the lab user.
func credentialsFile(t *testing.T, password string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(p, []byte("username="+lab.User+"\npassword="+password+"\ndomain="+lab.Domain+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func probeJSON(t *testing.T, out string) probe.Report {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &keys); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"version", "target", "time", "tookMs", "credentials", "verdict", "problems", "server", "dfs", "share"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("no %q in the report:\n%s", k, out)
		}
	}
	var r probe.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// matchLines checks that the regexps match lines of out, in order.
func matchLines(t *testing.T, out string, res ...string) {
	t.Helper()
	i := 0
	for _, l := range strings.Split(out, "\n") {
		if i < len(res) && regexp.MustCompile(res[i]).MatchString(l) {
			i++
		}
	}
	if i < len(res) {
		t.Fatalf("no line matches %q (in order); output:\n%s", res[i], out)
	}
}

// TestProbeHealthyShare: a directory on n2's share, with the lab user's
// credentials from a file (text) and from the environment (JSON).
func TestProbeHealthyShare(t *testing.T) {
	dir := "probe-" + uniqueName(t)
	if err := os.Mkdir(serverDisk(t, dir), 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(serverDisk(t, dir)) })
	target := "//" + server + "/share/" + dir
	code, out, errs := runProbe(t, nil, "--credentials", credentialsFile(t, lab.Password), target)
	if code != exitHealthy {
		t.Fatalf("exit %d, want 0\n%s%s", code, out, errs)
	}
	t.Logf("text:\n%s", out)
	matchLines(t, out,
		`^probe +`+regexp.QuoteMeta(target)+` as WORKGROUP\\csitest \(credentials: file\), `,
		`^server +10\.213\.0\.2:445 answers; logon accepted$`,
		`^  session +SMB 3\.1\.1; signing .*; encryption offered \(AES-128-(GCM|CCM)\)`,
		`^  echo +3 of 3 answered: [0-9.]+ [0-9.]+ [0-9.]+ ms; srtt [0-9.]+ ms$`,
		`^  health +Healthy \(ServerReachable\): answering ECHO$`,
		`^dfs +not a DFS path$`,
		`^share +\\\\10\.213\.0\.2\\share path "`+dir+`": ok$`,
		`^verdict +healthy \(exit 0\) after \d+ ms$`,
	)
	env := []string{"SMB_USERNAME=" + lab.User, "SMB_PASSWORD=" + lab.Password, "SMB_DOMAIN=" + lab.Domain}
	code, out, errs = runProbe(t, env, "--json", target)
	if code != exitHealthy {
		t.Fatalf("--json: exit %d\n%s%s", code, out, errs)
	}
	r := probeJSON(t, out)
	s := r.Server
	if r.Version != 1 || r.Verdict != probe.Healthy || len(r.Problems) != 0 || r.Credentials.Source != "environment" || r.DFS != nil ||
		!s.Reachable || s.Logon != probe.LogonAccepted || s.Session == nil || s.Session.Dialect != "3.1.1" || s.Session.Guest ||
		s.Echo.Sent != 3 || s.Echo.Answered != 3 || s.Health.State != "Healthy" || r.Share == nil || r.Share.Status != probe.ShareOK {
		t.Fatalf("report:\n%s", out)
	}
}

// TestProbeMissingPath: the share is there, the path is not: exit 2.
func TestProbeMissingPath(t *testing.T) {
	code, out, errs := runProbe(t, nil, "--json", "--credentials", credentialsFile(t, lab.Password),
		"//"+server+"/share/no-such-"+uniqueName(t))
	r := probeJSON(t, out)
	if code != exitUnreachable || r.Verdict != probe.Missing || r.Share == nil || r.Share.Status != probe.SharePathMissing ||
		len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "does not exist on") {
		t.Fatalf("exit %d, want 2\n%s%s", code, out, errs)
	}
	code, out, _ = runProbe(t, nil, "--credentials", credentialsFile(t, lab.Password), "//"+server+"/nosuchshare")
	if code != exitUnreachable || !strings.Contains(out, "no such share") {
		t.Fatalf("a missing share: exit %d\n%s", code, out)
	}
}

// TestProbeWrongPassword: the server refuses the user (exit 4); the probe
// still measures it over an anonymous session, which Samba allows.
func TestProbeWrongPassword(t *testing.T) {
	code, out, errs := runProbe(t, nil, "--json", "--credentials", credentialsFile(t, "Not-"+lab.Password), "//"+server+"/share")
	r := probeJSON(t, out)
	if code != exitDenied || r.Verdict != probe.Denied || r.Server.Logon != probe.LogonRejected || !r.Server.Reachable ||
		r.Server.Echo.Answered != 3 || r.Share == nil || r.Share.Status != probe.ShareDenied {
		t.Fatalf("exit %d, want 4\n%s%s", code, out, errs)
	}
	code, out, _ = runProbe(t, nil, "--credentials", credentialsFile(t, "Not-"+lab.Password), "//"+server+"/share")
	matchLines(t, out, `^server +10\.213\.0\.2:445 answers; credentials REFUSED \(probed anonymously instead\): .*logon failed`,
		`^verdict +denied \(exit 4\)`)
	if code != exitDenied {
		t.Fatalf("text: exit %d", code)
	}
}

// TestProbeUnreachable: an address nothing answers on (exit 2), within
// two session setup timeouts.
func TestProbeUnreachable(t *testing.T) {
	start := time.Now()
	code, out, errs := runProbe(t, nil, "--json", "//10.213.0.99/share")
	r := probeJSON(t, out)
	if code != exitUnreachable || r.Verdict != probe.Unreachable || r.Server.Reachable || r.Server.Health.State != "Unreachable" || r.Share != nil {
		t.Fatalf("exit %d, want 2\n%s%s", code, out, errs)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("took %v with --timeout 2s", took)
	}
}

// TestProbeDFS: n1's DFS root and its link multi -> n2\shareA, n3\shareA:
// the referral tree, and both targets probed and holding the path.
func TestProbeDFS(t *testing.T) {
	creds := credentialsFile(t, lab.Password)
	code, out, errs := runProbe(t, nil, "--json", "--credentials", creds, "//10.213.0.1/dfs/multi")
	if code != exitHealthy {
		t.Fatalf("link: exit %d\n%s%s", code, out, errs)
	}
	r := probeJSON(t, out)
	d := r.DFS
	if d == nil || d.Error != "" || !strings.EqualFold(d.Link, `\10.213.0.1\dfs\multi`) || r.Share != nil || len(d.Referrals) != 2 {
		t.Fatalf("link: %s", out)
	}
	root, link := d.Referrals[0], d.Referrals[1]
	if root.Kind != "root" || !strings.EqualFold(root.Path, `\10.213.0.1\dfs`) || root.TTLSeconds <= 0 || len(root.Targets) == 0 ||
		link.Kind != "link" || link.TTLSeconds <= 0 || strings.Join(link.Targets, ",") != `\10.213.0.2\shareA,\10.213.0.3\shareA` {
		t.Fatalf("referrals %+v", d.Referrals)
	}
	if len(d.Targets) != 2 {
		t.Fatalf("targets %+v", d.Targets)
	}
	for i, want := range []string{"10.213.0.2:445", "10.213.0.3:445"} {
		tg := d.Targets[i]
		if tg.Server.Address != want || !tg.Server.Reachable || tg.Server.Health.State != "Healthy" || tg.Server.Echo.Answered != 3 ||
			tg.Share.Status != probe.ShareOK {
			t.Fatalf("target %d: %+v", i, tg)
		}
	}
	code, out, _ = runProbe(t, nil, "--credentials", creds, "//10.213.0.1/dfs/multi")
	t.Logf("text:\n%s", out)
	matchLines(t, out,
		`^dfs +link \\10\.213\.0\.1\\dfs\\multi: 2 storage target\(s\)$`,
		`^  referral +\\10\.213\.0\.1\\dfs: root, ttl \d+s -> `,
		`^  referral +\\10\.213\.0\.1\\dfs\\multi: link, ttl \d+s -> \\10\.213\.0\.2\\shareA, \\10\.213\.0\.3\\shareA$`,
		`^  target 1 +\\10\.213\.0\.2\\shareA$`,
		`^    health +Healthy`,
		`^    share +\\\\10\.213\.0\.2\\shareA \(the share root\): ok$`,
		`^  target 2 +\\10\.213\.0\.3\\shareA$`,
		`^    share +\\\\10\.213\.0\.3\\shareA \(the share root\): ok$`,
		`^verdict +healthy \(exit 0\)`,
	)
	if code != exitHealthy {
		t.Fatalf("link, text: exit %d", code)
	}
	code, out, errs = runProbe(t, nil, "--json", "--credentials", creds, "//10.213.0.1/dfs")
	r = probeJSON(t, out)
	if code != exitHealthy || r.DFS == nil || len(r.DFS.Referrals) != 1 || r.DFS.Referrals[0].Kind != "root" || len(r.DFS.Targets) == 0 ||
		!r.DFS.Targets[0].Server.Reachable || r.DFS.Targets[0].Share.Status != probe.ShareOK || !r.DFS.Targets[0].Share.DFSRoot {
		t.Fatalf("the root: exit %d\n%s%s", code, out, errs)
	}
}

// TestProbeWatch: `csi-smb probe --watch --json` on a directory of n2's
// share streams what changes in it — names made on the server's disk and
// by another SMB client, a rename, a file written, a removal — and ends
// with exit 2 when the directory itself is removed.
func TestProbeWatch(t *testing.T) {
	bin := os.Getenv(envBinary)
	if bin == "" {
		t.Fatalf("%s is not set (make test/integration sets it)", envBinary)
	}
	dir := "watch-" + uniqueName(t)
	disk := serverDisk(t, dir)
	if err := os.Mkdir(disk, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(disk, 0o777); err != nil { // past the umask: smbd writes as the lab user
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(disk) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "probe", "--timeout", "2s", "--count", "2", "--watch", "--json", "--watch-for", "45s", "--keepalive", "1s",
		"--credentials", credentialsFile(t, lab.Password), "//"+server+"/share/"+dir)
	cmd.Env = []string{}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	first, ok := <-lines
	if !ok {
		t.Fatalf("no report; stderr: %s", errb.String())
	}
	if r := probeJSON(t, first); r.Verdict != probe.Healthy {
		t.Fatalf("report: %s", first)
	}
	// next waits for an event of kind on name, skipping others (a write
	// may say modified more than once), and returns how long it took.
	next := func(what, kind, name string) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s: the watch ended; stderr: %s", what, errb.String())
				}
				var e probe.WatchEvent
				if err := json.Unmarshal([]byte(l), &e); err != nil {
					t.Fatalf("not a JSON event: %q", l)
				}
				t.Logf("%s: %s", what, l)
				if e.Kind == kind && e.Name == name {
					took := time.Since(start)
					fmt.Printf("RESULT probe --watch: %s -> %s %s after %v\n", what, kind, name, took.Round(100*time.Microsecond))
					return took
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: no %s %s within 5 s", what, kind, name)
			}
		}
	}
	next("started", probe.WatchStarted, dir)
	pool := smb.NewPool(smb.Options{})
	testrun.Background(t, pool.Run)
	sh, release, err := pool.Share(ctx, server, "share", auth.Credentials{Username: lab.User, Password: lab.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, s := range []struct {
		what       string
		change     func() error
		kind, name string
	}{
		{"mkdir on the server's disk", func() error { return os.Mkdir(filepath.Join(disk, "a"), 0o777) }, probe.WatchAdded, "a"},
		{"mkdir over SMB", func() error { return sh.Mkdir(ctx, dir+"/b") }, probe.WatchAdded, "b"},
		{"rename over SMB", func() error { return sh.Rename(ctx, dir+"/b", dir+"/c") }, probe.WatchRenamedTo, "c"},
		{"file written on disk", func() error { return os.WriteFile(filepath.Join(disk, "f"), []byte("x"), 0o666) }, probe.WatchAdded, "f"},
		{"remove over SMB", func() error { return sh.Remove(ctx, dir+"/a") }, probe.WatchRemoved, "a"},
	} {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
		if took := next(s.what, s.kind, s.name); took > 2*time.Second {
			t.Errorf("%s seen after %v", s.what, took)
		}
	}
	if err := os.RemoveAll(disk); err != nil {
		t.Fatal(err)
	}
	next("the watched directory removed", probe.WatchGone, "")
	for range lines {
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitUnreachable {
		t.Fatalf("exit %v, want %d; stderr: %s", err, exitUnreachable, errb.String())
	}
	if strings.Contains(errb.String(), lab.Password) {
		t.Fatal("stderr carries the password")
	}
}
