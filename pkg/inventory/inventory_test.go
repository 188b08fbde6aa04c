package inventory

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/internal/testrun"
	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type probes struct {
	mu   sync.Mutex
	refs map[string]int
}

func (p *probes) Acquire(addr string, _ auth.Credentials) func() {
	p.mu.Lock()
	p.refs[addr]++
	p.mu.Unlock()
	return func() { p.mu.Lock(); p.refs[addr]--; p.mu.Unlock() }
}

func vol(i int) volume.Volume {
	return volume.Volume{Source: volume.Source{Server: "srv", Share: "s"}, SubDir: fmt.Sprint("d", i),
		OnDelete: volume.OnDeleteDelete, UID: volume.UIDFor(fmt.Sprint(i))}
}

// TestNewVolumeIsCheckedAlone: a volume tracked while the inventory runs is
// checked at once, and only it; the others wait for their interval.
func TestNewVolumeIsCheckedAlone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		checked := map[string]int{}
		check := func(_ context.Context, v volume.Volume, _ auth.Credentials) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			checked[v.SubDir]++
			return v.SubDir != "d2", nil
		}
		store := health.NewStore()
		store.SetServer("srv:445", health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable})
		pr := &probes{refs: map[string]int{}}
		inv := New(check, pr, store, Options{CheckInterval: time.Minute})
		for i := range 3 {
			inv.Track(vol(i).ID(), vol(i), 1<<30, auth.Credentials{})
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- inv.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		synctest.Wait()
		inv.Track(vol(3).ID(), vol(3), 0, auth.Credentials{})
		synctest.Wait()
		mu.Lock()
		got := fmt.Sprint(checked)
		mu.Unlock()
		if want := "map[d0:1 d1:1 d2:1 d3:1]"; got != want {
			t.Fatalf("checks %s, want %s: the new volume alone", got, want)
		}
		if e, _ := inv.Get(vol(2).ID()); e.Verdict.Reason != ReasonDirMissing || e.Capacity != 1<<30 {
			t.Fatalf("missing directory: %+v", e)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		got = fmt.Sprint(checked)
		mu.Unlock()
		if want := "map[d0:2 d1:2 d2:2 d3:2]"; got != want {
			t.Fatalf("after the interval: %s, want %s", got, want)
		}
		for i := range 4 {
			inv.Forget(vol(i).ID())
		}
		if n := pr.refs["srv:445"]; n != 0 {
			t.Fatalf("%d probes held after every volume was forgotten", n)
		}
	})
}

func TestCombineDir(t *testing.T) {
	up := health.Verdict{State: health.StateHealthy}
	down := health.Verdict{State: health.StateUnreachable, Message: "refused"}
	slow := health.Verdict{State: health.StateDegraded, Reason: health.ReasonSlow}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		checked time.Time
		present bool
		err     error
		sv      health.Verdict
		reason  string
	}{
		{"healthy", now, true, nil, up, health.ReasonVolumeHealthy},
		{"server down wins", now, true, nil, down, ReasonUnreachable},
		{"directory gone", now, false, nil, up, ReasonDirMissing},
		{"never checked, error", time.Time{}, false, fmt.Errorf("access denied"), up, ReasonCannotCheck},
		{"slow server", now, true, nil, slow, health.ReasonSlow},
		{"not checked yet", time.Time{}, false, nil, up, health.ReasonNotProbed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v := CombineDir(tc.checked, tc.present, tc.err, tc.sv); v.Reason != tc.reason {
				t.Fatalf("CombineDir = %s (%s), want %s", v.Reason, v.Message, tc.reason)
			}
		})
	}
}

// TestDFSTargetsAreProbedAndReported: a DFS volume's targets are found at
// its first check, probed, and reported one by one; Forget releases them.
func TestDFSTargetsAreProbedAndReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := health.NewStore()
		store.SetServer("srv:445", health.Verdict{State: health.StateHealthy})
		store.SetServer("10.0.0.2:445", health.Verdict{State: health.StateHealthy})
		store.SetServer("10.0.0.3:445", health.Verdict{State: health.StateUnreachable, Message: "refused"})
		pr := &probes{refs: map[string]int{}}
		asked := 0
		inv := New(func(context.Context, volume.Volume, auth.Credentials) (bool, error) { return true, nil }, pr, store,
			Options{Targets: func(context.Context, volume.Volume, auth.Credentials) ([]string, error) {
				asked++
				return []string{"10.0.0.2:445", "10.0.0.3:445"}, nil
			}, CheckInterval: time.Minute})
		inv.Track(vol(0).ID(), vol(0), 0, auth.Credentials{})
		testrun.Background(t, inv.Run)
		synctest.Wait()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		e, _ := inv.Get(vol(0).ID())
		if asked != 1 || len(e.Targets) != 2 || e.Targets[1].Verdict.State != health.StateUnreachable {
			t.Fatalf("asked %d times, targets %+v", asked, e.Targets)
		}
		if pr.refs["10.0.0.2:445"] != 1 || pr.refs["10.0.0.3:445"] != 1 {
			t.Fatalf("probes %v", pr.refs)
		}
		inv.Forget(vol(0).ID())
		if pr.refs["10.0.0.2:445"] != 0 || pr.refs["10.0.0.3:445"] != 0 {
			t.Fatalf("probes %v after Forget", pr.refs)
		}
	})
}

// watches publishes directory verdicts into the store, as watch.Watcher does.
type watches struct {
	store *health.Store
	mu    sync.Mutex
	got   []health.DirTarget
}

func (w *watches) Acquire(t health.DirTarget, _ auth.Credentials) func() {
	w.mu.Lock()
	w.got = append(w.got, t)
	w.mu.Unlock()
	return func() { w.store.DeleteDir(t.Key()) }
}

// TestWatchedVolumesAreNotPolled: a volume whose directory watch stands is
// not polled, and the watch's verdicts (removed, renamed, restored) are
// its verdict at once; a lost watch brings the poll back.
func TestWatchedVolumesAreNotPolled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		polls := 0
		check := func(context.Context, volume.Volume, auth.Credentials) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			polls++
			return true, nil
		}
		store := health.NewStore()
		store.SetServer("srv:445", health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable})
		w := &watches{store: store}
		inv := New(check, &probes{refs: map[string]int{}}, store, Options{CheckInterval: time.Minute, Watches: w})
		v := vol(1)
		v.Source.Path = "base"
		inv.Track(v.ID(), v, 1<<30, auth.Credentials{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- inv.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		synctest.Wait()
		if len(w.got) != 1 || w.got[0] != (health.DirTarget{Addr: "srv:445", Share: "s", Dir: "base", Name: "d1"}) {
			t.Fatalf("watches %+v, want the volume's parent base and its name d1", w.got)
		}
		key := w.got[0].Key()
		verdict := func() health.VolumeVerdict { e, _ := inv.Get(v.ID()); return e.Verdict }
		store.SetDir(key, health.DirVerdict{State: health.DirPresent, Watching: true, At: time.Now()})
		store.SetDir(key, health.DirVerdict{State: health.DirMissing, Watching: true, At: time.Now()})
		if got := verdict(); got.State != health.StateUnreachable || got.Reason != ReasonDirMissing {
			t.Fatalf("removed: %+v", got)
		}
		store.SetDir(key, health.DirVerdict{State: health.DirMissing, RenamedTo: "d1.old", Watching: true, At: time.Now()})
		if got := verdict(); got.Reason != ReasonDirRenamed || got.Message != "the volume's directory was renamed on the share to d1.old" {
			t.Fatalf("renamed: %+v", got)
		}
		store.SetDir(key, health.DirVerdict{State: health.DirPresent, Watching: true, At: time.Now()})
		if got := verdict(); got.State != health.StateHealthy {
			t.Fatalf("restored: %+v", got)
		}
		mu.Lock()
		before := polls
		mu.Unlock()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		mu.Lock()
		if polls != before {
			t.Fatalf("%d polls of a watched volume in 10 min", polls-before)
		}
		mu.Unlock()
		store.SetDir(key, health.DirVerdict{State: health.DirPresent, Watching: false, At: time.Now()}) // the watch is lost
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if polls != before+1 {
			t.Fatalf("%d polls in the minute after the watch was lost, want 1", polls-before)
		}
	})
}
