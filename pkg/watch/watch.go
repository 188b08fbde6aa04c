// Package watch keeps SMB2 CHANGE_NOTIFY watches on the directories that
// hold volumes (one per directory, however many volumes it holds) and
// publishes to the health Store whether each volume directory someone
// asked about exists: removed, renamed (with its new name) or restored.
//
// A watch arms its notify before it lists the directory, so no change
// falls between the listing and the first event; it lists again when the
// server says it dropped events (STATUS_NOTIFY_ENUM_DIR) and after every
// reconnect. While a watch is down (connection lost, the prober finds the
// server unreachable, the directory itself gone) its directories are
// published as not watched, and consumers fall back to polling. A pending
// notify proves nothing about the server's health: the prober's verdict
// ends a watch on a frozen server.
package watch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/auth"
	"github.com/csi-smb/csi-smb/pkg/health"
	"github.com/csi-smb/csi-smb/pkg/smb"
	"github.com/csi-smb/csi-smb/pkg/smb/wire"
)

// Conn is one session on a share that can watch directories
// (smb.TreeConn).
type Conn interface {
	OpenDir(ctx context.Context, dir string) (wire.FileID, error)
	Notify(ctx context.Context, fid wire.FileID, maxOut uint32) ([]wire.NotifyEvent, error)
	CloseFile(ctx context.Context, fid wire.FileID) error
	Close() error
}

// Dialer opens Conns (smb.ProbeDialer.DialTree wrapped).
type Dialer func(ctx context.Context, addr, share string, creds auth.Credentials) (Conn, error)

// Lister looks at directories over another session (the pool's): a
// listing for rescans, and whether one path exists, for a name acquired in
// a directory watched already.
type Lister interface {
	List(ctx context.Context, addr, share, dir string, creds auth.Credentials) ([]string, error)
	Exists(ctx context.Context, addr, share, path string, creds auth.Credentials) (bool, error)
}

// maxLookups is the most names looked up one by one; more are found by
// listing the directory again (a controller tracking thousands of volumes
// at start).
const maxLookups = 16

// Options configure a Watcher. Zero values get defaults.
type Options struct {
	Role       string        // "controller" or "node", for the metrics
	Timeout    time.Duration // per dial, open, list; default 10 s
	MaxOutput  uint32        // notify buffer; beyond it the server says rescan; default 16 KiB
	MinBackoff time.Duration // between failed attempts, default 500 ms, doubling to MaxBackoff
	MaxBackoff time.Duration // default 30 s
}

// Watcher runs the watches.
type Watcher struct {
	opts  Options
	dial  Dialer
	list  Lister
	store *health.Store
	mu    sync.Mutex
	dirs  map[string]*dir // by DirTarget.WatchKey
	wake  chan struct{}
}

// dir is one watched directory and the names wanted in it.
type dir struct {
	key     string
	target  health.DirTarget // Name unused
	creds   auth.Credentials
	names   map[string]int // wanted names, reference counted
	started bool
	cancel  context.CancelFunc
	retry   chan struct{} // redial now: the server answers again
	kick    chan struct{} // drop the connection: the server is unreachable
	confirm chan struct{} // a wanted name is not known yet: look it up
	// What the watch knows, under Watcher.mu.
	present map[string]bool   // names listed or reported since; nil before the first listing
	renamed map[string]string // old name -> new name
	known   map[string]bool   // wanted names whose state a listing, an event or a lookup established
	touched map[string]uint64 // per name, the event sequence number that last mentioned it
	seq     uint64
	state   health.WatchState
}

// New builds a watcher that publishes to store; Run watches.
func New(d Dialer, l Lister, store *health.Store, o Options) *Watcher {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxOutput == 0 {
		o.MaxOutput = 16 << 10
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	return &Watcher{opts: o, dial: d, list: l, store: store, dirs: map[string]*dir{}, wake: make(chan struct{}, 1)}
}

// Acquire watches the volume directory t with creds (the newest given
// win for the directory) until release is called.
func (w *Watcher) Acquire(t health.DirTarget, creds auth.Credentials) (release func()) {
	key := t.WatchKey()
	w.mu.Lock()
	d, ok := w.dirs[key]
	if !ok {
		p := t
		p.Name = ""
		d = &dir{key: key, target: p, names: map[string]int{}, retry: make(chan struct{}, 1), kick: make(chan struct{}, 1),
			confirm: make(chan struct{}, 1), known: map[string]bool{}, touched: map[string]uint64{}, renamed: map[string]string{},
			state: health.WatchState{Role: w.opts.Role, Message: "not armed yet", Since: time.Now()}}
		w.dirs[key] = d
		w.store.SetWatch(key, d.state)
	}
	if creds.Username != "" || !ok {
		d.creds = creds
	}
	d.names[t.Name]++
	if d.names[t.Name] == 1 {
		// Not in a listing yet: unknown until a listing, an event or a
		// lookup says (the event of a directory just created may still be
		// on its way).
		w.store.SetDir(t.Key(), health.DirVerdict{At: time.Now()})
		poke(d.confirm)
	}
	w.mu.Unlock()
	poke(w.wake)
	var once sync.Once
	return func() { once.Do(func() { w.release(key, t) }) }
}

func (w *Watcher) release(key string, t health.DirTarget) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.dirs[key]
	if d == nil {
		return
	}
	if d.names[t.Name]--; d.names[t.Name] > 0 {
		return
	}
	delete(d.names, t.Name)
	delete(d.known, t.Name)
	w.store.DeleteDir(t.Key())
	if len(d.names) == 0 {
		delete(w.dirs, key)
		w.store.DeleteWatch(key)
		if d.cancel != nil {
			d.cancel()
		}
	}
}

// Run keeps every watch until ctx ends and returns after all of them have
// stopped. It follows the server verdicts in the store: a server found
// unreachable ends its watches at once (a notify on a frozen server would
// wait forever), and one that answers again is redialed at once.
func (w *Watcher) Run(ctx context.Context) error {
	sub := w.store.Subscribe()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		_ = health.Consume(ctx, sub, func(u health.Update) {
			if u.Kind == health.KindServer && !u.Gone {
				w.serverChanged(u.Name, u.Server)
			}
		})
	})
	for {
		w.mu.Lock()
		for _, d := range w.dirs {
			if !d.started {
				dctx, cancel := context.WithCancel(ctx)
				d.started, d.cancel = true, cancel
				wg.Go(func() { w.keep(dctx, d) })
			}
		}
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		}
	}
}

func (w *Watcher) serverChanged(addr string, v health.Verdict) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, d := range w.dirs {
		if d.target.Addr != addr {
			continue
		}
		switch v.State {
		case health.StateUnreachable:
			poke(d.kick)
		case health.StateHealthy, health.StateDegraded:
			poke(d.retry)
		}
	}
}

// keep holds the watch on d until ctx ends: connect, open, arm, list,
// follow; after a failure, wait (backoff, or a retry poke) and again.
func (w *Watcher) keep(ctx context.Context, d *dir) {
	backoff := w.opts.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := w.session(ctx, d)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > w.opts.MaxBackoff {
			backoff = w.opts.MinBackoff // it had worked for a while
		}
		w.lost(d, err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
			backoff = min(2*backoff, w.opts.MaxBackoff)
		case <-d.retry:
			t.Stop()
			backoff = w.opts.MinBackoff
		}
	}
}

// session is one connection's life: it returns why it ended.
func (w *Watcher) session(ctx context.Context, d *dir) error {
	w.mu.Lock()
	creds := d.creds
	w.mu.Unlock()
	t := d.target
	select {
	case <-d.kick: // an unreachable verdict from before this session: the dial will tell
	default:
	}
	dctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	conn, err := w.dial(dctx, t.Addr, t.Share, creds)
	cancel()
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var kicked atomic.Bool
	go func() { // the prober's verdict ends the session: no CANCEL to a server that does not answer
		select {
		case <-d.kick:
			kicked.Store(true)
			_ = conn.Close()
			stop()
		case <-sctx.Done():
		}
	}()
	octx, cancel := context.WithTimeout(sctx, w.opts.Timeout)
	fid, err := conn.OpenDir(octx, t.Dir)
	cancel()
	if err != nil {
		if smb.IsNotExist(err) {
			w.apply(d, nil, map[string]bool{}, false) // the parent is gone: every volume in it too
		}
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = conn.CloseFile(cctx, fid)
	}()
	events := make(chan notifyResult, 1)
	arm := func() {
		go func() { ev, err := conn.Notify(sctx, fid, w.opts.MaxOutput); events <- notifyResult{ev, err} }()
	}
	arm()
	if err := w.rescan(sctx, d, creds); err != nil {
		stop()
		<-events
		return err
	}
	// held is a RENAMED_OLD_NAME that ended an answer: its NEW_NAME may
	// come in the next one (measured with Samba under load), so it waits
	// renamePairWait for it before it counts as the name gone.
	var held []wire.NotifyEvent
	var heldFor <-chan time.Time
	for {
		var r notifyResult
		select {
		case r = <-events:
		case <-heldFor:
			w.apply(d, held, nil, true)
			held, heldFor = nil, nil
			continue
		case <-d.confirm:
			if err := w.lookUp(sctx, d, creds); err != nil {
				stop()
				<-events
				return err
			}
			continue
		}
		switch {
		case kicked.Load():
			return errors.New("the prober finds the server unreachable")
		case errors.Is(r.err, smb.ErrNotifyOverflow):
			held, heldFor = nil, nil // the listing says where the names stand
			arm()
			if err := w.rescan(sctx, d, creds); err != nil {
				stop()
				<-events
				return err
			}
			continue
		case errors.Is(r.err, smb.ErrWatchedDirGone):
			w.apply(d, nil, map[string]bool{}, false)
			return r.err
		case r.err != nil:
			return r.err
		}
		arm()
		evs := slices.Concat(held, r.events)
		held, heldFor = nil, nil
		if n := len(evs); n > 0 && evs[n-1].Action == wire.ActionRenamedOldName {
			held, heldFor = evs[n-1:], time.After(renamePairWait)
			evs = evs[:n-1]
		}
		w.apply(d, evs, nil, true)
	}
}

// renamePairWait bounds the wait for the NEW_NAME of a rename whose
// OLD_NAME ended a notify answer.
const renamePairWait = 200 * time.Millisecond

type notifyResult struct {
	events []wire.NotifyEvent
	err    error
}

// rescan lists the directory and publishes what it finds.
func (w *Watcher) rescan(ctx context.Context, d *dir, creds auth.Credentials) error {
	lctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	names, err := w.list.List(lctx, d.target.Addr, d.target.Share, d.target.Dir, creds)
	cancel()
	if err != nil {
		return fmt.Errorf("list %s: %w", d.key, err)
	}
	listed := make(map[string]bool, len(names))
	for _, n := range names {
		listed[n] = true
	}
	w.apply(d, nil, listed, true)
	return nil
}

// apply takes in a listing (every name present; nil: keep what is known)
// and then events, counts what happened to the wanted names, and publishes
// them; watching says whether a watch stands after this.
func (w *Watcher) apply(d *dir, events []wire.NotifyEvent, listed map[string]bool, watching bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	before, knownBefore := maps.Clone(d.present), maps.Clone(d.known)
	if listed != nil {
		d.present = listed
		d.state.Rescans++
		for n := range listed {
			delete(d.renamed, n)
		}
		for n := range d.names {
			d.known[n] = true
		}
	}
	if d.present == nil {
		d.present = map[string]bool{}
	}
	oldName := ""
	for _, e := range events {
		if strings.Contains(e.Name, "/") {
			continue // below a volume directory: not ours to follow
		}
		d.seq++
		d.touched[e.Name] = d.seq
		if d.names[e.Name] > 0 {
			d.known[e.Name] = true
		}
		switch e.Action {
		case wire.ActionAdded:
			d.present[e.Name] = true
			delete(d.renamed, e.Name)
		case wire.ActionRemoved:
			delete(d.present, e.Name)
			delete(d.renamed, e.Name)
		case wire.ActionRenamedOldName:
			delete(d.present, e.Name)
			oldName = e.Name
		case wire.ActionRenamedNewName:
			d.present[e.Name] = true
			delete(d.renamed, e.Name)
			if oldName != "" {
				d.renamed[oldName] = e.Name
			}
			oldName = ""
		}
	}
	if before != nil {
		for name := range d.names {
			if !knownBefore[name] {
				continue // first seen now: nothing happened to it
			}
			switch was, now := before[name], d.present[name]; {
			case was && !now && d.renamed[name] != "":
				d.state.Renamed++
			case was && !now:
				d.state.Removed++
			case !was && now:
				d.state.Restored++
			}
		}
	}
	if watching && !d.state.Watching {
		d.state.Watching, d.state.Unsupported, d.state.Message, d.state.Since = true, false, "", time.Now()
	}
	w.publishLocked(d)
}

// lost records that d's watch is down, keeping the last known states.
func (w *Watcher) lost(d *dir, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if d.state.Watching {
		d.state.Losses++
		d.state.Since = time.Now()
		klog.InfoS("directory watch lost; its volumes are polled until it is back", "dir", d.key, "err", err)
	}
	// A server that requires AES-CCM encryption cannot be watched: not a loss, and
	// no alert, but its volumes are polled. Tried again at each backoff,
	// in case its settings change.
	unsupported := errors.Is(err, smb.ErrEncrypted)
	if unsupported && !d.state.Unsupported {
		klog.InfoS("directory not watched: the server requires an encryption the driver does not implement; its volumes are polled", "dir", d.key, "err", err)
	}
	d.state.Watching, d.state.Unsupported, d.state.Message = false, unsupported, err.Error()
	w.publishLocked(d)
}

// publishLocked writes d's watch and wanted names to the store, if d is
// still watched.
func (w *Watcher) publishLocked(d *dir) {
	if w.dirs[d.key] != d {
		return
	}
	w.store.SetWatch(d.key, d.state)
	now := time.Now()
	for _, name := range slices.Sorted(maps.Keys(d.names)) {
		key := health.DirTarget{Addr: d.target.Addr, Share: d.target.Share, Dir: d.target.Dir, Name: name}.Key()
		v := health.DirVerdict{State: health.DirUnknown, Watching: d.state.Watching, At: now}
		if d.present != nil && d.known[name] {
			v.State = health.DirMissing
			if d.present[name] {
				v.State = health.DirPresent
			}
			v.RenamedTo = d.renamed[name]
		}
		if old, ok := w.store.Dir(key); ok && old.State == v.State && old.RenamedTo == v.RenamedTo && old.Watching == v.Watching {
			continue // unchanged: keep when it was established
		}
		w.store.SetDir(key, v)
	}
}

// lookUp establishes the wanted names no listing or event has, one
// lookup each, unless an event about the name arrives meanwhile (newer).
func (w *Watcher) lookUp(ctx context.Context, d *dir, creds auth.Credentials) error {
	w.mu.Lock()
	if d.present == nil {
		w.mu.Unlock()
		return nil // the first listing will
	}
	asked := map[string]uint64{}
	for n := range d.names {
		if !d.known[n] {
			asked[n] = d.touched[n]
		}
	}
	w.mu.Unlock()
	if len(asked) > maxLookups {
		return w.rescan(ctx, d, creds) // one listing costs less than many lookups
	}
	found := map[string]bool{}
	for _, n := range slices.Sorted(maps.Keys(asked)) {
		lctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
		ok, err := w.list.Exists(lctx, d.target.Addr, d.target.Share, path.Join(d.target.Dir, n), creds)
		cancel()
		if err != nil {
			return fmt.Errorf("look up %s/%s: %w", d.key, n, err)
		}
		found[n] = ok
	}
	w.mu.Lock()
	for n, ok := range found {
		if d.touched[n] != asked[n] || d.names[n] == 0 {
			continue // an event said more recently, or nobody wants it now
		}
		d.known[n] = true
		if ok {
			d.present[n] = true
		} else {
			delete(d.present, n)
		}
	}
	w.publishLocked(d)
	w.mu.Unlock()
	return nil
}

func poke(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
