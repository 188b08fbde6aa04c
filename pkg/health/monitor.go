package health

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/mount"
)

// Statter runs bounded, single-flight statfs calls (pkg/mount.Statter).
type Statter interface {
	Statfs(ctx context.Context, path string) (mount.StatResult, error)
}

// Probes starts and stops the probing of servers (the Prober).
type Probes interface {
	Acquire(addr string, creds auth.Credentials) (release func())
}

// VolumeSpec describes a staged volume to watch.
type VolumeSpec struct {
	ID      string
	Staging string // the mount to check
	Server  string // host:port of its SMB server (DFS: the target the mount uses)
	// Targets are every DFS target of the volume's link (host:port, Server
	// among them); empty for a plain share. All are probed.
	Targets []string
	// DFSFallback: remount the DFS volume when its mount stays wedged while
	// another target answers (in-place failover did not work).
	DFSFallback bool
	Creds       auth.Credentials // for the server's probe session (empty: anonymous)
	// Remountable: the node can replace a wedged staging mount (false for a
	// volume adopted after a restart: its mount options are not known).
	Remountable bool
	// Initial is a check made at stage time, so the verdict and the usage
	// are known before the first background check.
	Initial *mount.StatResult
	// Dir, when set, is the volume's directory on its share, watched
	// (MonitorOptions.Watches) so its removal or rename under a running
	// pod makes the volume inaccessible at once.
	Dir *DirTarget
}

// Watches starts and stops the watches of volume directories
// (watch.Watcher).
type Watches interface {
	Acquire(t DirTarget, creds auth.Credentials) (release func())
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
	NoticeTTL         time.Duration // "Remounted" is reported this long, default 2 min
	// Watches watches the volumes' directories (VolumeSpec.Dir); nil: none.
	Watches Watches
}

// Monitor watches staged volumes: a bounded statfs per volume, combined with
// the verdict on its server from the Store, published back to the Store.
// A mount that stays wedged while its server answers gets a verdict with
// RemountWanted set; the node remounts it and reports with Remounted.
type Monitor struct {
	opts    MonitorOptions
	statter Statter
	probes  Probes
	store   *Store
	mu      sync.Mutex
	vols    map[string]*watched
	fenced  []string // DFS targets fenced on the node (host:port)
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
	failover  Failover  // the last change of DFS target
	tried     time.Time // last remount request
	wanted    time.Time // the pending remount request, zero when none
	started   bool
	cancel    context.CancelFunc
	wake      chan struct{} // check now
}

// NewMonitor builds a monitor that acquires probes of the volumes' servers
// and reads and writes verdicts in store; Run checks.
func NewMonitor(st Statter, probes Probes, store *Store, o MonitorOptions) *Monitor {
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
	def(&o.NoticeTTL, 2*time.Minute)
	return &Monitor{opts: o, statter: st, probes: probes, store: store, vols: map[string]*watched{}, wake: make(chan struct{}, 1)}
}

// Add starts watching a volume (replacing an earlier spec of the same ID)
// and acquires a probe of its server.
func (m *Monitor) Add(spec VolumeSpec) {
	releases := []func(){m.probes.Acquire(spec.Server, spec.Creds)}
	if spec.Dir != nil && m.opts.Watches != nil {
		releases = append(releases, m.opts.Watches.Acquire(*spec.Dir, spec.Creds))
	}
	for _, t := range spec.Targets {
		if t != spec.Server {
			releases = append(releases, m.probes.Acquire(t, spec.Creds))
		}
	}
	w := &watched{spec: spec, wake: make(chan struct{}, 1), release: func() {
		for _, r := range releases {
			r()
		}
	}}
	now := time.Now()
	if spec.Initial != nil {
		w.record(ClassifyStat(*spec.Initial, nil, m.opts.StatTimeout, now), *spec.Initial)
	} else {
		w.check = MountCheck{OK: true, Reason: ReasonMountOK, Message: "not checked yet", At: now}
	}
	m.mu.Lock()
	old := m.vols[spec.ID]
	m.vols[spec.ID] = w
	sv, _ := m.store.Server(spec.Server)
	w.serverOut = sv.State == StateUnreachable
	m.publishLocked(spec.ID, w, now)
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
	m.store.DeleteVolume(id)
	m.mu.Unlock()
	if w != nil {
		w.stop()
	}
}

func (w *watched) stop() {
	if w.cancel != nil {
		w.cancel()
	}
	w.release()
}

// serverChanged re-evaluates the volumes on addr at once, so a server
// verdict reaches volume events without waiting for the next mount check.
// When the server comes back from Unreachable, its mounts are checked at
// once and reported as MountReconnecting until a check passes: the kernel
// reconnects a mount some time after its server returns.
func (m *Monitor) serverChanged(addr string, sv Verdict) {
	down := sv.State == StateUnreachable
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, w := range m.vols {
		if w.spec.Server != addr {
			if slices.Contains(w.spec.Targets, addr) {
				if fo := &w.failover; fo.From == addr && fo.FromFrozen && fo.Resumed.IsZero() && sv.State == StateHealthy {
					fo.Resumed = now // the frozen target we left answers again
				}
				m.publishLocked(id, w, now) // a standby target changed
			}
			continue
		}
		if w.serverOut && !down {
			w.serverUp = now
			poke(w.wake)
		}
		w.serverOut = down
		m.publishLocked(id, w, now)
	}
}

// dirChanged re-evaluates the volumes whose directory is key.
func (m *Monitor) dirChanged(key string) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, w := range m.vols {
		if w.spec.Dir != nil && w.spec.Dir.Key() == key {
			m.publishLocked(id, w, now)
		}
	}
}

// dirGone returns what a watch knows of w's directory when it is gone.
func (m *Monitor) dirGone(w *watched) (DirVerdict, bool) {
	if w.spec.Dir == nil {
		return DirVerdict{}, false
	}
	dv, ok := m.store.Dir(w.spec.Dir.Key())
	return dv, ok && dv.State == DirMissing
}

// Run checks every watched volume, and follows the server verdicts in the
// Store, until ctx ends; it returns after all its goroutines have exited.
func (m *Monitor) Run(ctx context.Context) error {
	sub := m.store.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = Consume(ctx, sub, func(u Update) {
			switch {
			case u.Kind == KindServer && !u.Gone:
				m.serverChanged(u.Name, u.Server)
			case u.Kind == KindDir:
				m.dirChanged(u.Name)
			}
		})
	}()
	defer func() { <-done }()
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
	defer m.mu.Unlock()
	w.record(ClassifyStat(res, err, m.opts.StatTimeout, now), res)
	if m.remountDueLocked(w, now) {
		w.tried, w.wanted = now, now
	}
	m.publishLocked(id, w, now)
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
func (m *Monitor) remountDueLocked(w *watched, now time.Time) bool {
	if w.spec.DFSFallback {
		return m.dfsRemountDueLocked(w, now)
	}
	// serverOut is the Monitor's own view, updated when it takes in a server
	// change: a server that has just returned in the Store but whose return
	// was not taken in yet must not count as answering for all of its outage.
	if !w.spec.Remountable || !w.wanted.IsZero() || w.serverOut || w.check.OK || now.Sub(w.failingSince()) < m.opts.RemountGrace {
		return false
	}
	if _, gone := m.dirGone(w); gone {
		return false // a new mount of a directory that is not there would fail
	}
	if !w.tried.IsZero() && now.Sub(w.tried) < m.opts.RemountBackoff {
		return false
	}
	sv, ok := m.store.Server(w.spec.Server)
	return ok && (sv.State == StateHealthy || (sv.State == StateDegraded && sv.Reason == ReasonSlow))
}

// dfsRemountDueLocked: the fallback for a DFS volume whose in-place
// failover did not work (no nftables or SOCK_DESTROY, a kernel that does
// not reconnect to another target): its mount has failed for RemountGrace
// while another target of its link answers. A new mount of the DFS path,
// with the dead targets fenced, lands on a live one.
func (m *Monitor) dfsRemountDueLocked(w *watched, now time.Time) bool {
	if !w.spec.Remountable || !w.wanted.IsZero() || w.check.OK || now.Sub(w.failSince) < m.opts.RemountGrace {
		return false
	}
	if !w.tried.IsZero() && now.Sub(w.tried) < m.opts.RemountBackoff {
		return false
	}
	return slices.ContainsFunc(w.spec.Targets, func(t string) bool {
		sv, ok := m.store.Server(t)
		return ok && (sv.State == StateHealthy || (sv.State == StateDegraded && sv.Reason == ReasonSlow))
	})
}

// Remounted tells the Monitor how a remount it asked for ended: on success
// the volume is reported Remounted for NoticeTTL; on failure the request is
// made again after RemountBackoff if the mount stays wedged.
func (m *Monitor) Remounted(id string, err error) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.vols[id]
	if !ok {
		return
	}
	w.wanted = time.Time{}
	if err == nil {
		w.remounted, w.failSince = now, time.Time{}
		w.check = MountCheck{OK: true, Reason: ReasonMountOK, Message: "remounted", At: now}
	}
	m.publishLocked(id, w, now)
}

// Retarget records that a DFS volume's mount moved to f.To (f.From is ""
// when where it was is not known).
func (m *Monitor) Retarget(id string, f Failover) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.vols[id]
	if !ok || w.spec.Server == f.To {
		return
	}
	w.spec.Server = f.To
	sv, _ := m.store.Server(f.To)
	w.serverOut = sv.State == StateUnreachable
	if f.From != "" {
		w.failover = f
	}
	m.publishLocked(id, w, f.At)
	poke(w.wake)
}

// Fenced records the DFS targets fenced on the node now.
func (m *Monitor) Fenced(targets []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.Equal(m.fenced, targets) {
		return
	}
	m.fenced = slices.Clone(targets)
	now := time.Now()
	for id, w := range m.vols {
		if len(w.spec.Targets) > 0 {
			m.publishLocked(id, w, now)
		}
	}
}

// publishLocked writes w's verdict to the store, if w is still watched.
func (m *Monitor) publishLocked(id string, w *watched, now time.Time) {
	if m.vols[id] == w {
		m.store.SetVolume(id, m.verdictLocked(w, now))
	}
}
