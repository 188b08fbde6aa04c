package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csi-smb/csi-smb/internal/smbresponder"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/probe"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

const probePassword = "Pw-Cli-Probe-8z"

// lab is an in-process stand-in for SMB servers: host:port -> responder
// (over net.Pipe), and the directories that exist on their shares.
type lab struct {
	ctx     context.Context
	servers map[string]*smbresponder.Server
	dirs    map[string]bool // "addr share path"
}

func (l *lab) deps() probe.Deps {
	return probe.Deps{
		Dial: smbresponder.Network(l.servers).Dial(l.ctx),
		Stat: func(_ context.Context, addr, share, path string, creds auth.Credentials) (smb.ShareStat, error) {
			if creds.Username == "bob" {
				return smb.ShareStat{}, fmt.Errorf("logon: %w", smb.ErrAuth)
			}
			if l.dirs[addr+" "+share+" "+path] {
				return smb.ShareStat{Info: dirInfo{}}, nil
			}
			return smb.ShareStat{}, fmt.Errorf("stat %q: %w", path, os.ErrNotExist)
		},
	}
}

type dirInfo struct{ fs.FileInfo }

func (dirInfo) IsDir() bool { return true }

// run runs csi-smb with args in a bubble against l, with env as the
// process environment.
func (l *lab) run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Run(context.Background(), args, Env{Stdout: &out, Stderr: &errb, Probe: l.deps(),
		Getenv: func(k string) string { return env[k] }})
	all := out.String() + errb.String()
	if strings.Contains(all, probePassword) {
		t.Fatalf("the output carries the password:\n%s", all)
	}
	return code, out.String(), errb.String()
}

func newLab(ctx context.Context) *lab {
	return &lab{ctx: ctx, dirs: map[string]bool{"srv:445 share vols": true, "10.0.0.2:445 shareA vols": true},
		servers: map[string]*smbresponder.Server{
			"srv:445":      smbresponder.New(smbresponder.Options{Logon: func(u string) bool { return u != "bob" }}),
			"10.0.0.1:445": smbresponder.New(smbresponder.Options{Referral: smbresponder.LabNamespace}),
			"10.0.0.2:445": smbresponder.New(smbresponder.Options{}),
		}}
}

func credsFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "creds")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProbeExitCodes: each documented exit code, from what the probe saw.
func TestProbeExitCodes(t *testing.T) {
	good := "username=alice\npassword=" + probePassword + "\n"
	for _, tc := range []struct {
		name string
		env  map[string]string
		args func(t *testing.T) []string
		want int
		says string // on stdout (the verdict) or stderr (usage)
	}{
		{"healthy, credentials from a file", nil, func(t *testing.T) []string {
			return []string{"--credentials", credsFile(t, good), "//srv/share/vols"}
		}, ExitHealthy, "verdict      healthy (exit 0)"},
		{"healthy, from the environment, flags after the target", map[string]string{EnvUsername: `CORP\alice`, EnvPassword: probePassword}, func(*testing.T) []string {
			return []string{"//srv/share/vols", "--count", "2"}
		}, ExitHealthy, `as CORP\alice (credentials: environment)`},
		{"a DFS target down", nil, func(*testing.T) []string { return []string{"//10.0.0.1/dfs/multi/vols"} }, ExitDegraded, "verdict      degraded (exit 1)"},
		{"path missing", nil, func(*testing.T) []string { return []string{"//srv/share/gone"} }, ExitUnreachable, `"gone" does not exist on \\srv\share`},
		{"unreachable", nil, func(*testing.T) []string { return []string{"//nowhere/share"} }, ExitUnreachable, "verdict      unreachable (exit 2)"},
		{"credentials refused", map[string]string{EnvUsername: "bob", EnvPassword: probePassword}, func(*testing.T) []string {
			return []string{"//srv/share/vols"}
		}, ExitDenied, "credentials REFUSED (probed anonymously instead)"},
		{"bad credentials file", nil, func(t *testing.T) []string {
			return []string{"--credentials", credsFile(t, "username=alice\n"+probePassword+"\n"), "//srv/share"}
		}, ExitUsage, "line 2: no '='"},
		{"missing credentials file", nil, func(t *testing.T) []string {
			return []string{"--credentials", filepath.Join(t.TempDir(), "none"), "//srv/share"}
		}, ExitUsage, "bad credentials file"},
		{"password without user", map[string]string{EnvPassword: probePassword}, func(*testing.T) []string { return []string{"//srv/share"} }, ExitUsage, "without SMB_USERNAME"},
		{"no target", nil, func(*testing.T) []string { return nil }, ExitUsage, "want one //server/share[/path]"},
		{"two targets", nil, func(*testing.T) []string { return []string{"//a/b", "//c/d"} }, ExitUsage, "want one"},
		{"bad target", nil, func(*testing.T) []string { return []string{"srv/share"} }, ExitUsage, "must start with //server/share"},
		{"bad count", nil, func(*testing.T) []string { return []string{"--count", "0", "//srv/share"} }, ExitUsage, "--count must be 1 to 1000"},
		{"unknown flag", nil, func(*testing.T) []string { return []string{"--password", "x", "//srv/share"} }, ExitUsage, "flag provided but not defined: -password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"probe", "--interval", "10ms"}, tc.args(t)...)
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				code, out, errs := newLab(ctx).run(t, tc.env, args...)
				if code != tc.want || !strings.Contains(out+errs, tc.says) {
					t.Fatalf("exit %d, want %d saying %q; stdout:\n%s\nstderr:\n%s", code, tc.want, tc.says, out, errs)
				}
			})
		})
	}
}

// TestProbeText: the shape of the human output for a DFS path.
func TestProbeText(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		code, out, _ := newLab(ctx).run(t, nil, "probe", "--count", "3", "//10.0.0.1/dfs/multi/vols")
		if code != ExitDegraded {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		want := []string{
			`^probe        //10\.0\.0\.1/dfs/multi/vols as anonymous \(credentials: none\), \S+Z$`,
			`^server       10\.0\.0\.1:445 answers; logon anonymous$`,
			`^  session    SMB 2\.1; signing not required by the server, session unsigned, 0 of 4 setup answers signed; encryption not offered, session not encrypted; an anonymous \(null\) session$`,
			`^  echo       3 of 3 answered: [0-9.]+ [0-9.]+ [0-9.]+ ms; srtt [0-9.]+ ms$`,
			`^  health     Healthy \(ServerReachable\): answering ECHO$`,
			`^dfs          link \\10\.0\.0\.1\\dfs\\multi: 2 storage target\(s\)$`,
			`^  referral   \\10\.0\.0\.1\\dfs: root, ttl 300s -> \\10\.0\.0\.1\\dfs$`,
			`^  referral   \\10\.0\.0\.1\\dfs\\multi: link, ttl 600s -> \\10\.0\.0\.2\\shareA, \\10\.0\.0\.3\\shareA$`,
			`^  target 1   \\10\.0\.0\.2\\shareA\\vols$`,
			`^    server   10\.0\.0\.2:445 answers; logon anonymous$`,
			`^    share    \\\\10\.0\.0\.2\\shareA path "vols": ok$`,
			`^  target 2   \\10\.0\.0\.3\\shareA\\vols$`,
			`^    server   10\.0\.0\.3:445 does not answer: connect to 10\.0\.0\.3:445: .*connection refused$`,
			`^    health   Unreachable \(ServerUnreachable\): 2 probes failed in a row`,
			`^verdict      degraded \(exit 1\) after \d+ ms$`,
			`^             - DFS target \\10\.0\.0\.3\\shareA\\vols does not answer: `,
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		i := 0
		for _, l := range lines {
			if i < len(want) && regexp.MustCompile(want[i]).MatchString(l) {
				i++
			}
		}
		if i != len(want) {
			t.Fatalf("no line matches %q (in order); output:\n%s", want[i], out)
		}
	})
}

// TestProbeJSON: the documented JSON shape, as a script reads it.
func TestProbeJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		code, out, _ := newLab(ctx).run(t, map[string]string{EnvUsername: "alice", EnvPassword: probePassword, EnvDomain: "CORP"},
			"probe", "--json", "--count", "2", "--timeout", "2s", "//srv/share/gone")
		if code != ExitUnreachable {
			t.Fatalf("exit %d:\n%s", code, out)
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		for _, k := range []string{"version", "target", "time", "tookMs", "credentials", "verdict", "problems", "server", "dfs", "share"} {
			if _, ok := r[k]; !ok {
				t.Errorf("no %q in %s", k, out)
			}
		}
		var rep probe.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Version != 1 || rep.Verdict != probe.Missing || rep.Credentials.User != `CORP\alice` || rep.Credentials.Source != "environment" ||
			rep.Server.Echo.Sent != 2 || rep.Server.Session.Dialect != "2.1" || rep.DFS != nil || rep.Share.Status != probe.SharePathMissing {
			t.Fatalf("report %+v", rep)
		}
		if rep.Time.IsZero() || time.Since(rep.Time) < 0 {
			t.Fatalf("time %v", rep.Time)
		}
	})
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"probe", "status"} {
		var out bytes.Buffer
		if code := Run(context.Background(), []string{cmd, "--help"}, Env{Stdout: &out}); code != 0 {
			t.Fatalf("%s --help: exit %d", cmd, code)
		}
		for _, s := range []string{"Usage: csi-smb " + cmd, "Exit codes:", "  0  ", "  1  ", "  2  ", "  3  ", "-json", "-timeout"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("%s --help does not say %q:\n%s", cmd, s, out.String())
			}
		}
	}
	if code := Run(context.Background(), []string{"frobnicate"}, Env{}); code != ExitUsage || IsCommand("frobnicate") || !IsCommand("probe") {
		t.Fatalf("unknown subcommand: exit %d", code)
	}
}

// scriptConn is a watch connection that answers notifies from a script
// and then waits for ctx.
type scriptConn struct{ steps []watchAnswer }

type watchAnswer struct {
	events []wire.NotifyEvent
	err    error
}

func (c *scriptConn) OpenDir(context.Context, string) (wire.FileID, error) { return wire.FileID{}, nil }
func (c *scriptConn) CloseFile(context.Context, wire.FileID) error         { return nil }
func (c *scriptConn) Close() error                                         { return nil }
func (c *scriptConn) NotifyChanges(ctx context.Context, _ wire.FileID, _, _ uint32, _ bool) ([]wire.NotifyEvent, error) {
	if len(c.steps) == 0 {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s := c.steps[0]
	c.steps = c.steps[1:]
	return s.events, s.err
}

// TestProbeWatch: --watch prints the report, then a line per change, and
// ends with the report's code after --watch-for, or 2 when the directory
// goes; --json makes every line one JSON object.
func TestProbeWatch(t *testing.T) {
	events := []wire.NotifyEvent{{Action: wire.ActionAdded, Name: "pvc-1"}, {Action: wire.ActionRenamedOldName, Name: "pvc-1"}, {Action: wire.ActionRenamedNewName, Name: "pvc-1.old"}}
	for _, tc := range []struct {
		name  string
		args  []string
		steps []watchAnswer
		want  int
		lines []string // regexps, in order, after the report
	}{
		{"until --watch-for", []string{"--watch", "--watch-for", "10s", "//srv/share/vols"}, []watchAnswer{{events: events}, {err: smb.ErrNotifyOverflow}}, ExitHealthy, []string{
			`^2000-01-01T00:00:00\.000Z watching     vols$`,
			`^2000-01-01T00:00:00\.000Z added        pvc-1$`,
			`^2000-01-01T00:00:00\.000Z renamed-from pvc-1$`,
			`^2000-01-01T00:00:00\.000Z renamed-to   pvc-1\.old$`,
			`^2000-01-01T00:00:00\.000Z overflow -- the server dropped changes`,
		}},
		{"directory removed", []string{"--watch", "//srv/share/vols"}, []watchAnswer{{err: smb.ErrWatchedDirGone}}, ExitUnreachable, []string{
			`watching     vols$`, `gone -- the directory "vols" is not on \\\\srv\\share`,
		}},
		{"json lines", []string{"--watch", "--json", "--watch-for", "1s", "//srv/share/vols"}, []watchAnswer{{events: events[:1]}}, ExitHealthy, []string{
			`^{"time":"2000-01-01T00:00:00Z","kind":"watching","name":"vols"}$`,
			`^{"time":"2000-01-01T00:00:00Z","kind":"added","name":"pvc-1"}$`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				l := newLab(ctx)
				deps := l.deps()
				deps.Now = func() time.Time { return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }
				deps.DialTree = func(context.Context, string, string, auth.Credentials) (probe.WatchConn, error) {
					return &scriptConn{steps: tc.steps}, nil
				}
				var out, errb bytes.Buffer
				code := Run(ctx, append([]string{"probe", "--interval", "10ms", "--count", "2"}, tc.args...), Env{Stdout: &out, Stderr: &errb, Probe: deps,
					Getenv: func(string) string { return "" }})
				if code != tc.want {
					t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.want, out.String(), errb.String())
				}
				lines := strings.Split(strings.TrimSpace(out.String()), "\n")
				if strings.Contains(tc.name, "json") {
					var r probe.Report
					if err := json.Unmarshal([]byte(lines[0]), &r); err != nil || r.Verdict != probe.Healthy {
						t.Fatalf("first line is not the report: %v %q", err, lines[0])
					}
				}
				tail := lines[len(lines)-len(tc.lines):]
				for i, re := range tc.lines {
					if !regexp.MustCompile(re).MatchString(tail[i]) {
						t.Errorf("line %d after the report: %q, want /%s/", i, tail[i], re)
					}
				}
			})
		})
	}
}

func TestProbeWatchUsage(t *testing.T) {
	for _, args := range [][]string{{"--recursive", "//srv/share"}, {"--watch-for", "1s", "//srv/share"}, {"--watch", "--keepalive", "0s", "//srv/share"}} {
		var errb bytes.Buffer
		if code := Run(context.Background(), append([]string{"probe"}, args...), Env{Stderr: &errb}); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errb.String())
		}
	}
}
