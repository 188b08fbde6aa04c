package health

import (
	"context"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/mount"
)

// Statter runs bounded, single-flight statfs calls (pkg/mount.Statter).
type Statter interface {
	Statfs(ctx context.Context, path string) (mount.StatResult, error)
}

// Servers is what the Monitor needs from the Prober.
type Servers interface {
	Acquire(addr string, creds auth.Credentials) (release func())
	Verdict(addr string) (Verdict, bool)
}

// VolumeSpec describes a staged volume to watch.
type VolumeSpec struct {
	ID      string
	Staging string           // the mount to check
	Server  string           // host:port of its SMB server
	Creds   auth.Credentials // for the server's probe session (empty: anonymous)
	// Remount replaces a wedged staging mount (and what is bound from it);
	// nil when the volume cannot be remounted (adopted after a restart).
	Remount func(ctx context.Context) error
	// Initial is a check made at stage time, so the verdict and the usage
	// are known before the first background check.
	Initial *mount.StatResult
}

// MonitorOptions configure a Monitor. Zero values get defaults.
type MonitorOptions struct {
	CheckInterval time.Duration // statfs period per volume, default 2 s
	// ReconnectInterval is the statfs period while a mount waits for the
	// kernel to reconnect it after its server returned, default 500 ms, so
	// the volume is reported healthy soon after it works again.
	ReconnectInterval time.Duration
	StatTimeout       time.Duration // a statfs slower than this is a stall, default 1 s
	RemountGrace      time.Duration // mount broken while its server answers: remount after, default 10 s
	RemountBackoff    time.Duration // at least this between remounts of one volume, default 1 min
	RemountTimeout    time.Duration // bound on one remount, default 30 s
	NoticeTTL         time.Duration // "Remounted" is reported this long, default 2 min
	// OnChange is called, outside any lock, when a volume's verdict state or
	// reason changes (events, metrics).
	OnChange func(id string, v VolumeVerdict)
	// OnRemount is called after every remount attempt.
	OnRemount func(id string, err error)
	// OnRemove is called when a volume stops being watched.
	OnRemove func(id string)
}

// Monitor watches staged volumes: a bounded statfs per volume, combined with
// the verdict on its server.
type Monitor struct {
	opts    MonitorOptions
	statter Statter
	servers Servers
	mu      sync.Mutex
	vols    map[string]*watched
	wake    chan struct{}
}

type watched struct {
	spec      VolumeSpec
	release   func()
	check     MountCheck
	usage     mount.Usage
	usageAt   time.Time
	failSince time.Time // first failed check of the current run of failures
	lastOK    time.Time // last passed check
	serverUp  time.Time // when the server last came back from Unreachable
	serverOut bool      // the server was Unreachable at the last look
	remounted time.Time // last successful remount
	tried     time.Time // last remount attempt
	last      VolumeVerdict
	started   bool
	cancel    context.CancelFunc
	wake      chan struct{} // check now
}

// NewMonitor builds a monitor; Run checks.
func NewMonitor(st Statter, servers Servers, o MonitorOptions) *Monitor {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.CheckInterval, 2*time.Second)
	def(&o.ReconnectInterval, 500*time.Millisecond)
	def(&o.StatTimeout, time.Second)
	def(&o.RemountGrace, 10*time.Second)
	def(&o.RemountBackoff, time.Minute)
	def(&o.RemountTimeout, 30*time.Second)
	def(&o.NoticeTTL, 2*time.Minute)
	return &Monitor{opts: o, statter: st, servers: servers, vols: map[string]*watched{}, wake: make(chan struct{}, 1)}
}

// Add starts watching a volume (replacing an earlier spec of the same ID)
// and acquires a probe of its server.
func (m *Monitor) Add(spec VolumeSpec) {
	w := &watched{spec: spec, release: m.servers.Acquire(spec.Server, spec.Creds), wake: make(chan struct{}, 1)}
	now := time.Now()
	if spec.Initial != nil {
		w.record(ClassifyStat(*spec.Initial, nil, m.opts.StatTimeout, now), *spec.Initial)
	} else {
		w.check = MountCheck{OK: true, Reason: ReasonMountOK, Message: "not checked yet", At: now}
	}
	m.mu.Lock()
	old := m.vols[spec.ID]
	m.vols[spec.ID] = w
	m.mu.Unlock()
	if old != nil {
		old.stop()
	}
	poke(m.wake)
}

// Remove stops watching a volume and releases its server probe.
func (m *Monitor) Remove(id string) {
	m.mu.Lock()
	w := m.vols[id]
	delete(m.vols, id)
	m.mu.Unlock()
	if w != nil {
		w.stop()
		if m.opts.OnRemove != nil {
			m.opts.OnRemove(id)
		}
	}
}

func (w *watched) stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.release()
}

// ServerChanged re-evaluates the volumes on addr at once (wire the Prober's
// OnChange here), so a server verdict reaches volume events without
// waiting for the next mount check. When the server comes back from
// Unreachable, its mounts are checked at once and reported as
// MountReconnecting until a check passes: the kernel reconnects a mount
// some time after its server returns.
func (m *Monitor) ServerChanged(addr string) {
	sv, _ := m.servers.Verdict(addr)
	down := sv.State == StateUnreachable
	now := time.Now()
	m.mu.Lock()
	var hit []*watched
	var ids []string
	for id, w := range m.vols {
		if w.spec.Server != addr {
			continue
		}
		if w.serverOut && !down {
			w.serverUp = now
			poke(w.wake)
		}
		w.serverOut = down
		hit, ids = append(hit, w), append(ids, id)
	}
	m.mu.Unlock()
	for i, w := range hit {
		m.publish(ids[i], w)
	}
}

// Known reports whether the volume is watched.
func (m *Monitor) Known(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.vols[id]
	return ok
}

// Run checks every watched volume until ctx ends and returns after all its
// goroutines have exited.
func (m *Monitor) Run(ctx context.Context) error {
	return supervise(ctx, m.wake, func(spawn func(func())) {
		m.mu.Lock()
		defer m.mu.Unlock()
		for id, w := range m.vols {
			if !w.started {
				wctx, cancel := context.WithCancel(ctx)
				w.started, w.cancel = true, cancel
				spawn(func() { m.watch(wctx, id, w) })
			}
		}
	})
}

func (m *Monitor) watch(ctx context.Context, id string, w *watched) {
	tick := time.NewTicker(m.opts.CheckInterval)
	defer tick.Stop()
	soon := time.NewTimer(time.Hour) // the next check while reconnecting
	defer soon.Stop()
	for {
		m.checkOnce(ctx, id, w)
		m.mu.Lock()
		reconnecting := w.reconnecting(time.Now(), m.opts.RemountGrace)
		m.mu.Unlock()
		if reconnecting {
			soon.Reset(m.opts.ReconnectInterval)
		} else {
			soon.Stop()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-soon.C:
		case <-w.wake:
		}
	}
}

// checkOnce runs one bounded statfs, records it and remounts when due.
func (m *Monitor) checkOnce(ctx context.Context, id string, w *watched) {
	sctx, cancel := context.WithTimeout(ctx, m.opts.StatTimeout)
	res, err := m.statter.Statfs(sctx, w.spec.Staging)
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	m.mu.Lock()
	w.record(ClassifyStat(res, err, m.opts.StatTimeout, now), res)
	m.mu.Unlock()
	m.publish(id, w)
	if m.remountDue(w, now) {
		m.remount(ctx, id, w)
	}
}

func (w *watched) record(c MountCheck, res mount.StatResult) {
	w.check = c
	if c.OK {
		w.usage, w.usageAt = res.Usage, res.Finished
		w.failSince, w.lastOK = time.Time{}, c.At
	} else if w.failSince.IsZero() {
		w.failSince = c.At
	}
}

// reconnecting: w's server returned less than grace ago and its mount has
// not passed a check since. The kernel is expected to reconnect it by
// itself (even when the outage was too short for a check to see it); after
// grace it is remounted.
func (w *watched) reconnecting(now time.Time, grace time.Duration) bool {
	if w.serverOut || w.serverUp.IsZero() || now.Sub(w.serverUp) >= grace {
		return false
	}
	return w.unverified() || (!w.check.OK && w.lastOK.Before(w.serverUp))
}

// unverified: no mount check was recorded since the server came back.
func (w *watched) unverified() bool { return w.check.At.Before(w.serverUp) }

// failingSince is when the current run of mount failures began to count
// against RemountGrace: its first failure, or the server's return if later.
func (w *watched) failingSince() time.Time {
	if w.serverUp.After(w.failSince) {
		return w.serverUp
	}
	return w.failSince
}

// remountDue: the mount has failed for RemountGrace while its server kept
// answering, so the fault is in this mount, not the server. Failures seen
// while the server was down do not count: after a server returns, the
// kernel needs its own few seconds to reconnect, and remounting every
// volume then would only race it.
func (m *Monitor) remountDue(w *watched, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.spec.Remount == nil || w.check.OK || now.Sub(w.failingSince()) < m.opts.RemountGrace {
		return false
	}
	if !w.tried.IsZero() && now.Sub(w.tried) < m.opts.RemountBackoff {
		return false
	}
	sv, ok := m.servers.Verdict(w.spec.Server)
	return ok && (sv.State == StateHealthy || (sv.State == StateDegraded && sv.Reason == ReasonSlow))
}

func (m *Monitor) remount(ctx context.Context, id string, w *watched) {
	rctx, cancel := context.WithTimeout(ctx, m.opts.RemountTimeout)
	err := w.spec.Remount(rctx)
	cancel()
	now := time.Now()
	m.mu.Lock()
	w.tried = now
	if err == nil {
		w.remounted, w.failSince = now, time.Time{}
		w.check = MountCheck{OK: true, Reason: ReasonMountOK, Message: "remounted", At: now}
	}
	m.mu.Unlock()
	if m.opts.OnRemount != nil {
		m.opts.OnRemount(id, err)
	}
	m.publish(id, w)
}

// publish recomputes the verdict and reports a change.
func (m *Monitor) publish(id string, w *watched) {
	m.mu.Lock()
	v := m.verdictLocked(w, time.Now())
	changed := v.State != w.last.State || v.Reason != w.last.Reason
	if changed {
		w.last = v
	}
	m.mu.Unlock()
	if changed && m.opts.OnChange != nil {
		m.opts.OnChange(id, v)
	}
}
