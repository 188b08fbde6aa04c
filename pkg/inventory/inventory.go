package health

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/volume"
)

// Controller-side reasons.
const (
	ReasonDirMissing  = "VolumeDirectoryMissing"
	ReasonCannotCheck = "CannotCheck"
)

// DirChecker reports whether a volume's directory exists, over SMB with
// the given credentials (the controller's pool).
type DirChecker func(ctx context.Context, v volume.Volume, creds auth.Credentials) (bool, error)

// CatalogOptions configure a Catalog. Zero values get defaults.
type CatalogOptions struct {
	CheckInterval time.Duration // directory checks, default 1 min
	CheckTimeout  time.Duration // per check, default 10 s
	Parallel      int           // checks at once, default 4
	OnChange      func(id string, v VolumeVerdict)
}

// Catalog is the controller's view of its volumes: the servers they live on
// (probed from the controller) and whether their directories still exist.
// It answers ListVolumes and the controller health RPCs without I/O.
type Catalog struct {
	opts    CatalogOptions
	check   DirChecker
	servers Servers
	mu      sync.Mutex
	vols    map[string]*cataloged
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
	last     VolumeVerdict
}

// NewCatalog builds a catalog; Run checks.
func NewCatalog(check DirChecker, servers Servers, o CatalogOptions) *Catalog {
	if o.CheckInterval == 0 {
		o.CheckInterval = time.Minute
	}
	if o.CheckTimeout == 0 {
		o.CheckTimeout = 10 * time.Second
	}
	if o.Parallel == 0 {
		o.Parallel = 4
	}
	return &Catalog{opts: o, check: check, servers: servers, vols: map[string]*cataloged{}, wake: make(chan struct{}, 1)}
}

// Track adds (or refreshes) a volume. Credentials, when given, replace the
// ones known for it; capacity 0 keeps the known one.
func (c *Catalog) Track(id string, v volume.Volume, capacity int64, creds auth.Credentials) {
	c.mu.Lock()
	e, ok := c.vols[id]
	if !ok {
		e = &cataloged{vol: v, release: c.servers.Acquire(v.Source.Address(), creds)}
		c.vols[id] = e
	}
	if capacity > 0 {
		e.capacity = capacity
	}
	if creds.Username != "" {
		e.creds = creds
	}
	c.mu.Unlock()
	if !ok {
		poke(c.wake)
	}
}

// Forget drops a deleted volume.
func (c *Catalog) Forget(id string) {
	c.mu.Lock()
	e := c.vols[id]
	delete(c.vols, id)
	c.mu.Unlock()
	if e != nil {
		e.release()
	}
}

// Entry is a cataloged volume and its verdict.
type Entry struct {
	ID       string
	Volume   volume.Volume
	Capacity int64
	Verdict  VolumeVerdict
}

// Get returns one volume.
func (c *Catalog) Get(id string) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.vols[id]
	if !ok {
		return Entry{}, false
	}
	return Entry{ID: id, Volume: e.vol, Capacity: e.capacity, Verdict: c.verdictLocked(e)}, true
}

// List returns every volume, sorted by ID.
func (c *Catalog) List() []Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Entry, 0, len(c.vols))
	for _, id := range slices.Sorted(maps.Keys(c.vols)) {
		e := c.vols[id]
		out = append(out, Entry{ID: id, Volume: e.vol, Capacity: e.capacity, Verdict: c.verdictLocked(e)})
	}
	return out
}

func (c *Catalog) verdictLocked(e *cataloged) VolumeVerdict {
	sv, _ := c.servers.Verdict(e.vol.Source.Address())
	return CombineDir(e.checked, e.present, e.err, sv)
}

// CombineDir is the controller's pure rule: server unreachable, or the
// directory gone, make the volume inaccessible; a slow server degrades it;
// a volume never checked (no usable credentials) is unknown.
func CombineDir(checked time.Time, present bool, err error, sv Verdict) VolumeVerdict {
	switch {
	case sv.State == StateUnreachable:
		return VolumeVerdict{State: StateUnreachable, Reason: ReasonUnreachable, Message: "SMB server unreachable from the controller: " + sv.Message}
	case !checked.IsZero() && !present:
		return VolumeVerdict{State: StateUnreachable, Reason: ReasonDirMissing, Message: "the volume's directory does not exist on the share"}
	case checked.IsZero() && err != nil:
		return VolumeVerdict{State: StateUnknown, Reason: ReasonCannotCheck, Message: "cannot check the directory: " + err.Error()}
	case sv.State == StateDegraded:
		return VolumeVerdict{State: StateDegraded, Reason: sv.Reason, Message: "SMB server: " + sv.Message}
	case checked.IsZero():
		return VolumeVerdict{State: StateUnknown, Reason: ReasonNotProbed, Message: "not checked yet"}
	}
	return VolumeVerdict{State: StateHealthy, Reason: ReasonVolumeHealthy, Message: "directory present, server answering"}
}

// Run checks every volume's directory each CheckInterval (and new ones at
// once) until ctx ends.
func (c *Catalog) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.CheckInterval)
	defer t.Stop()
	for {
		c.checkAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.wake:
		}
	}
}

func (c *Catalog) checkAll(ctx context.Context) {
	c.mu.Lock()
	ids := slices.Collect(maps.Keys(c.vols))
	c.mu.Unlock()
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

func (c *Catalog) checkOne(ctx context.Context, id string) {
	c.mu.Lock()
	e, ok := c.vols[id]
	if !ok {
		c.mu.Unlock()
		return
	}
	v, creds := e.vol, e.creds
	c.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, c.opts.CheckTimeout)
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
	verdict := c.verdictLocked(e)
	changed := verdict.State != e.last.State || verdict.Reason != e.last.Reason
	e.last = verdict
	c.mu.Unlock()
	if changed && c.opts.OnChange != nil {
		c.opts.OnChange(id, verdict)
	}
}
