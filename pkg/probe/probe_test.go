package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const password = "Pw-Probe-3k9"

// shares answers stats from a table: "addr share path" -> a directory, a
// file, or an error.
type shares map[string]any

func (s shares) stat(_ context.Context, addr, share, path string, _ auth.Credentials) (smb.ShareStat, error) {
	switch v := s[addr+" "+share+" "+path].(type) {
	case fs.FileInfo:
		return smb.ShareStat{Info: v}, nil
	case error:
		return smb.ShareStat{}, v
	}
	return smb.ShareStat{}, fmt.Errorf("stat %s: %w", path, os.ErrNotExist)
}

type fileInfo struct {
	name string
	dir  bool
}

func (f fileInfo) Name() string { return f.name }
func (f fileInfo) Size() int64  { return 0 }
func (f fileInfo) Mode() fs.FileMode {
	return map[bool]fs.FileMode{true: fs.ModeDir | 0o755, false: 0o644}[f.dir]
}
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return f.dir }
func (f fileInfo) Sys() any           { return nil }

var dir = fileInfo{name: "dir", dir: true}

func source(t *testing.T, s string) volume.Source {
	t.Helper()
	src, err := volume.ParseSource("target", s)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// probe runs a probe inside the caller's bubble against servers.
func probe(t *testing.T, servers map[string]*smbresponder.Server, st shares, target string, creds auth.Credentials, opts Options) Report {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	deps := Deps{Dial: smbresponder.Network(servers).Dial(ctx)}
	if st != nil {
		deps.Stat = st.stat
	}
	r := Run(ctx, Request{Target: source(t, target), Creds: creds, CredentialsFrom: "file"}, opts, deps)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), password) {
		t.Fatalf("the report carries the password: %s", b)
	}
	return r
}

func TestHealthyShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := smbresponder.New(smbresponder.Options{})
		start := time.Now()
		r := probe(t, map[string]*smbresponder.Server{"srv:445": srv}, shares{"srv:445 share vols": dir},
			"//srv/share/vols", auth.Credentials{Username: "alice", Password: password}, Options{Count: 4, Interval: time.Second})
		if r.Verdict != Healthy || len(r.Problems) != 0 {
			t.Fatalf("verdict %s %q", r.Verdict, r.Problems)
		}
		if took := time.Since(start); took != 3*time.Second {
			t.Errorf("4 ECHOs a second apart took %v", took)
		}
		s := r.Server
		if !s.Reachable || s.Logon != LogonAccepted || s.Session == nil || s.Session.Dialect != "2.1" || !s.Session.Guest ||
			s.Session.SigningRequired || s.Session.Signed || s.Session.Encrypted || s.Session.SigningAlgorithm != "HMAC-SHA256" {
			t.Fatalf("server %+v session %+v", s, s.Session)
		}
		if s.Echo.Sent != 4 || s.Echo.Answered != 4 || len(s.Echo.RTTMs) != 4 || srv.Requests(smbresponder.CmdEcho) != 4 {
			t.Fatalf("echo %+v, %d answered by the server", s.Echo, srv.Requests(smbresponder.CmdEcho))
		}
		if s.Health.State != "Healthy" || s.Health.Reason != "ServerReachable" {
			t.Fatalf("health %+v", s.Health)
		}
		if r.DFS != nil || r.Share == nil || r.Share.Status != ShareOK || r.Share.Path != "vols" {
			t.Fatalf("dfs %+v share %+v", r.DFS, r.Share)
		}
		if r.Credentials != (CredentialsReport{User: "alice", Source: "file"}) || r.Version != ReportVersion || r.Target != "//srv/share/vols" {
			t.Fatalf("report header %+v", r)
		}
	})
}

// TestMissing: a path that does not exist, a file where a directory is
// wanted, and a share the server does not have (the responder serves only
// IPC$: the real StatShare over SMB2 says so).
func TestMissing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		st     shares
		target string
		status string
	}{
		{"path", shares{}, "//srv/share/gone", SharePathMissing},
		{"file", shares{"srv:445 share f": fileInfo{name: "f"}}, "//srv/share/f", ShareNotDirectory},
		{"share", nil, "//srv/data/x", ShareMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := probe(t, map[string]*smbresponder.Server{"srv:445": smbresponder.New(smbresponder.Options{})}, tc.st,
					tc.target, auth.Credentials{}, Options{Count: 2})
				if r.Verdict != Missing || r.Share == nil || r.Share.Status != tc.status || len(r.Problems) != 1 {
					t.Fatalf("verdict %s %q share %+v", r.Verdict, r.Problems, r.Share)
				}
				if r.Server.Logon != LogonAnonymous || !r.Server.Session.Null {
					t.Fatalf("anonymous probe: %+v", r.Server)
				}
			})
		})
	}
}

// TestRefusedCredentials: the server refuses the user; the probe says so,
// and measures the server on an anonymous session all the same.
func TestRefusedCredentials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := smbresponder.New(smbresponder.Options{Logon: func(user string) bool { return user != "bob" }})
		st := shares{"srv:445 share x": fmt.Errorf("logon: %w", smb.ErrAuth)}
		r := probe(t, map[string]*smbresponder.Server{"srv:445": srv}, st, "//srv/share/x",
			auth.Credentials{Username: "bob", Password: password}, Options{Count: 3})
		if r.Verdict != Denied || r.Server.Logon != LogonRejected || !r.Server.Reachable || r.Server.Echo.Answered != 3 {
			t.Fatalf("verdict %s server %+v", r.Verdict, r.Server)
		}
		if !strings.Contains(r.Server.Error, "logon failed") || r.Share.Status != ShareDenied || len(r.Problems) != 2 {
			t.Fatalf("error %q share %+v problems %q", r.Server.Error, r.Share, r.Problems)
		}
	})
}

// TestUnreachable: a refused connection is seen at once; a frozen server
// (TCP accepted, no SMB answer) after two session setups time out, as the
// prober's detector confirms a miss.
func TestUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		r := probe(t, nil, shares{}, "//gone/share", auth.Credentials{}, Options{Timeout: time.Second})
		if r.Verdict != Unreachable || r.Server.Reachable || r.Server.Echo.Sent != 0 || r.Share != nil || time.Since(start) != 0 {
			t.Fatalf("refused: verdict %s server %+v after %v", r.Verdict, r.Server, time.Since(start))
		}
		if r.Server.Health.State != "Unreachable" || !strings.Contains(r.Problems[0], "gone:445 does not answer") {
			t.Fatalf("refused: %+v %q", r.Server.Health, r.Problems)
		}
		frozen := smbresponder.New(smbresponder.Options{})
		frozen.Freeze()
		defer frozen.Thaw()
		start = time.Now()
		r = probe(t, map[string]*smbresponder.Server{"ice:445": frozen}, shares{}, "//ice/share", auth.Credentials{}, Options{Timeout: time.Second})
		if r.Verdict != Unreachable || r.Server.Reachable || time.Since(start) != 2*time.Second || !strings.Contains(r.Server.Health.Message, "frozen") {
			t.Fatalf("frozen: verdict %s %+v after %v", r.Verdict, r.Server, time.Since(start))
		}
	})
}

// TestDegraded: a slow server (ServerSlow from the detector), and one that
// leaves an ECHO unanswered once (the probe redials and goes on).
func TestDegraded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := smbresponder.New(smbresponder.Options{Delay: func(cmd uint16) time.Duration {
			if cmd == smbresponder.CmdEcho {
				return 700 * time.Millisecond
			}
			return 0
		}})
		r := probe(t, map[string]*smbresponder.Server{"srv:445": slow}, shares{"srv:445 share ": dir}, "//srv/share", auth.Credentials{}, Options{})
		if r.Verdict != Degraded || r.Server.Health.Reason != "ServerSlow" || r.Server.Echo.SRTTMs != 700 || r.Server.Echo.RTTMs[0] != 700 {
			t.Fatalf("slow: verdict %s %+v", r.Verdict, r.Server)
		}
		var mu sync.Mutex
		echoes := 0
		lossy := smbresponder.New(smbresponder.Options{Delay: func(cmd uint16) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			if cmd != smbresponder.CmdEcho {
				return 0
			}
			if echoes++; echoes == 2 {
				return time.Hour
			}
			return 0
		}})
		r = probe(t, map[string]*smbresponder.Server{"srv:445": lossy}, shares{"srv:445 share ": dir}, "//srv/share", auth.Credentials{},
			Options{Timeout: time.Second, Count: 5})
		if r.Verdict != Degraded || r.Server.Echo.Sent != 5 || r.Server.Echo.Answered != 4 || r.Server.Health.State != "Healthy" ||
			!slices.Contains(r.Problems, "server srv:445: 1 of 5 ECHOs unanswered") {
			t.Fatalf("lossy: verdict %s %q %+v", r.Verdict, r.Problems, r.Server)
		}
	})
}

func TestDFS(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		servers := map[string]*smbresponder.Server{
			"10.0.0.1:445": smbresponder.New(smbresponder.Options{Referral: smbresponder.LabNamespace}),
			"10.0.0.2:445": smbresponder.New(smbresponder.Options{}),
		}
		st := shares{"10.0.0.2:445 shareA pvc-1": dir}
		r := probe(t, servers, st, "//10.0.0.1/dfs/multi/pvc-1", auth.Credentials{}, Options{Timeout: time.Second, Count: 2})
		d := r.DFS
		if d == nil || d.Error != "" || d.Link != `\10.0.0.1\dfs\multi` || r.Share != nil {
			t.Fatalf("dfs %+v share %+v", d, r.Share)
		}
		want := []ReferralReport{
			{Path: `\10.0.0.1\dfs`, Kind: "root", TTLSeconds: 300, Targets: []string{`\10.0.0.1\dfs`}},
			{Path: `\10.0.0.1\dfs\multi`, Kind: "link", TTLSeconds: 600, Targets: []string{`\10.0.0.2\shareA`, `\10.0.0.3\shareA`}},
		}
		if fmt.Sprint(d.Referrals) != fmt.Sprint(want) {
			t.Fatalf("referrals %+v, want %+v", d.Referrals, want)
		}
		if len(d.Targets) != 2 || d.Targets[0].Path != `\10.0.0.2\shareA\pvc-1` || !d.Targets[0].Server.Reachable ||
			d.Targets[0].Share.Status != ShareOK || d.Targets[0].Server.Health.State != "Healthy" {
			t.Fatalf("live target %+v", d.Targets)
		}
		if dead := d.Targets[1]; dead.Server.Reachable || dead.Share.Status != ShareSkipped || dead.Server.Health.State != "Unreachable" {
			t.Fatalf("dead target %+v", dead)
		}
		if r.Verdict != Degraded || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], `DFS target \10.0.0.3\shareA\pvc-1 does not answer`) {
			t.Fatalf("verdict %s %q", r.Verdict, r.Problems)
		}
		delete(servers, "10.0.0.2:445")
		r = probe(t, servers, st, "//10.0.0.1/dfs/multi/pvc-1", auth.Credentials{}, Options{Timeout: time.Second, Count: 2})
		if r.Verdict != Unreachable || len(r.DFS.Targets) != 2 || r.Problems[0] != `no DFS target of \10.0.0.1\dfs\multi answers` {
			t.Fatalf("every target down: verdict %s %q", r.Verdict, r.Problems)
		}
		r = probe(t, servers, shares{"10.0.0.1:445 dfs ": dir}, "//10.0.0.1/dfs", auth.Credentials{}, Options{Count: 1})
		if r.Verdict != Healthy || r.DFS == nil || len(r.DFS.Targets) != 1 || r.DFS.Targets[0].Path != `\10.0.0.1\dfs` ||
			len(r.DFS.Referrals) != 1 || r.DFS.Referrals[0].Kind != "root" {
			t.Fatalf("the root itself: verdict %s %q %+v", r.Verdict, r.Problems, r.DFS)
		}
	})
}

// TestJudgeReplicas: on a DFS link a path missing from one replica while
// another has it only degrades; missing from all is missing.
func TestJudgeReplicas(t *testing.T) {
	up := ServerReport{Address: "a:445", Reachable: true, Logon: LogonAnonymous, Health: HealthReport{State: "Healthy"}}
	target := func(status string) TargetReport {
		return TargetReport{Path: `\a\s\p`, Server: up, Share: ShareReport{Address: "a:445", Share: "s", Path: "p", Status: status}}
	}
	for _, tc := range []struct {
		name    string
		targets []TargetReport
		want    Verdict
	}{
		{"all there", []TargetReport{target(ShareOK), target(ShareOK)}, Healthy},
		{"one without", []TargetReport{target(ShareOK), target(SharePathMissing)}, Degraded},
		{"one denies", []TargetReport{target(ShareDenied), target(ShareOK)}, Degraded},
		{"none has it", []TargetReport{target(SharePathMissing), target(ShareMissing)}, Missing},
		{"denied and missing", []TargetReport{target(SharePathMissing), target(ShareDenied)}, Denied},
		{"a stat that hangs", []TargetReport{target(ShareUnreachable)}, Unreachable},
		{"an odd error", []TargetReport{target(ShareError)}, Degraded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := judge(Report{Server: up, DFS: &DFSReport{Link: `\a\s`, Targets: tc.targets}})
			if got != tc.want || (got == Healthy) != (len(problems) == 0) {
				t.Fatalf("verdict %s %q, want %s", got, problems, tc.want)
			}
		})
	}
	enc := up
	enc.Session, enc.Echo = &SessionReport{Encrypted: true}, EchoReport{Sent: 2}
	if v, problems := judge(Report{Server: enc}); v != Degraded || len(problems) != 2 || !strings.Contains(problems[1], "encrypts the whole session") {
		t.Fatalf("ECHOs lost on an encrypted session: %s %q", v, problems)
	}
	_, problems := judge(Report{Server: ServerReport{Address: "a:445", Reachable: true, Logon: LogonRejected, Error: "no",
		Health: HealthReport{State: "Degraded", Reason: "ServerSlow"}}, Share: &ShareReport{Status: SharePathMissing}})
	if len(problems) != 3 || !strings.Contains(problems[0], "refused the credentials") || !strings.Contains(problems[2], "ServerSlow") {
		t.Fatalf("problems not worst first: %q", problems)
	}
}
