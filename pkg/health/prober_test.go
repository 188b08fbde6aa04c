package health

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeServer is a programmable server for prober tests inside synctest
// bubbles: up, killed (refuses, resets live sessions) or frozen (accepts,
// never answers).
type fakeServer struct {
	mu          sync.Mutex
	mode        string // "up", "killed", "frozen", "starved"
	latency     time.Duration
	lateTimeout time.Duration // a frozen echo notices its deadline this late (a starved prober)
	sessions    []*fakeSession
	dials       int
	echoes      []time.Time
	inFlight    int
	maxInFlight int
	closed      int
}

type fakeSession struct {
	srv  *fakeServer
	done chan struct{}
	once sync.Once
}

func (f *fakeServer) set(mode string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = mode
	if mode == "killed" {
		for _, s := range f.sessions {
			s.once.Do(func() { close(s.done) })
		}
	}
}

func (f *fakeServer) Dial(ctx context.Context, addr string, _ auth.Credentials) (Session, error) {
	f.mu.Lock()
	f.dials++
	mode := f.mode
	f.mu.Unlock()
	switch mode {
	case "killed":
		return nil, syscall.ECONNREFUSED
	case "frozen":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s := &fakeSession{srv: f, done: make(chan struct{})}
	f.mu.Lock()
	f.sessions = append(f.sessions, s)
	f.mu.Unlock()
	return s, nil
}

func (s *fakeSession) Echo(ctx context.Context) error {
	f := s.srv
	f.mu.Lock()
	f.echoes = append(f.echoes, time.Now())
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	mode, lat, late := f.mode, f.latency, f.lateTimeout
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	select {
	case <-s.done:
		return errors.New("connection reset by peer")
	default:
	}
	switch mode {
	case "frozen":
		<-ctx.Done()
		return ctx.Err()
	case "starved":
		// The answer came, but this process got no CPU until well after the
		// deadline, and the deadline won the race.
		<-ctx.Done()
		time.Sleep(late)
		return ctx.Err()
	}
	select {
	case <-time.After(lat):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("connection reset by peer")
	}
}

func (s *fakeSession) Close() error {
	s.srv.mu.Lock()
	s.srv.closed++
	s.srv.mu.Unlock()
	s.once.Do(func() { close(s.done) })
	return nil
}

func (s *fakeSession) Idle(ctx context.Context, deadline time.Time) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return errors.New("connection reset by peer")
	case <-t.C:
		return nil
	}
}

// bubble runs a prober over srv in a synctest bubble and stops it at the end.
func bubble(t *testing.T, srv *fakeServer, fn func(p *Prober)) {
	synctest.Test(t, func(t *testing.T) {
		p := NewProber(srv, NewStore(), ProberOptions{Phase: func(time.Duration) time.Duration { return 0 }})
		release := p.Acquire("srv:445", auth.Credentials{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()
		defer func() {
			release()
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		fn(p)
	})
}

// waitState advances fake time in 10 ms steps until addr reaches want.
func waitState(t *testing.T, p *Prober, want State, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) <= limit {
		if v, _ := p.store.Server("srv:445"); v.State == want {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	v, _ := p.store.Server("srv:445")
	t.Fatalf("state %v (%s: %s) after %v, want %v", v.State, v.Reason, v.Message, limit, want)
	return 0
}

func TestProberDetectsKilledServerAtOnce(t *testing.T) {
	srv := &fakeServer{mode: "up", latency: time.Millisecond}
	bubble(t, srv, func(p *Prober) {
		waitState(t, p, StateHealthy, 2*time.Second)
		time.Sleep(300 * time.Millisecond) // between ticks
		srv.set("killed")
		if took := waitState(t, p, StateUnreachable, time.Second); took > 20*time.Millisecond {
			t.Fatalf("killed server seen after %v; the connection reset should wake the prober", took)
		}
		srv.set("up")
		if took := waitState(t, p, StateHealthy, 3*time.Second); took > 1100*time.Millisecond {
			t.Fatalf("healthy again after %v, want within the 1 s redial backoff", took)
		}
	})
}

func TestProberDetectsFrozenServer(t *testing.T) {
	srv := &fakeServer{mode: "up", latency: time.Millisecond}
	bubble(t, srv, func(p *Prober) {
		waitState(t, p, StateHealthy, 2*time.Second)
		time.Sleep(5 * time.Second) // settle the RTT estimate
		srv.set("frozen")
		if took := waitState(t, p, StateUnreachable, 5*time.Second); took > 2500*time.Millisecond {
			t.Fatalf("frozen server seen after %v, want <= interval + echo floor + dial floor = 2.5 s", took)
		}
		srv.set("up")
		if took := waitState(t, p, StateHealthy, 5*time.Second); took > 3*time.Second {
			t.Fatalf("healthy again after %v, want <= 3 s", took)
		}
	})
}

// TestProberFixedRate: ECHOs go out on a grid anchored to the start, whatever
// their latency, with never more than one outstanding.
func TestProberFixedRate(t *testing.T) {
	srv := &fakeServer{mode: "up", latency: 300 * time.Millisecond}
	bubble(t, srv, func(p *Prober) {
		start := time.Now()
		time.Sleep(10*time.Second + 500*time.Millisecond)
		srv.mu.Lock()
		defer srv.mu.Unlock()
		// The first ECHO confirms the new session; the rest are on the grid.
		for i, at := range srv.echoes[1:] {
			if want := start.Add(time.Duration(i+1) * time.Second); !at.Equal(want) {
				t.Fatalf("echo %d at %v, want %v (drift)", i+1, at.Sub(start), want.Sub(start))
			}
		}
		if srv.maxInFlight != 1 || srv.dials != 1 {
			t.Fatalf("max %d echoes in flight, %d dials; want 1 and 1", srv.maxInFlight, srv.dials)
		}
	})
}

// TestProberSlowLinkIsNotDead: 1.5 s answers to a 1 s schedule are slow,
// not dead; ticks that fall on an outstanding ECHO are skipped.
func TestProberSlowLinkIsNotDead(t *testing.T) {
	srv := &fakeServer{mode: "up", latency: 1500 * time.Millisecond}
	bubble(t, srv, func(p *Prober) {
		for range 600 {
			time.Sleep(time.Second)
			if v, _ := p.store.Server("srv:445"); v.State == StateUnreachable || v.Reason == ReasonProbeMissed {
				t.Fatalf("slow link judged %v/%s: %s", v.State, v.Reason, v.Message)
			}
		}
		if v, _ := p.store.Server("srv:445"); v.Reason != ReasonSlow {
			t.Fatalf("reason %q, want %q", v.Reason, ReasonSlow)
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.maxInFlight != 1 || srv.dials != 1 {
			t.Fatalf("max in flight %d, dials %d", srv.maxInFlight, srv.dials)
		}
	})
}

// TestProberNeverReusesATimedOutSession: a miss closes the session; the next
// probe is a fresh dial.
func TestProberNeverReusesATimedOutSession(t *testing.T) {
	srv := &fakeServer{mode: "up", latency: time.Millisecond}
	bubble(t, srv, func(p *Prober) {
		waitState(t, p, StateHealthy, 2*time.Second)
		srv.set("frozen")
		waitState(t, p, StateUnreachable, 5*time.Second)
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if srv.closed != 1 || srv.dials < 2 {
			t.Fatalf("closed %d sessions, dialed %d times; a timed-out session must be closed and redialed", srv.closed, srv.dials)
		}
	})
}

// TestStarvedProberDoesNotBlame: when the prober notices an ECHO deadline
// seconds late (its process was starved of CPU), the miss is not held
// against the server.
func TestStarvedProberDoesNotBlame(t *testing.T) {
	srv := &fakeServer{mode: "up", latency: time.Millisecond}
	bubble(t, srv, func(p *Prober) {
		waitState(t, p, StateHealthy, 2*time.Second)
		srv.mu.Lock()
		srv.mode, srv.lateTimeout = "starved", 2*time.Second
		srv.mu.Unlock()
		time.Sleep(10 * time.Second)
		if v, _ := p.store.Server("srv:445"); v.State != StateHealthy {
			t.Fatalf("starved prober judged the server %v: %s", v.State, v.Message)
		}
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.echoes) < 3 {
			t.Fatalf("only %d echoes: the starved rounds must still probe", len(srv.echoes))
		}
	})
}

func TestProberRefcountAndPhases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &fakeServer{mode: "up", latency: time.Millisecond}
		var phases atomic.Int64
		p := NewProber(srv, NewStore(), ProberOptions{Phase: func(i time.Duration) time.Duration {
			return time.Duration(phases.Add(1)) * i / 10
		}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()
		r1 := p.Acquire("a:445", auth.Credentials{})
		r2 := p.Acquire("a:445", auth.Credentials{Username: "u"})
		rb := p.Acquire("b:445", auth.Credentials{})
		time.Sleep(3 * time.Second)
		if phases.Load() != 2 {
			t.Fatalf("%d phases drawn for 2 servers", phases.Load())
		}
		r1()
		r1() // releasing twice is harmless
		if _, ok := p.store.Server("a:445"); !ok {
			t.Fatal("a still has a user but is no longer probed")
		}
		r2()
		synctest.Wait()
		if _, ok := p.store.Server("a:445"); ok {
			t.Fatal("a is probed with no users")
		}
		rb()
		synctest.Wait()
		srv.mu.Lock()
		if srv.closed != srv.dials {
			t.Fatalf("%d sessions dialed, %d closed", srv.dials, srv.closed)
		}
		srv.mu.Unlock()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestFailedDialNeverYieldsASession: a dialer returning a nil *T with an
// error must not look like a session (a nil pointer in an interface is not
// nil), and a target released during a dial must not touch one.
func TestFailedDialNeverYieldsASession(t *testing.T) {
	d := Adapt(func(context.Context, string, auth.Credentials) (*fakeSession, error) {
		return nil, errors.New("refused")
	})
	if s, err := d.Dial(context.Background(), "x:445", auth.Credentials{}); err == nil || s != nil {
		t.Fatalf("Dial = %v, %v; want a nil Session and the error", s, err)
	}
	synctest.Test(t, func(t *testing.T) {
		blocking := Adapt(func(ctx context.Context, _ string, _ auth.Credentials) (*fakeSession, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		p := NewProber(blocking, NewStore(), ProberOptions{Phase: func(time.Duration) time.Duration { return 0 }})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()
		release := p.Acquire("x:445", auth.Credentials{})
		time.Sleep(500 * time.Millisecond) // mid-dial
		release()
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestProberSharedSchedule: servers in the same phase slot are probed at the
// same instants, on the prober's schedule, however far apart they were
// acquired, so the process wakes once for the slot, not once per server.
func TestProberSharedSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b := &fakeServer{mode: "up"}, &fakeServer{mode: "up"}
		d := DialFunc(func(ctx context.Context, addr string, c auth.Credentials) (Session, error) {
			if addr == "a:445" {
				return a.Dial(ctx, addr, c)
			}
			return b.Dial(ctx, addr, c)
		})
		const phase = 300 * time.Millisecond
		p := NewProber(d, NewStore(), ProberOptions{Phase: func(time.Duration) time.Duration { return phase }})
		epoch := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- p.Run(ctx) }()
		ra := p.Acquire("a:445", auth.Credentials{})
		time.Sleep(1700 * time.Millisecond)
		rb := p.Acquire("b:445", auth.Credentials{})
		time.Sleep(3 * time.Second)
		ra()
		rb()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Each server's first ECHO confirms its new session; the rest are ticks.
		for name, srv := range map[string]*fakeServer{"a": a, "b": b} {
			if len(srv.echoes) < 3 {
				t.Fatalf("%s: only %d echoes", name, len(srv.echoes))
			}
			for _, e := range srv.echoes[1:] {
				if off := e.Sub(epoch) % time.Second; off != phase {
					t.Errorf("%s probed %v after a whole second of the schedule, want %v", name, off, phase)
				}
			}
		}
		if first := b.echoes[0].Sub(epoch); first != 2300*time.Millisecond {
			t.Errorf("b first probed at +%v, want the next tick (+2.3s)", first)
		}
	})
}

func TestSlottedPhase(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 5000 {
		ph := slottedPhase(time.Second)
		if ph < 0 || ph >= time.Second || ph%PhaseSlot != 0 {
			t.Fatalf("phase %v: want a multiple of %v in [0, 1s)", ph, PhaseSlot)
		}
		seen[ph] = true
	}
	if len(seen) != int(time.Second/PhaseSlot) {
		t.Errorf("%d distinct phases in 5000 draws, want all %d slots", len(seen), time.Second/PhaseSlot)
	}
	if ph := slottedPhase(5 * time.Millisecond); ph != 0 {
		t.Errorf("an interval shorter than a slot has one slot; phase %v", ph)
	}
}
