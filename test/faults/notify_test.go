//go:build integration

package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/csi-smb/csi-smb/internal/testrun"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
	dirwatch "github.com/csi-smb/csi-smb/pkg/watch"
	"github.com/csi-smb/csi-smb/test/lab"
)

var labCreds = auth.Credentials{Username: lab.User, Password: lab.Password}

// notifyFixture is a base directory on the victim's share "share", made on
// the server's disk, with a prober and a Watcher on one store, the way the
// driver assembles them.
type notifyFixture struct {
	*dirwatch.Watcher
	probe *watch // the prober and its store
	base  string // relative to the share
	disk  string // the base directory on the server's disk
}

func newNotifyFixture(t *testing.T, o dirwatch.Options, names ...string) *notifyFixture {
	t.Helper()
	addr := victimIP + ":445"
	f := &notifyFixture{base: fmt.Sprintf("notify-%s-%d", t.Name(), time.Now().UnixNano())}
	f.base = filepath.Base(filepath.Clean("/" + f.base)) // subtest names carry slashes
	f.disk = filepath.Join(theLab.Dir, victim, "shares", "share", f.base)
	for _, n := range append([]string{""}, names...) {
		if err := os.MkdirAll(filepath.Join(f.disk, n), 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(f.disk, n), 0o777); err != nil { // past the umask: the share's user removes them
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.RemoveAll(f.disk) })
	f.probe = startWatch(t, addr, realDialer())
	f.probe.waitFor(t, addr, health.StateHealthy, time.Now(), 15*time.Second)
	pool := smb.NewPool(smb.Options{})
	dial := func(ctx context.Context, addr, share string, creds auth.Credentials) (dirwatch.Conn, error) {
		return smb.ProbeDialer{}.DialTree(ctx, addr, share, creds)
	}
	o.Role = "controller"
	f.Watcher = dirwatch.New(dial, smb.Dirs{Pool: pool}, f.probe.store, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- pool.Run(ctx) }()
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})
	return f
}

func (f *notifyFixture) target(name string) health.DirTarget {
	return health.DirTarget{Addr: victimIP + ":445", Share: "share", Dir: f.base, Name: name}
}

// waitDir polls the store until the directory's verdict satisfies ok,
// returning how long since start that took.
func (f *notifyFixture) waitDir(t *testing.T, name string, start time.Time, limit time.Duration, ok func(health.DirVerdict) bool) time.Duration {
	t.Helper()
	for time.Since(start) < limit {
		if v, _ := f.probe.store.Dir(f.target(name).Key()); ok(v) {
			return time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	v, _ := f.probe.store.Dir(f.target(name).Key())
	sv, _ := f.probe.store.Server(victimIP + ":445")
	t.Fatalf("%s: %+v after %v (server %v: %s; watch %+v)", name, v, limit, sv.State, sv.Message, f.watchState())
	return 0
}

func (f *notifyFixture) watchState() health.WatchState {
	return f.probe.store.Watches()[f.target("").WatchKey()]
}

func is(s health.DirState, renamedTo string) func(health.DirVerdict) bool {
	return func(v health.DirVerdict) bool { return v.Watching && v.State == s && v.RenamedTo == renamedTo }
}

// TestNotifyRemoveRenameRestore: directories removed, renamed and restored
// on the server's disk (out of band, as a cleanup script or a restore
// would) and over SMB by another client are seen by the watch.
func TestNotifyRemoveRenameRestore(t *testing.T) {
	f := newNotifyFixture(t, dirwatch.Options{}, "pvc-1", "pvc-2", "pvc-3")
	for _, n := range []string{"pvc-1", "pvc-2", "pvc-3", "pvc-4"} {
		t.Cleanup(f.Acquire(f.target(n), labCreds))
	}
	f.waitDir(t, "pvc-1", time.Now(), 15*time.Second, is(health.DirPresent, ""))
	f.waitDir(t, "pvc-4", time.Now(), time.Second, is(health.DirMissing, ""))
	var times []time.Duration
	step := func(what, name string, change func() error, want func(health.DirVerdict) bool) {
		start := time.Now()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		took := f.waitDir(t, name, start, 3*time.Second, want)
		times = append(times, took)
		fmt.Printf("RESULT notify %s: verdict after %v\n", what, took.Round(100*time.Microsecond))
	}
	step("removed on disk", "pvc-1", func() error { return os.RemoveAll(filepath.Join(f.disk, "pvc-1")) }, is(health.DirMissing, ""))
	step("renamed on disk", "pvc-2", func() error {
		return os.Rename(filepath.Join(f.disk, "pvc-2"), filepath.Join(f.disk, "pvc-2.trash"))
	}, is(health.DirMissing, "pvc-2.trash"))
	step("restored on disk", "pvc-1", func() error { return os.Mkdir(filepath.Join(f.disk, "pvc-1"), 0o777) }, is(health.DirPresent, ""))
	step("renamed back on disk", "pvc-2", func() error {
		return os.Rename(filepath.Join(f.disk, "pvc-2.trash"), filepath.Join(f.disk, "pvc-2"))
	}, is(health.DirPresent, ""))
	// Over SMB, from another session.
	pool := smb.NewPool(smb.Options{})
	testrun.Background(t, pool.Run) // closes its sessions when the test ends
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sh, release, err := pool.Share(ctx, victimIP, "share", labCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	step("removed over SMB", "pvc-3", func() error { return sh.Remove(ctx, f.base+"/pvc-3") }, is(health.DirMissing, ""))
	step("created over SMB", "pvc-4", func() error { return sh.Mkdir(ctx, f.base+"/pvc-4") }, is(health.DirPresent, ""))
	step("renamed over SMB", "pvc-4", func() error { return sh.Rename(ctx, f.base+"/pvc-4", f.base+"/pvc-4.old") }, is(health.DirMissing, "pvc-4.old"))
	ws := f.watchState()
	if ws.Removed != 2 || ws.Renamed != 2 || ws.Restored != 3 || ws.Losses != 0 {
		t.Errorf("watch totals %+v, want 2 removed, 2 renamed, 3 restored, no loss", ws)
	}
	fmt.Printf("RESULT notify removal-to-verdict over %d changes: %v\n", len(times), times)
}

// TestNotifyBurstOverflows: more changes at once than the notify buffer
// holds make Samba answer STATUS_NOTIFY_ENUM_DIR; the watch rescans and
// ends right. (A 256-byte buffer makes a 300-directory burst overflow; the
// driver asks for 16 KiB.)
func TestNotifyBurstOverflows(t *testing.T) {
	f := newNotifyFixture(t, dirwatch.Options{MaxOutput: 256}, "pvc-keep", "pvc-gone")
	t.Cleanup(f.Acquire(f.target("pvc-keep"), labCreds))
	t.Cleanup(f.Acquire(f.target("pvc-gone"), labCreds))
	f.waitDir(t, "pvc-gone", time.Now(), 15*time.Second, is(health.DirPresent, ""))
	for i := range 300 {
		if err := os.Mkdir(filepath.Join(f.disk, fmt.Sprintf("burst-%03d", i)), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.RemoveAll(filepath.Join(f.disk, "pvc-gone")); err != nil {
		t.Fatal(err)
	}
	f.waitDir(t, "pvc-gone", time.Now(), 5*time.Second, is(health.DirMissing, ""))
	f.waitDir(t, "pvc-keep", time.Now(), time.Second, is(health.DirPresent, ""))
	if ws := f.watchState(); ws.Rescans < 2 {
		t.Fatalf("no rescan after a 300-directory burst into a 256-byte buffer: %+v", ws)
	}
	fmt.Printf("RESULT notify burst: %+v\n", f.watchState())
}

// TestNotifyAcrossServerFaults: the server killed (the connection resets)
// and frozen (only the prober can tell) while a directory is removed: the
// watch goes down, comes back when the server does, and its rescan finds
// the change made while it was away.
func TestNotifyAcrossServerFaults(t *testing.T) {
	for _, c := range []struct{ name, breakIt, heal string }{{"killed", lab.ActKill, lab.ActStart}, {"frozen", lab.ActStop, lab.ActCont}} {
		t.Run(c.name, func(t *testing.T) {
			f := newNotifyFixture(t, dirwatch.Options{}, "pvc-1", "pvc-2")
			t.Cleanup(f.Acquire(f.target("pvc-1"), labCreds))
			t.Cleanup(f.Acquire(f.target("pvc-2"), labCreds))
			f.waitDir(t, "pvc-1", time.Now(), 15*time.Second, is(health.DirPresent, ""))
			start := time.Now()
			fault(t, c.breakIt, victim)
			healed := false
			defer func() {
				if !healed {
					fault(t, c.heal, victim)
				}
			}()
			lost := f.waitDir(t, "pvc-1", start, 15*time.Second, func(v health.DirVerdict) bool { return !v.Watching })
			if err := os.RemoveAll(filepath.Join(f.disk, "pvc-1")); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			fault(t, c.heal, victim)
			healed = true
			back := f.waitDir(t, "pvc-1", start, 30*time.Second, is(health.DirMissing, ""))
			f.waitDir(t, "pvc-2", time.Now(), time.Second, is(health.DirPresent, ""))
			ws := f.watchState()
			if ws.Losses != 1 || ws.Removed != 1 {
				t.Errorf("watch totals %+v, want 1 loss and the removal seen by the rescan", ws)
			}
			fmt.Printf("RESULT notify server %s: watch down after %v, back with the rescan %v after the server\n",
				c.name, lost.Round(time.Millisecond), back.Round(time.Millisecond))
		})
	}
}

// TestTreeConnAgainstSamba: the raw session: a missing directory, a notify
// cancelled with SMB2 CANCEL, and the connection still usable after.
func TestTreeConnAgainstSamba(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := smb.ProbeDialer{}.DialTree(ctx, victimIP+":445", "share", labCreds)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.OpenDir(ctx, "no-such-dir"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing directory: %v", err)
	}
	fid, err := c.OpenDir(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithTimeout(ctx, 500*time.Millisecond)
	start := time.Now()
	_, err = c.Notify(nctx, fid, wire.MaxNotifyOutput)
	ncancel()
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled notify: %v after %v", err, time.Since(start))
	}
	if err := c.CloseFile(ctx, fid); err != nil {
		t.Fatalf("close after a cancel: %v", err)
	}
	select {
	case <-c.Done():
		t.Fatal("the connection ended: Samba did not answer the CANCEL")
	default:
	}
}

// TestNotifyOnProtectedServers: Samba 4.17 refuses unsigned requests on a
// session when it requires signing (STATUS_ACCESS_DENIED, measured) and
// drops the connection on unencrypted ones when it requires encryption
// (measured), so the watch's CREATE, CHANGE_NOTIFY, CANCEL and CLOSE are
// signed, or encrypted, with the session's keys (pkg/smb/signing.go); the
// watch works end to end on both.
func TestNotifyOnProtectedServers(t *testing.T) {
	for _, c := range []struct{ name, conf string }{
		{"signing", "server signing = mandatory\n"},
		{"encryption", "smb encrypt = required\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			withServerConf(t, c.conf)
			f := newNotifyFixture(t, dirwatch.Options{}, "pvc-1")
			t.Cleanup(f.Acquire(f.target("pvc-1"), labCreds))
			f.waitDir(t, "pvc-1", time.Now(), 15*time.Second, is(health.DirPresent, ""))
			start := time.Now()
			if err := os.RemoveAll(filepath.Join(f.disk, "pvc-1")); err != nil {
				t.Fatal(err)
			}
			took := f.waitDir(t, "pvc-1", start, 3*time.Second, is(health.DirMissing, ""))
			fmt.Printf("RESULT notify on a server that requires %s: removal seen after %v\n", c.name, took)
			if ws := f.watchState(); !ws.Watching || ws.Losses != 0 {
				t.Fatalf("watch %+v", ws)
			}
		})
	}
}
