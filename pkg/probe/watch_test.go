package probe

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// fakeWatchConn answers notifies from a script, one step per call; a step
// with block waits until the connection is closed or ctx ends.
type fakeWatchConn struct {
	steps   chan watchStep
	frozen  bool // opens after the first are never answered
	opens   int
	removed bool // opens after the first find no directory
	closed  chan struct{}
	once    sync.Once
	missing bool // OpenDir: no such directory
	tree    bool // the last notify asked for the subtree
}

type watchStep struct {
	events []wire.NotifyEvent
	err    error
}

func newFakeWatchConn() *fakeWatchConn {
	return &fakeWatchConn{steps: make(chan watchStep, 8), closed: make(chan struct{})}
}

func (c *fakeWatchConn) OpenDir(ctx context.Context, _ string) (wire.FileID, error) {
	c.opens++
	switch {
	case c.missing, c.removed && c.opens > 1:
		return wire.FileID{}, os.ErrNotExist
	case c.frozen && c.opens > 1:
		<-ctx.Done()
		return wire.FileID{}, ctx.Err()
	}
	return wire.FileID{1}, nil
}

func (c *fakeWatchConn) NotifyChanges(ctx context.Context, _ wire.FileID, _, filter uint32, tree bool) ([]wire.NotifyEvent, error) {
	c.tree = tree
	if filter&wire.NotifyFileName == 0 || filter&wire.NotifyDirName == 0 {
		return nil, errors.New("names not asked for")
	}
	select {
	case s := <-c.steps:
		return s.events, s.err
	case <-c.closed:
		return nil, smb.ErrConnClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *fakeWatchConn) CloseFile(context.Context, wire.FileID) error { return nil }

func (c *fakeWatchConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// runWatch runs Watch over conns (one per dial) and returns the kinds it
// emitted, joined, and its error, once ctx ends or Watch returns.
func runWatch(t *testing.T, ctx context.Context, opts WatchOptions, conns ...*fakeWatchConn) (string, []WatchEvent, error) {
	t.Helper()
	var mu sync.Mutex
	var got []WatchEvent
	dials := 0
	deps := Deps{DialTree: func(context.Context, string, string, auth.Credentials) (WatchConn, error) {
		mu.Lock()
		defer mu.Unlock()
		if dials >= len(conns) {
			return nil, smb.ErrUnreachable
		}
		dials++
		return conns[dials-1], nil
	}}
	err := Watch(ctx, ShareReport{Address: "10.0.0.1:445", Share: "s", Path: "base"}, auth.Credentials{}, opts, deps, func(e WatchEvent) {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	})
	mu.Lock()
	defer mu.Unlock()
	kinds := make([]string, len(got))
	for i, e := range got {
		kinds[i] = e.Kind
		if e.Name != "" {
			kinds[i] += ":" + e.Name
		}
	}
	return strings.Join(kinds, " "), got, err
}

func TestWatchStreamsEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeWatchConn()
		c.steps <- watchStep{events: []wire.NotifyEvent{{Action: wire.ActionAdded, Name: "a"}, {Action: wire.ActionModified, Name: "a"}}}
		c.steps <- watchStep{events: []wire.NotifyEvent{{Action: wire.ActionRenamedOldName, Name: "a"}, {Action: wire.ActionRenamedNewName, Name: "b"}}}
		c.steps <- watchStep{err: smb.ErrNotifyOverflow}
		c.steps <- watchStep{events: []wire.NotifyEvent{{Action: wire.ActionRemoved, Name: "b"}, {Action: 9, Name: "c"}}}
		c.steps <- watchStep{err: smb.ErrWatchedDirGone}
		kinds, evs, err := runWatch(t, t.Context(), WatchOptions{Recursive: true}, c)
		if !errors.Is(err, ErrWatchedDirGone) {
			t.Fatalf("Watch: %v", err)
		}
		if want := "watching:base added:a modified:a renamed-from:a renamed-to:b overflow removed:b action-0x9:c gone"; kinds != want {
			t.Errorf("events\n %s\nwant\n %s", kinds, want)
		}
		if !c.tree {
			t.Error("Recursive did not ask for the subtree")
		}
		if evs[0].Note != "" || evs[0].Time.IsZero() {
			t.Errorf("first watching line: %+v", evs[0])
		}
		select {
		case <-c.closed:
		default:
			t.Error("connection left open")
		}
	})
}

// TestWatchReconnectsAndSaysSo: a connection that ends is reported lost,
// retried after Retry, and the watch that stands again says changes in
// between were not seen.
func TestWatchReconnectsAndSaysSo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := newFakeWatchConn(), newFakeWatchConn()
		c1.steps <- watchStep{err: smb.ErrConnClosed}
		c2.steps <- watchStep{events: []wire.NotifyEvent{{Action: wire.ActionRemoved, Name: "x"}}}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		start := time.Now()
		kinds, evs, err := runWatch(t, ctx, WatchOptions{Retry: 3 * time.Second}, c1, c2)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Watch: %v", err)
		}
		if want := "watching:base lost watching:base removed:x"; !strings.HasPrefix(kinds, want) {
			t.Fatalf("events %s, want %s, then lost lines while the server is away", kinds, want)
		}
		if d := evs[2].Time.Sub(start); d != 3*time.Second {
			t.Errorf("watching again after %v, want the 3 s retry", d)
		}
		if !strings.Contains(evs[2].Note, "not seen") {
			t.Errorf("second watching line does not say changes were missed: %+v", evs[2])
		}
	})
}

// TestWatchEndsOnAFrozenServer: an unanswered keepalive closes the
// connection, which ends the pending notify: a quiet directory is not a
// live server.
func TestWatchEndsOnAFrozenServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeWatchConn()
		c.frozen = true
		ctx, cancel := context.WithTimeout(t.Context(), 12*time.Second)
		defer cancel()
		start := time.Now()
		kinds, evs, _ := runWatch(t, ctx, WatchOptions{KeepAlive: 5 * time.Second, Timeout: 2 * time.Second, Retry: time.Hour}, c)
		if !strings.HasPrefix(kinds, "watching:base lost") {
			t.Fatalf("events %s", kinds)
		}
		if d := evs[1].Time.Sub(start); d != 7*time.Second {
			t.Errorf("lost after %v, want 7 s (5 s keepalive + 2 s timeout)", d)
		}
		if !strings.Contains(evs[1].Note, "did not answer") {
			t.Errorf("lost line: %+v", evs[1])
		}
	})
}

// TestWatchSeesTheDirectoryRemovedOnDisk: no notify ends when the
// directory goes on the server's own disk; the keepalive's open finds it
// gone.
func TestWatchSeesTheDirectoryRemovedOnDisk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeWatchConn()
		c.removed = true
		start := time.Now()
		kinds, evs, err := runWatch(t, t.Context(), WatchOptions{KeepAlive: time.Second}, c)
		if !errors.Is(err, ErrWatchedDirGone) || kinds != "watching:base gone" {
			t.Fatalf("%s %v", kinds, err)
		}
		if d := evs[1].Time.Sub(start); d != time.Second {
			t.Errorf("gone after %v, want the 1 s keepalive", d)
		}
	})
}

func TestWatchMissingDirectory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeWatchConn()
		c.missing = true
		kinds, _, err := runWatch(t, t.Context(), WatchOptions{}, c)
		if !errors.Is(err, ErrWatchedDirGone) || kinds != "gone" {
			t.Fatalf("%s %v", kinds, err)
		}
	})
}

func TestWatchTarget(t *testing.T) {
	ok := ShareReport{Address: "b:445", Share: "s", Status: ShareOK}
	for _, c := range []struct {
		name string
		r    Report
		want bool
	}{
		{"share", Report{Share: &ok}, true},
		{"path missing", Report{Share: &ShareReport{Status: SharePathMissing}}, false},
		{"dfs second target", Report{DFS: &DFSReport{Targets: []TargetReport{{Share: ShareReport{Status: ShareUnreachable}}, {Share: ok}}}}, true},
		{"dfs none", Report{DFS: &DFSReport{Targets: []TargetReport{{Share: ShareReport{Status: ShareUnreachable}}}}}, false},
		{"unreachable", Report{}, false},
	} {
		got, found := c.r.WatchTarget()
		if found != c.want || (found && got != ok) {
			t.Errorf("%s: %+v %v", c.name, got, found)
		}
	}
}
