package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/mount"

	"github.com/csi-smb/csi-smb/internal/testrun"
)

func TestClassifyStat(t *testing.T) {
	pe := func(e error) mount.StatResult { return mount.StatResult{Err: &os.PathError{Op: "statfs", Err: e}} }
	tests := []struct {
		name   string
		res    mount.StatResult
		err    error
		ok     bool
		reason string
	}{
		{"answered", mount.StatResult{}, nil, true, ReasonMountOK},
		{"hung", mount.StatResult{}, mount.ErrStatTimeout, false, ReasonMountStalled},
		{"host down", pe(syscall.EHOSTDOWN), nil, false, ReasonHostDown},
		{"out of credits, 5.x kernels", pe(syscall.Errno(524)), nil, false, ReasonNoCredits},
		{"out of credits, current kernels", pe(syscall.EDEADLK), nil, false, ReasonNoCredits},
		{"stale", pe(syscall.ESTALE), nil, false, ReasonStale},
		{"io", pe(syscall.EIO), nil, false, ReasonIOError},
		{"not connected", pe(syscall.ENOTCONN), nil, false, ReasonNotConnected},
		{"access", pe(syscall.EACCES), nil, false, ReasonAccessDenied},
		{"other errno", pe(syscall.E2BIG), nil, false, ReasonMountError},
		{"no errno", mount.StatResult{Err: errors.New("weird")}, nil, false, ReasonMountError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ClassifyStat(tc.res, tc.err, time.Second, t0)
			if c.OK != tc.ok || c.Reason != tc.reason {
				t.Fatalf("ClassifyStat = %+v, want ok=%v reason %s", c, tc.ok, tc.reason)
			}
		})
	}
}

func TestCombine(t *testing.T) {
	okc := MountCheck{OK: true, Reason: ReasonMountOK}
	stalled := MountCheck{Reason: ReasonMountStalled, Message: "statfs did not return"}
	up := Verdict{State: StateHealthy, Reason: ReasonReachable}
	slow := Verdict{State: StateDegraded, Reason: ReasonSlow, Message: "slow"}
	missed := Verdict{State: StateDegraded, Reason: ReasonProbeMissed}
	down := Verdict{State: StateUnreachable, Reason: ReasonUnreachable, Message: "2 probes failed"}
	unknown := Verdict{State: StateUnknown, Reason: ReasonNotProbed}
	tests := []struct {
		name      string
		c         MountCheck
		sv        Verdict
		remounted bool
		want      State
		reason    string
	}{
		{"all good", okc, up, false, StateHealthy, ReasonVolumeHealthy},
		{"server not probed yet", okc, unknown, false, StateHealthy, ReasonVolumeHealthy},
		{"server down wins over a fine-looking mount", okc, down, false, StateUnreachable, ReasonUnreachable},
		{"server down and mount stalled", stalled, down, false, StateUnreachable, ReasonUnreachable},
		{"mount wedged, server fine", stalled, up, false, StateUnreachable, ReasonMountStalled},
		{"slow server", okc, slow, false, StateDegraded, ReasonSlow},
		{"one missed probe", okc, missed, false, StateDegraded, ReasonProbeMissed},
		{"recently remounted", okc, up, true, StateDegraded, ReasonRemounted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := Combine(tc.c, tc.sv, tc.remounted)
			if v.State != tc.want || v.Reason != tc.reason {
				t.Fatalf("Combine = %v/%s (%s), want %v/%s", v.State, v.Reason, v.Message, tc.want, tc.reason)
			}
		})
	}
}

// fakeProbes is a prober stand-in that counts the probes held.
type fakeProbes struct {
	mu   sync.Mutex
	refs map[string]int
}

func (f *fakeProbes) Acquire(addr string, _ auth.Credentials) func() {
	f.mu.Lock()
	f.refs[addr]++
	f.mu.Unlock()
	var once sync.Once
	return func() { once.Do(func() { f.mu.Lock(); f.refs[addr]--; f.mu.Unlock() }) }
}

// monitorHarness runs a Monitor with one volume whose statfs hangs while
// hang is set, and a remounter that acts on RemountWanted as the node does.
type monitorHarness struct {
	m        *Monitor
	store    *Store
	probes   *fakeProbes
	mu       sync.Mutex
	hang     bool
	remounts int
}

func runMonitor(t *testing.T, fn func(h *monitorHarness)) {
	synctest.Test(t, func(t *testing.T) {
		h := &monitorHarness{store: NewStore(), probes: &fakeProbes{refs: map[string]int{}}}
		h.store.SetServer("srv:445", Verdict{State: StateHealthy, Reason: ReasonReachable})
		st := mount.NewStatter(func(string, *unix.Statfs_t) error {
			for {
				h.mu.Lock()
				hang := h.hang
				h.mu.Unlock()
				if !hang {
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
		h.m = NewMonitor(st, h.probes, h.store, MonitorOptions{})
		h.m.Add(VolumeSpec{ID: "vol", Staging: "/staging", Server: "srv:445", Initial: &mount.StatResult{}, Remountable: true})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 2)
		go func() { done <- h.m.Run(ctx) }()
		sub := h.store.Subscribe()
		go func() {
			done <- Consume(ctx, sub, func(u Update) {
				if u.Kind == KindVolume && !u.Volume.RemountWanted.IsZero() {
					h.mu.Lock()
					h.remounts++
					h.hang = false
					h.mu.Unlock()
					h.m.Remounted(u.Name, nil)
				}
			})
		}()
		defer func() {
			h.setHang(false)
			h.m.Remove("vol")
			cancel()
			for range 2 {
				if err := <-done; err != nil {
					t.Error(err)
				}
			}
			time.Sleep(time.Second) // let a statfs that was hanging return
			synctest.Wait()
			h.probes.mu.Lock()
			n := h.probes.refs["srv:445"]
			h.probes.mu.Unlock()
			if n != 0 {
				t.Errorf("%d server probes still held after Remove", n)
			}
			if _, ok := h.store.Volume("vol"); ok {
				t.Error("volume still in the store after Remove")
			}
		}()
		fn(h)
	})
}

func (h *monitorHarness) setHang(v bool) { h.mu.Lock(); h.hang = v; h.mu.Unlock() }

func (h *monitorHarness) remountCount() int { h.mu.Lock(); defer h.mu.Unlock(); return h.remounts }

func (h *monitorHarness) verdict(t *testing.T) VolumeVerdict {
	t.Helper()
	v, ok := h.store.Volume("vol")
	if !ok {
		t.Fatal("volume not watched")
	}
	return v
}

// setServer publishes a server verdict, as the prober does, and lets the
// monitor take it in.
func (h *monitorHarness) setServer(s State, reason string) {
	h.store.SetServer("srv:445", Verdict{State: s, Reason: reason})
	synctest.Wait()
}

func TestMonitorRemountsWedgedMount(t *testing.T) {
	runMonitor(t, func(h *monitorHarness) {
		time.Sleep(time.Second)
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("initial %v/%s", v.State, v.Reason)
		}
		h.setHang(true)
		time.Sleep(4 * time.Second)
		if v := h.verdict(t); v.State != StateUnreachable || v.Reason != ReasonMountStalled {
			t.Fatalf("wedged mount: %v/%s %s", v.State, v.Reason, v.Message)
		}
		time.Sleep(10 * time.Second)
		if n := h.remountCount(); n != 1 {
			t.Fatalf("%d remounts after the grace period, want 1", n)
		}
		if v := h.verdict(t); v.State != StateDegraded || v.Reason != ReasonRemounted {
			t.Fatalf("after remount: %v/%s", v.State, v.Reason)
		}
		time.Sleep(3 * time.Minute)
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("long after the remount: %v/%s", v.State, v.Reason)
		}
	})
}

func TestMonitorDoesNotRemountWhenServerIsDown(t *testing.T) {
	runMonitor(t, func(h *monitorHarness) {
		h.setServer(StateUnreachable, ReasonUnreachable)
		h.setHang(true)
		time.Sleep(time.Minute)
		if n := h.remountCount(); n != 0 {
			t.Fatalf("remounted %d times while the server was down: pointless", n)
		}
		if v := h.verdict(t); v.Reason != ReasonUnreachable {
			t.Fatalf("verdict %s", v.Reason)
		}
		h.setServer(StateHealthy, ReasonReachable)
		h.setHang(false)
		time.Sleep(3 * time.Second)
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("server and mount back, verdict %v/%s", v.State, v.Reason)
		}
	})
}

func TestMonitorUsageSurvivesStall(t *testing.T) {
	runMonitor(t, func(h *monitorHarness) {
		time.Sleep(3 * time.Second)
		before := h.verdict(t).UsageAt
		h.setServer(StateUnreachable, ReasonUnreachable)
		h.setHang(true)
		time.Sleep(10 * time.Second)
		v := h.verdict(t)
		if v.UsageAt.IsZero() || v.UsageAt.After(before) {
			t.Fatalf("usage time %v: must keep the last good one (%v)", v.UsageAt, before)
		}
		h.setHang(false)
		h.setServer(StateHealthy, ReasonReachable)
	})
}

// TestMonitorAfterServerOutage: failures seen while the server was down do
// not count toward a remount; when it returns the volume says
// MountReconnecting, is checked at once and then every ReconnectInterval
// until the mount works; a kernel that needs a few
// seconds to reconnect gets them (no remount storm); one that never does
// is remounted a grace period after the server's return.
func TestMonitorAfterServerOutage(t *testing.T) {
	runMonitor(t, func(h *monitorHarness) {
		time.Sleep(time.Second)
		h.setServer(StateUnreachable, ReasonUnreachable)
		h.setHang(true)
		time.Sleep(time.Minute) // a long outage: a minute of failed checks
		h.setServer(StateHealthy, ReasonReachable)
		if v := h.verdict(t); v.Reason != ReasonReconnecting || v.State != StateUnreachable {
			t.Fatalf("just after the server returned: %v/%s, want Unreachable/%s", v.State, v.Reason, ReasonReconnecting)
		}
		// The kernel reconnects within the grace. The odd delays keep the
		// mount's return off the check schedule.
		time.Sleep(2250 * time.Millisecond)
		if v := h.verdict(t); v.Reason != ReasonReconnecting {
			t.Fatalf("mount still failing after the server's return: %v/%s, want %s", v.State, v.Reason, ReasonReconnecting)
		}
		h.setHang(false)
		// Checks run every ReconnectInterval now, not every CheckInterval.
		time.Sleep(700 * time.Millisecond)
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("700 ms after the mount reconnected: %v/%s", v.State, v.Reason)
		}
		time.Sleep(3 * time.Second)
		if n := h.remountCount(); n != 0 {
			t.Fatalf("%d remounts: the outage's failures must not count", n)
		}
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("after the mount reconnected: %v/%s", v.State, v.Reason)
		}
		// A second outage after which the mount stays broken: remounted
		// once a grace period after the server's return, not before.
		h.setServer(StateUnreachable, ReasonUnreachable)
		h.setHang(true)
		time.Sleep(30 * time.Second)
		h.setServer(StateHealthy, ReasonReachable)
		time.Sleep(8 * time.Second)
		if n := h.remountCount(); n != 0 {
			t.Fatalf("remounted %d times within the grace after the server's return", n)
		}
		time.Sleep(5 * time.Second)
		if n := h.remountCount(); n != 1 {
			t.Fatalf("%d remounts after the grace, want 1", n)
		}
	})
}

// TestMonitorRecheckIsImmediate: a server's return triggers a mount check
// right away instead of at the next tick.
func TestMonitorRecheckIsImmediate(t *testing.T) {
	runMonitor(t, func(h *monitorHarness) {
		time.Sleep(500 * time.Millisecond)
		h.setServer(StateUnreachable, ReasonUnreachable)
		time.Sleep(500 * time.Millisecond) // the next tick is 1 s away
		h.setServer(StateHealthy, ReasonReachable)
		synctest.Wait()
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("no immediate recheck: %v/%s", v.State, v.Reason)
		}
	})
}

// TestMonitorShortOutage: an outage too short for any mount check to see
// it; the mount then fails while the kernel reconnects. That is
// MountReconnecting, not a wedged mount.
func TestMonitorShortOutage(t *testing.T) {
	runMonitor(t, func(h *monitorHarness) {
		time.Sleep(2500 * time.Millisecond) // a check passed at 2 s
		h.setServer(StateUnreachable, ReasonUnreachable)
		h.setHang(true)
		time.Sleep(300 * time.Millisecond)
		h.setServer(StateHealthy, ReasonReachable)
		time.Sleep(2 * time.Second)
		if v := h.verdict(t); v.Reason != ReasonReconnecting {
			t.Fatalf("mount failing after a short outage: %v/%s, want %s", v.State, v.Reason, ReasonReconnecting)
		}
		h.setHang(false)
		time.Sleep(time.Second)
		if v := h.verdict(t); v.State != StateHealthy {
			t.Fatalf("after the mount reconnected: %v/%s", v.State, v.Reason)
		}
	})
}

// TestMonitorDFSVerdicts: a DFS volume is judged on the target its mount
// uses, with the others: a standby down degrades it, all down is
// NoHealthyTarget, a move is FailedOver for NoticeTTL.
func TestMonitorDFSVerdicts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := NewStore()
		up := Verdict{State: StateHealthy, Reason: ReasonReachable}
		down := Verdict{State: StateUnreachable, Reason: ReasonUnreachable}
		store.SetServer("a:445", up)
		store.SetServer("b:445", up)
		probes := &fakeProbes{refs: map[string]int{}}
		m := NewMonitor(mount.NewStatter(func(string, *unix.Statfs_t) error { return nil }), probes, store, MonitorOptions{})
		testrun.Background(t, m.Run)
		m.Add(VolumeSpec{ID: "v", Staging: "/s", Server: "a:445", Targets: []string{"a:445", "b:445"}, Initial: &mount.StatResult{}})
		if probes.refs["a:445"] != 1 || probes.refs["b:445"] != 1 {
			t.Fatalf("probes %v: every target is probed", probes.refs)
		}
		reason := func() string { synctest.Wait(); v, _ := store.Volume("v"); return v.Reason }
		if r := reason(); r != ReasonVolumeHealthy {
			t.Fatalf("both up: %s", r)
		}
		store.SetServer("b:445", down)
		if r := reason(); r != ReasonTargetUnreachable {
			t.Fatalf("standby down: %s", r)
		}
		store.SetServer("a:445", down)
		if r := reason(); r != ReasonNoHealthyTarget {
			t.Fatalf("all down: %s", r)
		}
		store.SetServer("b:445", up)
		if r := reason(); r != ReasonUnreachable {
			t.Fatalf("active down, standby up: %s", r)
		}
		m.Retarget("v", Failover{From: "a:445", To: "b:445", At: time.Now()})
		time.Sleep(3 * time.Second) // a mount check on the new target
		if v, _ := store.Volume("v"); v.Reason != ReasonFailedOver || v.Server != "b:445" || v.State != StateDegraded {
			t.Fatalf("after the move: %+v", v)
		}
		store.SetServer("a:445", up)
		time.Sleep(3 * time.Minute)
		if r := reason(); r != ReasonVolumeHealthy {
			t.Fatalf("after the notice: %s", r)
		}
		m.Fenced([]string{"a:445"})
		if r := reason(); r != ReasonTargetFenced {
			t.Fatalf("standby fenced: %s", r)
		}
		m.Fenced(nil)
		if r := reason(); r != ReasonVolumeHealthy {
			t.Fatalf("fence lifted: %s", r)
		}
		m.Remove("v")
		if probes.refs["a:445"] != 0 || probes.refs["b:445"] != 0 {
			t.Fatalf("probes %v held after Remove", probes.refs)
		}
	})
}

// TestMonitorStaleWriteRisk: after a failover away from a frozen target,
// its return raises StaleWriteRisk for NoticeTTL.
func TestMonitorStaleWriteRisk(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := NewStore()
		store.SetServer("a:445", Verdict{State: StateUnreachable, Reason: ReasonUnreachable, Silent: true})
		store.SetServer("b:445", Verdict{State: StateHealthy, Reason: ReasonReachable})
		m := NewMonitor(mount.NewStatter(func(string, *unix.Statfs_t) error { return nil }), &fakeProbes{refs: map[string]int{}}, store, MonitorOptions{})
		testrun.Background(t, m.Run)
		m.Add(VolumeSpec{ID: "v", Staging: "/s", Server: "a:445", Targets: []string{"a:445", "b:445"}, Initial: &mount.StatResult{}})
		m.Retarget("v", Failover{From: "a:445", To: "b:445", At: time.Now(), FromFrozen: true})
		time.Sleep(3 * time.Second)
		if v, _ := store.Volume("v"); v.Reason != ReasonFailedOver {
			t.Fatalf("while the frozen target is down: %s", v.Reason)
		}
		store.SetServer("a:445", Verdict{State: StateHealthy, Reason: ReasonReachable})
		synctest.Wait()
		v, _ := store.Volume("v")
		if v.Reason != ReasonStaleWriteRisk || v.State != StateDegraded || !strings.Contains(v.Message, "a:445") {
			t.Fatalf("frozen target back: %+v", v)
		}
		time.Sleep(3 * time.Minute)
		if v, _ := store.Volume("v"); v.Reason != ReasonVolumeHealthy {
			t.Fatalf("after the notice: %s", v.Reason)
		}
	})
}

// TestMonitorDFSFallbackRemount: a DFS mount that stays wedged while
// another target answers (in-place failover did not move it) is remounted
// after RemountGrace; without the fallback (the kernel alone) it is not.
func TestMonitorDFSFallbackRemount(t *testing.T) {
	for _, fallback := range []bool{true, false} {
		t.Run(fmt.Sprint("fallback=", fallback), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := NewStore()
				store.SetServer("a:445", Verdict{State: StateUnreachable, Reason: ReasonUnreachable})
				store.SetServer("b:445", Verdict{State: StateHealthy, Reason: ReasonReachable})
				hang := make(chan struct{})
				m := NewMonitor(mount.NewStatter(func(string, *unix.Statfs_t) error { <-hang; return nil }),
					&fakeProbes{refs: map[string]int{}}, store, MonitorOptions{})
				testrun.Background(t, m.Run)
				defer close(hang)
				m.Add(VolumeSpec{ID: "v", Staging: "/s", Server: "a:445", Targets: []string{"a:445", "b:445"},
					Remountable: true, DFSFallback: fallback})
				time.Sleep(30 * time.Second)
				v, _ := store.Volume("v")
				if asked := !v.RemountWanted.IsZero(); asked != fallback {
					t.Fatalf("remount asked %v, want %v (%s: %s)", asked, fallback, v.Reason, v.Message)
				}
				if fallback {
					m.Remounted("v", nil)
					m.Retarget("v", Failover{From: "a:445", To: "b:445", At: time.Now()}) // the new mount is on b
					if v, _ := store.Volume("v"); v.Reason != ReasonRemounted || !strings.Contains(v.Message, "DFS path was remounted") {
						t.Fatalf("after the remount: %s: %s", v.Reason, v.Message)
					}
				}
				m.Remove("v")
			})
		})
	}
}

// dirWatches records what the Monitor watches.
type dirWatches struct {
	mu   sync.Mutex
	refs map[DirTarget]int
}

func (d *dirWatches) Acquire(t DirTarget, _ auth.Credentials) func() {
	d.mu.Lock()
	d.refs[t]++
	d.mu.Unlock()
	return func() { d.mu.Lock(); d.refs[t]--; d.mu.Unlock() }
}

// TestMonitorDirectoryGone: a watch that sees the volume's directory
// removed or renamed makes the staged volume inaccessible at once (no
// mount check needed), with no remount; restored, it is healthy again.
func TestMonitorDirectoryGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := NewStore()
		store.SetServer("srv:445", Verdict{State: StateHealthy, Reason: ReasonReachable})
		dw := &dirWatches{refs: map[DirTarget]int{}}
		failing := errors.New("stale")
		var mu sync.Mutex
		var statErr error
		st := mount.NewStatter(func(string, *unix.Statfs_t) error { mu.Lock(); defer mu.Unlock(); return statErr })
		m := NewMonitor(st, &fakeProbes{refs: map[string]int{}}, store, MonitorOptions{Watches: dw})
		dir := DirTarget{Addr: "srv:445", Share: "share", Dir: "base", Name: "pvc-1"}
		m.Add(VolumeSpec{ID: "vol", Staging: "/staging", Server: "srv:445", Initial: &mount.StatResult{}, Remountable: true, Dir: &dir})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()
		defer func() {
			m.Remove("vol")
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			if n := dw.refs[dir]; n != 0 {
				t.Errorf("%d directory watches held after Remove", n)
			}
		}()
		if dw.refs[dir] != 1 {
			t.Fatalf("watches %v", dw.refs)
		}
		verdict := func() VolumeVerdict { synctest.Wait(); v, _ := store.Volume("vol"); return v }
		store.SetDir(dir.Key(), DirVerdict{State: DirPresent, Watching: true, At: time.Now()})
		if v := verdict(); v.State != StateHealthy {
			t.Fatalf("present: %+v", v)
		}
		store.SetDir(dir.Key(), DirVerdict{State: DirMissing, Watching: true, At: time.Now()})
		if v := verdict(); v.State != StateUnreachable || v.Reason != ReasonDirMissing ||
			!strings.Contains(v.Message, "pvc-1 is gone from //srv/share/base") {
			t.Fatalf("removed: %+v", v)
		}
		mu.Lock()
		statErr = failing // the kernel finds its mount stale now too
		mu.Unlock()
		time.Sleep(time.Minute)
		if v := verdict(); v.Reason != ReasonDirMissing || !v.RemountWanted.IsZero() {
			t.Fatalf("a minute on: %+v (the directory's absence explains it; no remount)", v)
		}
		store.SetDir(dir.Key(), DirVerdict{State: DirMissing, RenamedTo: "pvc-1.old", Watching: false, At: time.Now()})
		if v := verdict(); v.Reason != ReasonDirRenamed || !strings.Contains(v.Message, "renamed on the server to pvc-1.old") {
			t.Fatalf("renamed, watch since lost: %+v", v)
		}
		mu.Lock()
		statErr = nil
		mu.Unlock()
		store.SetDir(dir.Key(), DirVerdict{State: DirPresent, Watching: true, At: time.Now()})
		time.Sleep(3 * time.Second)
		if v := verdict(); v.State != StateHealthy {
			t.Fatalf("restored: %+v", v)
		}
	})
}
