// Package inventory is the controller's view of the volumes it manages:
// their capacity, the credentials to check them with, the health of their
// servers (probed from the controller) and whether their directories still
// exist. It answers ListVolumes and the controller health RPCs from memory.
package inventory

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Controller-side reasons.
const (
	// ReasonUnreachable: the controller's prober finds the server
	// unreachable (the node's own verdict is health.ReasonUnreachable).
	ReasonUnreachable = "ServerUnreachableFromController"
	ReasonDirMissing  = "VolumeDirectoryMissing"
	// ReasonDirRenamed: a watch saw the directory renamed on the share (its
	// data is likely under the new name).
	ReasonDirRenamed  = "VolumeDirectoryRenamed"
	ReasonCannotCheck = "CannotCheck"
)

// DirChecker reports whether a volume's directory exists, over SMB with
// the given credentials (the controller's pool).
type DirChecker func(ctx context.Context, v volume.Volume, creds auth.Credentials) (bool, error)

// Probes starts and stops the probing of servers (health.Prober).
type Probes interface {
	Acquire(addr string, creds auth.Credentials) (release func())
}

// ServerVerdicts reads the verdicts on servers and what directory watches
// know of volume directories (health.Store).
type ServerVerdicts interface {
	Server(addr string) (health.Verdict, bool)
	Dir(key string) (health.DirVerdict, bool)
	Watch(key string) (health.WatchState, bool)
	Subscribe() *health.Subscription
}

// Watches starts and stops CHANGE_NOTIFY watches of volume directories
// (watch.Watcher): one per directory that holds volumes.
type Watches interface {
	Acquire(t health.DirTarget, creds auth.Credentials) (release func())
}

// Targets returns the addresses (host:port) of the DFS targets of a
// volume's link, nil for a plain share.
type Targets func(ctx context.Context, v volume.Volume, creds auth.Credentials) ([]string, error)

// Options configure an Inventory. Zero values get defaults.
type Options struct {
	// Targets, when set, finds a volume's DFS targets at its first check;
	// they are probed from then on and reported one by one.
	Targets Targets
	// Watches, when set, watches the directory of every volume on a plain
	// share; a volume whose watch stands is not polled.
	Watches       Watches
	CheckInterval time.Duration // directory checks, default 1 min
	CheckTimeout  time.Duration // per check, default 10 s
	Parallel      int           // checks at once, default 4
}

// Inventory is the controller's set of volumes.
type Inventory struct {
	opts    Options
	check   DirChecker
	probes  Probes
	servers ServerVerdicts
	mu      sync.Mutex
	vols    map[string]*cataloged
	byDir   map[string]map[string]bool // watched directory key -> volume IDs
	fresh   []string                   // tracked since the last round of checks: checked at once
	wake    chan struct{}
}

type cataloged struct {
	vol      volume.Volume
	capacity int64
	creds    auth.Credentials
	release  func()
	checked  time.Time
	present  bool
	err      error
	last     health.VolumeVerdict
	targets  []string // DFS targets, probed; nil until known or for a plain share
	resolved bool
	untarget func()
	dirKey   string // the store key of its directory while watched
	watchKey string // and of the watch on its parent
	unwatch  func()
}

// New builds an inventory; Run checks.
func New(check DirChecker, probes Probes, servers ServerVerdicts, o Options) *Inventory {
	if o.CheckInterval == 0 {
		o.CheckInterval = time.Minute
	}
	if o.CheckTimeout == 0 {
		o.CheckTimeout = 10 * time.Second
	}
	if o.Parallel == 0 {
		o.Parallel = 4
	}
	return &Inventory{opts: o, check: check, probes: probes, servers: servers, vols: map[string]*cataloged{}, byDir: map[string]map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Track adds (or refreshes) a volume. Credentials, when given, replace the
// ones known for it; capacity 0 keeps the known one.
func (c *Inventory) Track(id string, v volume.Volume, capacity int64, creds auth.Credentials) {
	c.mu.Lock()
	e, ok := c.vols[id]
	if !ok {
		e = &cataloged{vol: v, release: c.probes.Acquire(v.Source.Address(), creds)}
		c.vols[id] = e
		c.fresh = append(c.fresh, id)
	}
	if capacity > 0 {
		e.capacity = capacity
	}
	if creds.Username != "" {
		e.creds = creds
	}
	c.mu.Unlock()
	if !ok {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// Forget drops a deleted volume.
func (c *Inventory) Forget(id string) {
	c.mu.Lock()
	e := c.vols[id]
	delete(c.vols, id)
	if e != nil && e.dirKey != "" {
		delete(c.byDir[e.dirKey], id)
		if len(c.byDir[e.dirKey]) == 0 {
			delete(c.byDir, e.dirKey)
		}
	}
	c.mu.Unlock()
	if e != nil {
		e.release()
		if e.untarget != nil {
			e.untarget()
		}
		if e.unwatch != nil {
			e.unwatch()
		}
	}
}

// Entry is a cataloged volume and its verdict.
type Entry struct {
	ID       string
	Volume   volume.Volume
	Capacity int64
	Verdict  health.VolumeVerdict
	// Targets are the verdicts on each DFS target of the volume's link,
	// as the controller's prober sees them (empty for a plain share).
	Targets []Target
}

// Target is one DFS target and the verdict on it.
type Target struct {
	Addr    string
	Verdict health.Verdict
}

// Get returns one volume.
func (c *Inventory) Get(id string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.vols[id]
	if !ok {
		return Entry{}, false
	}
	return c.entryLocked(id, e), true
}

// List returns every volume, sorted by ID.
func (c *Inventory) List() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Entry, 0, len(c.vols))
	for _, id := range slices.Sorted(maps.Keys(c.vols)) {
		e := c.vols[id]
		out = append(out, c.entryLocked(id, e))
	}
	return out
}

func (c *Inventory) verdictLocked(e *cataloged) health.VolumeVerdict {
	sv, _ := c.servers.Server(e.vol.Source.Address())
	checked, present, renamed := e.checked, e.present, ""
	if dv, ok := c.watched(e); ok {
		checked, present, renamed = dv.At, dv.State == health.DirPresent, dv.RenamedTo
	}
	v := CombineDir(checked, present, e.err, sv)
	if v.Reason == ReasonDirMissing && renamed != "" {
		v.Reason, v.Message = ReasonDirRenamed, "the volume's directory was renamed on the share to "+renamed
	}
	return v
}

// watched returns what a standing watch knows of e's directory.
func (c *Inventory) watched(e *cataloged) (health.DirVerdict, bool) {
	if e.dirKey == "" {
		return health.DirVerdict{}, false
	}
	dv, ok := c.servers.Dir(e.dirKey)
	return dv, ok && dv.Watching && dv.State != health.DirUnknown
}

// CombineDir is the controller's pure rule: server unreachable, or the
// directory gone, make the volume inaccessible; a slow server degrades it;
// a volume never checked (no usable credentials) is unknown.
func CombineDir(checked time.Time, present bool, err error, sv health.Verdict) health.VolumeVerdict {
	switch {
	case sv.State == health.StateUnreachable:
		return health.VolumeVerdict{State: health.StateUnreachable, Reason: ReasonUnreachable, Message: "SMB server unreachable from the controller: " + sv.Message}
	case !checked.IsZero() && !present:
		return health.VolumeVerdict{State: health.StateUnreachable, Reason: ReasonDirMissing, Message: "the volume's directory does not exist on the share"}
	case checked.IsZero() && err != nil:
		return health.VolumeVerdict{State: health.StateUnknown, Reason: ReasonCannotCheck, Message: "cannot check the directory: " + err.Error()}
	case sv.State == health.StateDegraded:
		return health.VolumeVerdict{State: health.StateDegraded, Reason: sv.Reason, Message: "SMB server: " + sv.Message}
	case checked.IsZero():
		return health.VolumeVerdict{State: health.StateUnknown, Reason: health.ReasonNotProbed, Message: "not checked yet"}
	}
	return health.VolumeVerdict{State: health.StateHealthy, Reason: health.ReasonVolumeHealthy, Message: "directory present, server answering"}
}

// Run checks every volume's directory each CheckInterval, and a volume
// tracked since the last round at once (alone), until ctx ends.
func (c *Inventory) Run(ctx context.Context) error {
	sub := c.servers.Subscribe()
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		_ = health.Consume(ctx, sub, func(u health.Update) {
			if u.Kind == health.KindDir {
				c.dirChanged(u.Name)
			}
		})
	}()
	defer func() { <-followed }()
	t := time.NewTicker(c.opts.CheckInterval)
	defer t.Stop()
	all := true
	for {
		c.mu.Lock()
		ids := c.fresh
		if all {
			ids = slices.Collect(maps.Keys(c.vols))
		}
		c.fresh = nil
		c.mu.Unlock()
		c.checkAll(ctx, ids)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			all = true
		case <-c.wake:
			all = false
		}
	}
}

func (c *Inventory) checkAll(ctx context.Context, ids []string) {
	sem := make(chan struct{}, c.opts.Parallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c.checkOne(ctx, id)
		})
	}
	wg.Wait()
}

func (c *Inventory) checkOne(ctx context.Context, id string) {
	c.mu.Lock()
	e, ok := c.vols[id]
	if !ok {
		c.mu.Unlock()
		return
	}
	v, creds, resolved := e.vol, e.creds, e.resolved
	_, watched := c.watched(e)
	ws, _ := c.servers.Watch(e.watchKey)
	c.mu.Unlock()
	if watched || (e.watchKey != "" && ws.Watching) {
		return // the watch tells (or is about to: it looks the name up); nothing to poll
	}
	cctx, cancel := context.WithTimeout(ctx, c.opts.CheckTimeout)
	if !resolved && c.opts.Targets != nil {
		if targets, err := c.opts.Targets(cctx, v, creds); err == nil {
			c.watchTargets(id, e, targets, creds)
			if len(targets) == 0 {
				c.watchDir(id, e, creds)
			}
		}
	} else if !resolved {
		c.watchDir(id, e, creds)
	}
	present, err := c.check(cctx, v, creds)
	cancel()
	if ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	if err == nil {
		e.checked, e.present, e.err = time.Now(), present, nil
	} else {
		e.err = err
	}
	c.noteLocked(id, e)
	c.mu.Unlock()
}

// noteLocked logs a change of e's verdict.
func (c *Inventory) noteLocked(id string, e *cataloged) {
	verdict := c.verdictLocked(e)
	if verdict.State != e.last.State || verdict.Reason != e.last.Reason {
		klog.InfoS("volume health changed (controller view)", "volumeID", id, "state", verdict.State,
			"reason", verdict.Reason, "message", verdict.Message)
	}
	e.last = verdict
}

// dirChanged takes in what a watch says of a volume directory.
func (c *Inventory) dirChanged(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.byDir[key] {
		if e := c.vols[id]; e != nil {
			c.noteLocked(id, e)
		}
	}
}

func (c *Inventory) entryLocked(id string, e *cataloged) Entry {
	out := Entry{ID: id, Volume: e.vol, Capacity: e.capacity, Verdict: c.verdictLocked(e)}
	for _, t := range e.targets {
		sv, _ := c.servers.Server(t)
		out.Targets = append(out.Targets, Target{Addr: t, Verdict: sv})
	}
	return out
}

// watchTargets records a volume's DFS targets and probes them.
func (c *Inventory) watchTargets(id string, e *cataloged, targets []string, creds auth.Credentials) {
	var releases []func()
	for _, t := range targets {
		releases = append(releases, c.probes.Acquire(t, creds))
	}
	release := func() {
		for _, r := range releases {
			r()
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vols[id] != e || e.resolved {
		release() // forgotten, or resolved by another check meanwhile
		return
	}
	e.targets, e.resolved, e.untarget = targets, true, release
}

// watchDir starts the watch of a plain-share volume's directory (a DFS
// volume's lives on its targets: it is polled). A volume at the share root
// has no parent to watch.
func (c *Inventory) watchDir(id string, e *cataloged, creds auth.Credentials) {
	parent, name, ok := e.vol.Parent()
	if c.opts.Watches == nil || !ok {
		return
	}
	t := health.DirTarget{Addr: e.vol.Source.Address(), Share: e.vol.Source.Share, Dir: parent, Name: name}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vols[id] != e || e.unwatch != nil {
		return
	}
	e.resolved = true
	e.dirKey, e.watchKey, e.unwatch = t.Key(), t.WatchKey(), c.opts.Watches.Acquire(t, creds)
	if c.byDir[e.dirKey] == nil {
		c.byDir[e.dirKey] = map[string]bool{}
	}
	c.byDir[e.dirKey][id] = true
}
