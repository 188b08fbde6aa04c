package watch

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// share is a fake server: a directory of names, and the pending notifies
// of the connections watching it.
type share struct {
	mu      sync.Mutex
	names   map[string]bool
	conns   []*conn
	dials   int
	refuse  bool
	encrypt bool // the server requires encryption: dials fail with ErrEncrypted
	lists   int
	lookups int
	gate    chan struct{} // when set, a lookup waits for it
}

type conn struct {
	s      *share
	events chan []wire.NotifyEvent
	errs   chan error
	closed chan struct{}
	once   sync.Once
}

func (s *share) dial(_ context.Context, _, _ string, _ auth.Credentials) (Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dials++
	if s.refuse {
		return nil, smb.ErrUnreachable
	}
	if s.encrypt {
		return nil, smb.ErrEncrypted
	}
	c := &conn{s: s, events: make(chan []wire.NotifyEvent, 16), errs: make(chan error, 1), closed: make(chan struct{})}
	s.conns = append(s.conns, c)
	return c, nil
}

func (c *conn) OpenDir(context.Context, string) (wire.FileID, error) { return wire.FileID{1}, nil }
func (c *conn) CloseFile(context.Context, wire.FileID) error         { return nil }
func (c *conn) Close() error                                         { c.once.Do(func() { close(c.closed) }); return nil }
func (c *conn) Notify(ctx context.Context, _ wire.FileID, _ uint32) ([]wire.NotifyEvent, error) {
	select {
	case ev := <-c.events:
		return ev, nil
	case err := <-c.errs:
		return nil, err
	case <-c.closed:
		return nil, smb.ErrConnClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *share) List(context.Context, string, string, string, auth.Credentials) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	var out []string
	for n := range s.names {
		out = append(out, n)
	}
	return out, nil
}

func (s *share) Exists(_ context.Context, _, _, p string, _ auth.Credentials) (bool, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	return s.names[path.Base(p)], nil
}

// change applies a change on the server and tells the live connection.
func (s *share) change(ev ...wire.NotifyEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range ev {
		switch e.Action {
		case wire.ActionAdded, wire.ActionRenamedNewName:
			s.names[e.Name] = true
		default:
			delete(s.names, e.Name)
		}
	}
	s.conns[len(s.conns)-1].events <- ev
}

func (s *share) last() *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[len(s.conns)-1]
}

var base = health.DirTarget{Addr: "10.0.0.2:445", Share: "share", Dir: "base"}

func target(name string) health.DirTarget { t := base; t.Name = name; return t }

func start(t *testing.T, s *share) (*health.Store, *Watcher, func()) {
	t.Helper()
	store := health.NewStore()
	w := New(s.dial, s, store, Options{Role: "controller"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	return store, w, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// watchingOne runs a watcher with pvc-1 on the server, watched, until the
// test ends. Call it in a synctest bubble.
func watchingOne(t *testing.T) (*share, *health.Store) {
	t.Helper()
	s := &share{names: map[string]bool{"pvc-1": true}}
	store, w, stop := start(t, s)
	t.Cleanup(stop)
	t.Cleanup(w.Acquire(target("pvc-1"), auth.Credentials{}))
	synctest.Wait()
	return s, store
}

func dirOf(t *testing.T, store *health.Store, name string) health.DirVerdict {
	t.Helper()
	v, ok := store.Dir(target(name).Key())
	if !ok {
		t.Fatalf("%s: not in the store", name)
	}
	return v
}

func TestWatchRemoveRenameRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &share{names: map[string]bool{"pvc-1": true, "pvc-2": true}}
		store, w, stop := start(t, s)
		defer stop()
		for _, n := range []string{"pvc-1", "pvc-2", "pvc-3"} {
			defer w.Acquire(target(n), auth.Credentials{Username: "u"})()
		}
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirPresent || !v.Watching {
			t.Fatalf("pvc-1 after the listing: %+v", v)
		}
		if v := dirOf(t, store, "pvc-3"); v.State != health.DirMissing {
			t.Fatalf("pvc-3 never existed: %+v", v)
		}
		s.change(wire.NotifyEvent{Action: wire.ActionRemoved, Name: "pvc-1"})
		s.change(wire.NotifyEvent{Action: wire.ActionRenamedOldName, Name: "pvc-2"}, wire.NotifyEvent{Action: wire.ActionRenamedNewName, Name: "pvc-2.old"})
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirMissing || v.RenamedTo != "" {
			t.Fatalf("pvc-1 removed: %+v", v)
		}
		if v := dirOf(t, store, "pvc-2"); v.State != health.DirMissing || v.RenamedTo != "pvc-2.old" {
			t.Fatalf("pvc-2 renamed: %+v", v)
		}
		s.change(wire.NotifyEvent{Action: wire.ActionRenamedOldName, Name: "pvc-2.old"}, wire.NotifyEvent{Action: wire.ActionRenamedNewName, Name: "pvc-2"})
		s.change(wire.NotifyEvent{Action: wire.ActionAdded, Name: "pvc-1"}, wire.NotifyEvent{Action: wire.ActionModified, Name: "pvc-1"},
			wire.NotifyEvent{Action: wire.ActionRemoved, Name: "pvc-1/file"})
		synctest.Wait()
		for _, n := range []string{"pvc-1", "pvc-2"} {
			if v := dirOf(t, store, n); v.State != health.DirPresent || v.RenamedTo != "" {
				t.Fatalf("%s restored: %+v", n, v)
			}
		}
		ws := store.Watches()[base.WatchKey()]
		if !ws.Watching || ws.Removed != 1 || ws.Renamed != 1 || ws.Restored != 2 || ws.Rescans != 1 || ws.Role != "controller" {
			t.Fatalf("watch totals %+v", ws)
		}
	})
}

func TestWatchOverflowRescans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, store := watchingOne(t)
		s.mu.Lock()
		delete(s.names, "pvc-1") // the server dropped this event
		s.mu.Unlock()
		s.last().errs <- smb.ErrNotifyOverflow
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirMissing || !v.Watching {
			t.Fatalf("after the rescan: %+v", v)
		}
		if ws := store.Watches()[base.WatchKey()]; ws.Rescans != 2 || ws.Removed != 1 || ws.Losses != 0 {
			t.Fatalf("watch totals %+v", ws)
		}
	})
}

func TestWatchReconnectsAndRescans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, store := watchingOne(t)
		s.mu.Lock()
		s.refuse = true
		delete(s.names, "pvc-1") // removed while the server was away
		s.mu.Unlock()
		_ = s.last().Close() // the server is killed
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirPresent || v.Watching {
			t.Fatalf("while the watch is down: %+v (want the last state, not watching)", v)
		}
		if ws := store.Watches()[base.WatchKey()]; ws.Watching || ws.Losses != 1 {
			t.Fatalf("lost watch: %+v", ws)
		}
		time.Sleep(10 * time.Second) // backoff: 0.5 + 1 + 2 + 4 s of refused dials
		s.mu.Lock()
		s.refuse = false
		dials := s.dials
		s.mu.Unlock()
		if dials < 4 || dials > 6 {
			t.Fatalf("%d dials in 10 s of backoff", dials)
		}
		store.SetServer(base.Addr, health.Verdict{State: health.StateHealthy}) // the prober sees it back: redial now
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirMissing || !v.Watching {
			t.Fatalf("after the reconnect's rescan: %+v", v)
		}
	})
}

func TestWatchEndsWhenTheProberFindsTheServerUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, store := watchingOne(t)
		first := s.last()
		store.SetServer(base.Addr, health.Verdict{State: health.StateUnreachable}) // frozen: the notify alone would wait forever
		synctest.Wait()
		if ws := store.Watches()[base.WatchKey()]; ws.Watching || ws.Losses != 1 {
			t.Fatalf("watch on an unreachable server: %+v", ws)
		}
		select {
		case <-first.closed:
		default:
			t.Fatal("the connection to the unreachable server is still open")
		}
	})
}

func TestWatchLooksUpNamesAcquiredLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &share{names: map[string]bool{"pvc-1": true, "pvc-9": true}}
		store, w, stop := start(t, s)
		defer stop()
		defer w.Acquire(target("pvc-1"), auth.Credentials{})()
		synctest.Wait()
		defer w.Acquire(target("pvc-9"), auth.Credentials{})()
		defer w.Acquire(target("pvc-8"), auth.Credentials{})()
		synctest.Wait()
		if v := dirOf(t, store, "pvc-9"); v.State != health.DirPresent {
			t.Fatalf("pvc-9: %+v", v)
		}
		if v := dirOf(t, store, "pvc-8"); v.State != health.DirMissing {
			t.Fatalf("pvc-8: %+v", v)
		}
		s.mu.Lock()
		lists, lookups := s.lists, s.lookups
		s.mu.Unlock()
		if lists != 1 || lookups != 2 {
			t.Fatalf("%d listings and %d lookups, want 1 and 2", lists, lookups)
		}
	})
}

func TestReleaseForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &share{names: map[string]bool{"pvc-1": true}}
		store, w, stop := start(t, s)
		defer stop()
		r1 := w.Acquire(target("pvc-1"), auth.Credentials{})
		r2 := w.Acquire(target("pvc-1"), auth.Credentials{})
		synctest.Wait()
		r1()
		if _, ok := store.Dir(target("pvc-1").Key()); !ok {
			t.Fatal("released while still wanted")
		}
		r2()
		r2() // twice is harmless
		synctest.Wait()
		if _, ok := store.Dir(target("pvc-1").Key()); ok || len(store.Watches()) != 0 {
			t.Fatal("not forgotten")
		}
		select {
		case <-s.last().closed:
		default:
			t.Fatal("connection left open")
		}
		if !slices.Equal([]string{"//10.0.0.2:445/share/base/pvc-1", "//10.0.0.2:445/share/pvc-1"},
			[]string{target("pvc-1").Key(), health.DirTarget{Addr: base.Addr, Share: "share", Name: "pvc-1"}.Key()}) {
			t.Fatal("keys")
		}
	})
}

func TestWatchListsAgainRatherThanManyLookups(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &share{names: map[string]bool{"pvc-0": true}, gate: make(chan struct{})}
		store, w, stop := start(t, s)
		defer stop()
		defer w.Acquire(target("pvc-0"), auth.Credentials{})()
		synctest.Wait()
		defer w.Acquire(target("first"), auth.Credentials{})() // looked up alone; the lookup waits at the gate
		synctest.Wait()
		for i := range maxLookups + 1 { // these pile up meanwhile
			defer w.Acquire(target(fmt.Sprint("new-", i)), auth.Credentials{})()
		}
		close(s.gate)
		synctest.Wait()
		s.mu.Lock()
		lists, lookups := s.lists, s.lookups
		s.mu.Unlock()
		if lists != 2 || lookups != 1 {
			t.Fatalf("%d listings and %d lookups, want 2 and 1: %d names waiting are listed, not looked up", lists, lookups, maxLookups+1)
		}
		if v := dirOf(t, store, "new-3"); v.State != health.DirMissing {
			t.Fatalf("new-3: %+v", v)
		}
	})
}

// TestWatchOnAServerThatRequiresEncryption: the watch cannot be set up;
// that is said (unsupported, the volumes polled) and is not a loss, and
// when the server no longer requires it the watch stands.
func TestWatchOnAServerThatRequiresEncryption(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &share{names: map[string]bool{"pvc-1": true}, encrypt: true}
		store, w, stop := start(t, s)
		defer stop()
		defer w.Acquire(target("pvc-1"), auth.Credentials{})()
		time.Sleep(10 * time.Second)
		ws := store.Watches()[base.WatchKey()]
		if ws.Watching || !ws.Unsupported || ws.Losses != 0 || !strings.Contains(ws.Message, "encryption") {
			t.Fatalf("watch on an encrypted server: %+v", ws)
		}
		if v, ok := store.Dir(target("pvc-1").Key()); ok && v.Watching {
			t.Fatalf("pvc-1 said watched: %+v", v)
		}
		s.mu.Lock()
		s.encrypt = false
		s.mu.Unlock()
		store.SetServer(base.Addr, health.Verdict{State: health.StateHealthy})
		synctest.Wait()
		if ws := store.Watches()[base.WatchKey()]; !ws.Watching || ws.Unsupported {
			t.Fatalf("after the server stopped requiring encryption: %+v", ws)
		}
	})
}

// TestRenameAcrossTwoAnswers: Samba can end one notify answer with a
// rename's OLD_NAME and start the next with its NEW_NAME; that is still a
// rename. An OLD_NAME no NEW_NAME follows counts as the name gone.
func TestRenameAcrossTwoAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, store := watchingOne(t)
		s.change(wire.NotifyEvent{Action: wire.ActionRenamedOldName, Name: "pvc-1"})
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirPresent {
			t.Fatalf("before the NEW_NAME: %+v (the rename's first half must wait)", v)
		}
		time.Sleep(50 * time.Millisecond)
		s.change(wire.NotifyEvent{Action: wire.ActionRenamedNewName, Name: "pvc-1.old"})
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirMissing || v.RenamedTo != "pvc-1.old" {
			t.Fatalf("after the NEW_NAME: %+v", v)
		}
		s.change(wire.NotifyEvent{Action: wire.ActionRenamedNewName, Name: "pvc-1"}) // back
		synctest.Wait()
		s.change(wire.NotifyEvent{Action: wire.ActionRenamedOldName, Name: "pvc-1"}) // moved out of the directory
		time.Sleep(renamePairWait)
		synctest.Wait()
		if v := dirOf(t, store, "pvc-1"); v.State != health.DirMissing || v.RenamedTo != "" {
			t.Fatalf("an OLD_NAME alone: %+v", v)
		}
		if ws := store.Watches()[base.WatchKey()]; ws.Renamed != 1 || ws.Removed != 1 || ws.Restored != 1 {
			t.Fatalf("totals %+v, want 1 renamed, 1 removed, 1 restored", ws)
		}
	})
}
