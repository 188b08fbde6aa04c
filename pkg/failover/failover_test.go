package failover

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/pkg/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeFence struct {
	mu                   sync.Mutex
	fenced               map[netip.Addr]bool
	adds, kills, removes []string
	failAdds             int // the next failAdds Adds fail
}

func (f *fakeFence) Add(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failAdds > 0 {
		f.failAdds--
		return errors.New("netlink: operation not permitted")
	}
	f.fenced[a], f.adds = true, append(f.adds, a.String())
	return nil
}

func (f *fakeFence) Remove(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.fenced, a)
	f.removes = append(f.removes, a.String())
	return nil
}

func (f *fakeFence) Kill(a netip.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills = append(f.kills, a.String())
	return 1, nil
}

func (f *fakeFence) get() (adds, kills, removes []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.adds), slices.Clone(f.kills), slices.Clone(f.removes)
}

type retargets struct {
	mu  sync.Mutex
	log []string
}

func (r *retargets) Retarget(id string, f health.Failover) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, fmt.Sprintf("%s:%s>%s frozen=%v", id, f.From, f.To, f.FromFrozen))
}

func (r *retargets) Fenced([]string) {}

func (r *retargets) get() []string { r.mu.Lock(); defer r.mu.Unlock(); return slices.Clone(r.log) }

const (
	a = "10.0.0.2:445"
	b = "10.0.0.3:445"
)

var (
	up   = health.Verdict{State: health.StateHealthy, Reason: health.ReasonReachable}
	down = health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable}
)

// rig runs a controller over one DFS volume on targets a and b; the
// "kernel" is connected to *mountedOn.
type rig struct {
	c     *Controller
	store *health.Store
	fence *fakeFence
	rt    *retargets
	mu    sync.Mutex
	on    string
}

func (r *rig) mountedOn(t string) { r.mu.Lock(); r.on = t; r.mu.Unlock() }

func run(t *testing.T, o Options, fn func(r *rig)) {
	synctest.Test(t, func(t *testing.T) {
		r := &rig{store: health.NewStore(), fence: &fakeFence{fenced: map[netip.Addr]bool{}}, rt: &retargets{}, on: a}
		r.store.SetServer(a, up)
		r.store.SetServer(b, up)
		r.c = New(r.store, r.fence, func() (map[string]string, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			return map[string]string{"/staging": r.on}, nil
		}, r.rt, o)
		r.c.Add(Volume{ID: "v", Staging: "/staging", Targets: []string{a, b}}, a)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- r.c.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		fn(r)
	})
}

func TestFailsOverInPlace(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		r.store.SetServer(a, down)
		synctest.Wait()
		adds, kills, _ := r.fence.get()
		if !slices.Equal(adds, []string{"10.0.0.2"}) || !slices.Equal(kills, []string{"10.0.0.2"}) {
			t.Fatalf("fenced %v, killed %v; want the dead active target", adds, kills)
		}
		time.Sleep(2 * time.Second) // the kernel is reconnecting: no second kill
		if _, kills, _ := r.fence.get(); len(kills) != 1 {
			t.Fatalf("killed %v while the kernel reconnects", kills)
		}
		r.mountedOn(b)
		time.Sleep(time.Second)
		if got := r.rt.get(); !slices.Equal(got, []string{"v:" + a + ">" + b + " frozen=false"}) {
			t.Fatalf("retargets %v", got)
		}
		// The dead target returns: healthy, then a relapse restarts the clock.
		r.store.SetServer(a, up)
		time.Sleep(20 * time.Second)
		r.store.SetServer(a, down)
		time.Sleep(time.Second)
		r.store.SetServer(a, up)
		time.Sleep(25 * time.Second)
		if _, _, removes := r.fence.get(); len(removes) != 0 {
			t.Fatal("fence lifted before 30 s of sustained health")
		}
		time.Sleep(10 * time.Second)
		if _, _, removes := r.fence.get(); !slices.Equal(removes, []string{"10.0.0.2"}) {
			t.Fatalf("fence not lifted after sustained health: %v", removes)
		}
		if got := r.c.Fenced(); len(got) != 0 {
			t.Fatalf("still fenced: %v", got)
		}
		time.Sleep(time.Minute) // no failback
		if got := r.rt.get(); len(got) != 1 {
			t.Fatalf("retargets %v: no failback expected", got)
		}
	})
}

func TestNeverFencesTheLastHealthyTarget(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		r.store.SetServer(b, down)
		r.store.SetServer(a, down)
		time.Sleep(5 * time.Second)
		if adds, _, _ := r.fence.get(); len(adds) != 0 {
			t.Fatalf("fenced %v with no healthy target left", adds)
		}
		r.store.SetServer(b, up)
		synctest.Wait()
		if adds, _, _ := r.fence.get(); !slices.Equal(adds, []string{"10.0.0.2"}) {
			t.Fatalf("fenced %v once b answered, want a", adds)
		}
	})
}

func TestDisabledNeverFences(t *testing.T) {
	run(t, Options{Disabled: true}, func(r *rig) {
		r.store.SetServer(a, down)
		time.Sleep(5 * time.Second)
		if adds, kills, _ := r.fence.get(); len(adds)+len(kills) != 0 {
			t.Fatalf("fenced %v killed %v with failover disabled", adds, kills)
		}
		r.mountedOn(b) // the kernel moved by itself: still reported
		time.Sleep(time.Second)
		if got := r.rt.get(); len(got) != 1 {
			t.Fatalf("retargets %v", got)
		}
	})
}

func TestPrepare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := health.NewStore()
		f := &fakeFence{fenced: map[netip.Addr]bool{}}
		c := New(store, f, func() (map[string]string, error) { return nil, nil }, &retargets{}, Options{})
		// No verdicts yet: Prepare waits for them, at most until ctx ends.
		go func() {
			time.Sleep(2 * time.Second)
			store.SetServer(a, down)
			store.SetServer(b, up)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := c.Prepare(ctx, []string{a, b}); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 2*time.Second || took > 2100*time.Millisecond {
			t.Fatalf("Prepare took %v, want until the verdicts came (2 s)", took)
		}
		adds, kills, _ := f.get()
		if !slices.Equal(adds, []string{"10.0.0.2"}) || len(kills) != 0 {
			t.Fatalf("fenced %v killed %v before the mount; want a fenced, nothing killed", adds, kills)
		}
		// A target with no verdict when ctx ends while another answers (a
		// frozen server the prober has never seen): fenced for this mount.
		store.SetServer("10.0.0.4:445", health.Verdict{State: health.StateUnknown, Reason: health.ReasonNotProbed})
		c3 := New(store, &fakeFence{fenced: map[netip.Addr]bool{}}, func() (map[string]string, error) { return nil, nil }, &retargets{}, Options{})
		pctx, pcancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer pcancel()
		start = time.Now()
		if _, err := c3.Prepare(pctx, []string{"10.0.0.4:445", b}); err != nil {
			t.Fatal(err)
		}
		if _, ok := c3.Fenced()["10.0.0.4:445"]; !ok || time.Since(start) > PrepareGrace+100*time.Millisecond {
			t.Fatalf("silent target after %v: fenced %v, want it fenced PrepareGrace after the other answered", time.Since(start), c3.Fenced())
		}
		// Every target dead: nothing fenced, and no wait past ctx.
		store.SetServer(b, down)
		c2 := New(store, &fakeFence{fenced: map[netip.Addr]bool{}}, func() (map[string]string, error) { return nil, nil }, &retargets{}, Options{})
		if _, err := c2.Prepare(context.Background(), []string{a, b}); err != nil {
			t.Fatal(err)
		}
		if len(c2.Fenced()) != 0 {
			t.Fatalf("fenced %v with every target dead", c2.Fenced())
		}
	})
}

var frozen = health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable, Silent: true}

// TestFrozenTargetIsReported: a failover away from a frozen target says so,
// for the split-brain warning.
func TestFrozenTargetIsReported(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		r.store.SetServer(a, frozen)
		synctest.Wait()
		r.mountedOn(b)
		time.Sleep(time.Second)
		if got := r.rt.get(); !slices.Equal(got, []string{"v:" + a + ">" + b + " frozen=true"}) {
			t.Fatalf("retargets %v", got)
		}
	})
}

// TestConsistencyWaitsForAFrozenTarget: with dfsFailover=consistency a
// frozen target is not left; a cut-off one is.
func TestConsistencyWaitsForAFrozenTarget(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		r.c.Add(Volume{ID: "v", Staging: "/staging", Targets: []string{a, b}, Consistency: true}, a)
		r.store.SetServer(a, frozen)
		time.Sleep(10 * time.Second)
		if adds, _, _ := r.fence.get(); len(adds) != 0 {
			t.Fatalf("fenced %v: the consistency policy keeps a frozen target", adds)
		}
		r.store.SetServer(a, down)
		synctest.Wait()
		if adds, _, _ := r.fence.get(); !slices.Equal(adds, []string{"10.0.0.2"}) {
			t.Fatalf("fenced %v: a cut-off target is left under either policy", adds)
		}
	})
}

// TestFenceGoesWithItsLastVolume: a fenced target no staged volume uses
// any more (nobody probes it) is let back at once.
func TestFenceGoesWithItsLastVolume(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		r.store.SetServer(a, down)
		synctest.Wait()
		if len(r.c.Fenced()) != 1 {
			t.Fatalf("fenced %v", r.c.Fenced())
		}
		r.c.Remove("v")
		r.store.DeleteServer(a)
		time.Sleep(time.Second)
		if _, _, removes := r.fence.get(); !slices.Equal(removes, []string{"10.0.0.2"}) || len(r.c.Fenced()) != 0 {
			t.Fatalf("fence kept after its last volume went: %v", r.c.Fenced())
		}
	})
}

// TestNoFailoverFromARecoveringTarget: an active target that answers again
// (not yet enough answers to be healthy) is not left.
func TestNoFailoverFromARecoveringTarget(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		since := time.Now()
		r.store.SetServer(b, down)
		r.store.SetServer(a, health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable, Since: since})
		time.Sleep(time.Second)
		// a answers again before b comes up: setting b first would let the
		// controller act on the moment between the two updates.
		r.store.SetServer(a, health.Verdict{State: health.StateUnreachable, Reason: health.ReasonUnreachable, Since: since,
			LastSuccess: since.Add(time.Second), Message: "answering again"})
		synctest.Wait()
		r.store.SetServer(b, up)
		time.Sleep(2 * time.Second)
		if adds, _, _ := r.fence.get(); len(adds) != 0 {
			t.Fatalf("fenced %v: the active target was recovering", adds)
		}
	})
}

type recorder struct {
	mu     sync.Mutex
	moves  []string
	fences int
}

func (r *recorder) FailedOver(fenced bool, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.moves = append(r.moves, fmt.Sprintf("fenced=%v took=%v", fenced, took))
}

func (r *recorder) Fences(n int) { r.mu.Lock(); r.fences = n; r.mu.Unlock() }

// TestMetrics: a failover is counted with the time from the fence to the
// kernel's move, and the fence count follows.
func TestMetrics(t *testing.T) {
	rec := &recorder{}
	run(t, Options{Recorder: rec}, func(r *rig) {
		r.store.SetServer(a, down)
		synctest.Wait()
		time.Sleep(700 * time.Millisecond)
		r.mountedOn(b)
		time.Sleep(time.Second)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if !slices.Equal(rec.moves, []string{"fenced=true took=1s"}) || rec.fences != 1 {
			t.Fatalf("recorded %v, %d fences", rec.moves, rec.fences)
		}
	})
}

// TestHintFollowsTheMount: the referral hint is told where the mount is,
// at Add and after every move.
func TestHintFollowsTheMount(t *testing.T) {
	var mu sync.Mutex
	var hints []string
	hint := func(path, active string) { mu.Lock(); hints = append(hints, path+"@"+active); mu.Unlock() }
	run(t, Options{Hint: hint}, func(r *rig) {
		r.c.Add(Volume{ID: "v", Staging: "/staging", Targets: []string{a, b}, Path: `\r\dfs\ha`}, a)
		r.store.SetServer(a, down)
		synctest.Wait()
		r.mountedOn(b)
		time.Sleep(time.Second)
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(hints, []string{`\r\dfs\ha@` + a, `\r\dfs\ha@` + b}) {
			t.Fatalf("hints %v", hints)
		}
	})
}

// TestFailedFenceIsRetried: a fence the kernel refused is not taken as set:
// the next step tries again.
func TestFailedFenceIsRetried(t *testing.T) {
	run(t, Options{}, func(r *rig) {
		r.fence.mu.Lock()
		r.fence.failAdds = 1
		r.fence.mu.Unlock()
		r.store.SetServer(a, down)
		time.Sleep(time.Second)
		r.fence.mu.Lock()
		refused := r.fence.failAdds == 0
		r.fence.mu.Unlock()
		adds, kills, _ := r.fence.get()
		if !refused || !slices.Equal(adds, []string{"10.0.0.2"}) || len(kills) != 1 || len(r.c.Fenced()) != 1 {
			t.Fatalf("after a refused fence: refused=%v, fenced %v, killed %v, recorded %v; want it set on a retry",
				refused, adds, kills, r.c.Fenced())
		}
	})
}

// TestIdleReadsNothing: with no DFS volume and no fence, the mount table is
// not read.
func TestIdleReadsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		reads := 0
		c := New(health.NewStore(), &fakeFence{fenced: map[netip.Addr]bool{}}, func() (map[string]string, error) {
			mu.Lock()
			reads++
			mu.Unlock()
			return nil, nil
		}, &retargets{}, Options{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		time.Sleep(10 * time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if reads != 0 {
			t.Fatalf("%d mount table reads with nothing to watch", reads)
		}
	})
}
