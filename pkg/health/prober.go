package health

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
)

// Session is one probe connection to a server: a session with a tree
// connect to IPC$ (Samba closes connections without a tree after 60 s).
// One goroutine uses it at a time.
type Session interface {
	Echo(ctx context.Context) error
	// Idle waits until deadline and returns nil, or returns an error as soon
	// as the connection fails (the server closed or reset it), so a killed
	// server is noticed at once, not at the next tick.
	Idle(ctx context.Context, deadline time.Time) error
	Close() error
}

// Dialer sets up probe sessions (pkg/smb.ProbeDialer in production).
type Dialer interface {
	Dial(ctx context.Context, addr string, creds auth.Credentials) (Session, error)
}

// DialFunc adapts a function to Dialer.
type DialFunc func(ctx context.Context, addr string, creds auth.Credentials) (Session, error)

// Dial calls f.
func (f DialFunc) Dial(ctx context.Context, addr string, creds auth.Credentials) (Session, error) {
	return f(ctx, addr, creds)
}

// Adapt turns a dial function that returns a concrete session type into a
// Dialer, returning a true nil Session on error (a nil *T in a Session
// interface is not nil).
func Adapt[S Session](dial func(ctx context.Context, addr string, creds auth.Credentials) (S, error)) Dialer {
	return DialFunc(func(ctx context.Context, addr string, creds auth.Credentials) (Session, error) {
		s, err := dial(ctx, addr, creds)
		if err != nil {
			return nil, err
		}
		return s, nil
	})
}

// Recorder receives every probe outcome (metrics). Verdicts go to the Store.
type Recorder interface {
	ProbeObserved(addr string, o Observation)
}

// ProberOptions configure a Prober. Zero values get defaults.
type ProberOptions struct {
	Interval   time.Duration // ECHO period, default 1 s
	BackoffMin time.Duration // first redial delay after a failed one, default 200 ms
	BackoffMax time.Duration // default 1 s: a returning server is seen within a second
	Detector   DetectorConfig
	// Phase picks each server's offset in [0, Interval) on the prober's
	// schedule, so a thousand servers are not probed in lockstep. Default:
	// one of the Interval's PhaseSlot-wide slots, at random. Called
	// concurrently.
	Phase    func(interval time.Duration) time.Duration
	Recorder Recorder
}

// PhaseSlot is the granularity of the default phases. Servers in one slot
// are probed in the same wake-up of the process, which costs far less CPU
// than one wake-up per server; the Interval's slots spread the load.
const PhaseSlot = 50 * time.Millisecond

func slottedPhase(interval time.Duration) time.Duration {
	slots := max(1, interval/PhaseSlot)
	return rand.N(slots) * (interval / slots)
}

// Prober keeps one probe session per server, shared by every volume on it,
// and publishes each server's verdict to the Store.
type Prober struct {
	opts    ProberOptions
	dialer  Dialer
	store   *Store
	epoch   time.Time // every server's schedule is epoch + phase + n × Interval
	mu      sync.Mutex
	targets map[string]*target
	wake    chan struct{}
}

type target struct {
	addr    string
	holders map[uint64]auth.Credentials
	latest  uint64
	det     Detector
	started bool
	cancel  context.CancelFunc
}

// NewProber builds a prober that publishes to store; Run probes.
func NewProber(d Dialer, store *Store, o ProberOptions) *Prober {
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	if o.BackoffMin == 0 {
		o.BackoffMin = 200 * time.Millisecond
	}
	if o.BackoffMax == 0 {
		o.BackoffMax = time.Second
	}
	if o.Detector == (DetectorConfig{}) {
		o.Detector = DefaultDetectorConfig()
	}
	if o.Phase == nil {
		o.Phase = slottedPhase
	}
	return &Prober{opts: o, dialer: d, store: store, epoch: time.Now(), targets: map[string]*target{}, wake: make(chan struct{}, 1)}
}

// Acquire starts probing addr (host:port) for one user, with its
// credentials (empty: anonymous). Probing stops when every user released.
func (p *Prober) Acquire(addr string, creds auth.Credentials) (release func()) {
	p.mu.Lock()
	t, ok := p.targets[addr]
	if !ok {
		t = &target{addr: addr, holders: map[uint64]auth.Credentials{}, det: NewDetector(p.opts.Detector)}
		p.targets[addr] = t
		p.store.SetServer(addr, t.det.Verdict())
	}
	t.latest++
	id := t.latest
	t.holders[id] = creds
	p.mu.Unlock()
	poke(p.wake)
	var once sync.Once
	return func() { once.Do(func() { p.release(t, id) }) }
}

func (p *Prober) release(t *target, id uint64) {
	p.mu.Lock()
	delete(t.holders, id)
	if len(t.holders) > 0 || p.targets[t.addr] != t {
		p.mu.Unlock()
		return
	}
	delete(p.targets, t.addr)
	if t.cancel != nil {
		t.cancel()
	}
	p.store.DeleteServer(t.addr)
	p.mu.Unlock()
}

// Run probes every acquired server until ctx ends; it returns once all its
// goroutines have exited and their sessions are closed.
func (p *Prober) Run(ctx context.Context) error {
	return supervise(ctx, p.wake, func(spawn func(func())) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, t := range p.targets {
			if !t.started {
				tctx, cancel := context.WithCancel(ctx)
				t.started, t.cancel = true, cancel
				spawn(func() { p.work(tctx, t) })
			}
		}
	})
}

// observe folds o into t's detector and publishes the verdict, unless t
// was released meanwhile (its entry is gone from the store).
func (p *Prober) observe(t *target, o Observation) {
	p.mu.Lock()
	t.det = t.det.Observe(o)
	if p.targets[t.addr] == t {
		p.store.SetServer(t.addr, t.det.Verdict())
	}
	p.mu.Unlock()
	if r := p.opts.Recorder; r != nil {
		r.ProbeObserved(t.addr, o)
	}
}

func (p *Prober) snapshot(t *target) (Detector, auth.Credentials) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var creds auth.Credentials
	var newest uint64
	for id, c := range t.holders {
		if id > newest {
			newest, creds = id, c
		}
	}
	return t.det, creds
}

// OutcomeOf is the outcome of a probe that failed with err: Timeout for a
// deadline (the server said nothing), Failed for a refusal or a reset.
func OutcomeOf(err error) Outcome {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return Timeout
	}
	return Failed
}
