// Package failover moves a staged DFS volume off a dead target in place,
// without unmounting: when the target the kernel is connected to is
// unreachable (the prober's verdict, from the health store) and another
// target of the volume is healthy, it fences the dead target on the node
// and ends the kernel's connections to it, so the kernel's own DFS
// reconnect takes the next target at once. The superblock stays, so every
// bind mount made from it (every running pod) keeps working.
//
// It never fences the last healthy target, lifts a fence once the target
// has been healthy for UnfenceAfter, and does no active failback.
package failover

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/csi-smb/csi-smb/pkg/health"
)

// Verdicts is the health store (pkg/health.Store).
type Verdicts interface {
	Server(addr string) (health.Verdict, bool)
	Subscribe() *health.Subscription
}

// Fencer is the node's fence (pkg/fence).
type Fencer interface {
	Add(addr netip.Addr) error
	Remove(addr netip.Addr) error
	Kill(addr netip.Addr) (int, error)
}

// Targets reports, per staging path, the address (ip:port) the kernel's
// mount is connected to now (mountinfo's addr=).
type Targets func() (map[string]string, error)

// Retargeter is told the volume's active target changed (pkg/health.Monitor).
type Retargeter interface {
	Retarget(id string, f health.Failover)
	// Fenced tells which targets are fenced on the node now.
	Fenced(targets []string)
}

// Recorder receives failovers and the fence count (pkg/metrics).
type Recorder interface {
	FailedOver(fenced bool, took time.Duration)
	Fences(n int)
}

// Options tune the controller. Zero values get defaults.
type Options struct {
	Recorder Recorder // optional
	// Hint, when set, is told the target (ip:port) each volume's mount uses,
	// whenever it changes: the referral cache lists it first.
	Hint func(path, active string)
	// Disabled: watch and report only, never fence (the kernel alone).
	Disabled     bool
	UnfenceAfter time.Duration // a fenced target healthy this long is let back, default 30 s
	Tick         time.Duration // how often the mount table is read, default 500 ms
}

// Volume is a staged DFS volume.
type Volume struct {
	ID      string
	Staging string
	Targets []string // ip:port of every target of its link
	Path    string   // its DFS path, \server\share\...
	// Consistency: never leave a frozen target (TCP alive, SMB silent): a
	// write it holds would be applied late, over newer ones. The volume
	// waits for that target instead (availability traded for consistency).
	Consistency bool
}

// Controller runs failovers for the node's DFS volumes.
type Controller struct {
	opts    Options
	store   Verdicts
	fence   Fencer
	targets Targets
	retgt   Retargeter
	mu      sync.Mutex
	vols    map[string]*vol
	fenced  map[string]time.Time // ip:port -> fenced at
	// preparing counts the stages under way per target (Prepare to done)
	preparing map[string]int
	silent    map[string]bool      // fenced ip:port -> it was frozen (Silent) when fenced
	healthy   map[string]time.Time // fenced ip:port -> healthy since (zero: not healthy)
	wake      chan struct{}
}

type vol struct {
	Volume
	active string // ip:port the kernel uses, "" until read
	left   string // the fenced target it is leaving
}

// New builds a controller; Run acts.
func New(store Verdicts, fence Fencer, targets Targets, retgt Retargeter, o Options) *Controller {
	if o.UnfenceAfter == 0 {
		o.UnfenceAfter = 30 * time.Second
	}
	if o.Tick == 0 {
		o.Tick = 500 * time.Millisecond
	}
	return &Controller{opts: o, store: store, fence: fence, targets: targets, retgt: retgt, vols: map[string]*vol{},
		fenced: map[string]time.Time{}, silent: map[string]bool{}, preparing: map[string]int{}, healthy: map[string]time.Time{}, wake: make(chan struct{}, 1)}
}

// Add starts watching a staged DFS volume; active is the target it was
// mounted on ("" if not known).
func (c *Controller) Add(v Volume, active string) {
	c.mu.Lock()
	c.vols[v.ID] = &vol{Volume: v, active: active}
	c.mu.Unlock()
	if c.opts.Hint != nil && active != "" && v.Path != "" {
		c.opts.Hint(v.Path, active)
	}
	c.poke()
}

// Remove stops watching a volume.
func (c *Controller) Remove(id string) {
	c.mu.Lock()
	delete(c.vols, id)
	c.mu.Unlock()
}

// Fenced returns the fenced targets and since when.
func (c *Controller) Fenced() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]time.Time, len(c.fenced))
	for k, v := range c.fenced {
		out[k] = v
	}
	return out
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Prepare fences, before a mount of a DFS path with these targets, the
// ones that are dead, unless that would leave no healthy target: the
// kernel then connects to a live one first instead of spending its
// negotiate timeout (20 s, or forever) on each dead one. It waits, until
// ctx ends, for the prober to give each target a first verdict, and no
// longer than PrepareGrace after the first target answered; a target
// still without a verdict then (a frozen server takes the prober 2 x 10 s
// to judge when it has never answered) is taken as dead for this mount:
// fenced, and let back once it has been healthy for UnfenceAfter. The
// targets count as in use until done is called (after the volume is
// added, or the mount failed).
func (c *Controller) Prepare(ctx context.Context, targets []string) (done func(), err error) {
	c.mu.Lock()
	for _, t := range targets {
		c.preparing[t]++
	}
	c.mu.Unlock()
	done = func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, t := range targets {
			if c.preparing[t]--; c.preparing[t] <= 0 {
				delete(c.preparing, t)
			}
		}
	}
	pending := func(t string) bool {
		v, ok := c.store.Server(t)
		return !ok || v.State == health.StateUnknown || v.Reason == health.ReasonProbeMissed
	}
	var firstUp time.Time
wait:
	for slices.ContainsFunc(targets, pending) {
		c.mu.Lock()
		up := slices.ContainsFunc(targets, c.usableLocked)
		c.mu.Unlock()
		if up && firstUp.IsZero() {
			firstUp = time.Now()
		}
		if !firstUp.IsZero() && time.Since(firstUp) >= PrepareGrace {
			break
		}
		select {
		case <-ctx.Done():
			break wait
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.mu.Lock()
	if c.opts.Disabled {
		c.mu.Unlock()
		return done, nil
	}
	var acts []action
	for _, t := range targets {
		v, _ := c.store.Server(t)
		if (v.State == health.StateUnreachable || pending(t)) && c.othersHealthyLocked(t, targets) {
			klog.InfoS("DFS target dead or not answering before a mount: fenced so the kernel takes a live one",
				"target", t, "verdict", v.Reason)
			acts = append(acts, c.planFenceLocked(t, false))
		}
	}
	c.mu.Unlock()
	return done, c.apply(acts)
}

// action is fence work decided under the lock and done outside it: the
// netlink calls must not hold up the RPCs that add and remove volumes.
type action struct {
	target   string
	add      bool // a new fence
	kill     bool // end the kernel's connections
	lift     bool
	why      string
	previous fenceState // to restore when a lift fails
}

type fenceState struct {
	at, healthy time.Time
	silent      bool
}

// planFenceLocked records t as fenced (if it is not already) and returns
// the work that makes it so.
func (c *Controller) planFenceLocked(t string, kill bool) action {
	_, already := c.fenced[t]
	if !already {
		sv, _ := c.store.Server(t)
		c.fenced[t], c.healthy[t], c.silent[t] = time.Now(), time.Time{}, sv.Silent
	}
	return action{target: t, add: !already, kill: kill}
}

// planLiftLocked forgets t's fence and returns the work that lifts it.
func (c *Controller) planLiftLocked(t, why string) action {
	a := action{target: t, lift: true, why: why, previous: fenceState{c.fenced[t], c.healthy[t], c.silent[t]}}
	delete(c.fenced, t)
	delete(c.healthy, t)
	delete(c.silent, t)
	return a
}

// apply carries out the actions; a fence that could not be set, or lifted,
// goes back to its earlier state, so the next step tries again.
func (c *Controller) apply(acts []action) error {
	var errs []error
	for _, a := range acts {
		ip, err := ipOf(a.target)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch {
		case a.lift:
			if err := c.fence.Remove(ip); err != nil {
				errs = append(errs, fmt.Errorf("lift the fence on %s: %w", a.target, err))
				c.mu.Lock()
				c.fenced[a.target], c.healthy[a.target], c.silent[a.target] = a.previous.at, a.previous.healthy, a.previous.silent
				c.mu.Unlock()
				continue
			}
			klog.InfoS("DFS fence lifted", "target", a.target, "why", a.why)
			continue
		case a.add:
			if err := c.fence.Add(ip); err != nil {
				errs = append(errs, fmt.Errorf("fence %s: %w", a.target, err))
				c.mu.Lock()
				delete(c.fenced, a.target)
				delete(c.healthy, a.target)
				delete(c.silent, a.target)
				c.mu.Unlock()
				continue
			}
			klog.InfoS("DFS target fenced on this node", "target", a.target)
		}
		if a.kill {
			n, err := c.fence.Kill(ip)
			klog.InfoS("ended the kernel's connections to a fenced DFS target", "target", a.target, "connections", n, "err", err)
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// PrepareGrace is how long Prepare waits for the other targets once one
// answers: a live target sets up its probe session in a few round trips.
const PrepareGrace = time.Second

// usable: the target answers (healthy or merely slow) and is not fenced.
func (c *Controller) usableLocked(t string) bool {
	if _, f := c.fenced[t]; f {
		return false
	}
	v, ok := c.store.Server(t)
	return ok && (v.State == health.StateHealthy || (v.State == health.StateDegraded && v.Reason == health.ReasonSlow))
}

func (c *Controller) othersHealthyLocked(t string, targets []string) bool {
	return slices.ContainsFunc(targets, func(o string) bool { return o != t && c.usableLocked(o) })
}

func ipOf(addr string) (netip.Addr, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("target address %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("target address %q is not an IP address: %w", addr, err)
	}
	return ip, nil
}

// Run acts on every server verdict change and every Tick until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	sub := c.store.Subscribe()
	updates := make(chan struct{}, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		_ = health.Consume(ctx, sub, func(u health.Update) {
			if u.Kind == health.KindServer {
				select {
				case updates <- struct{}{}:
				default:
				}
			}
		})
	})
	t := time.NewTicker(c.opts.Tick)
	defer t.Stop()
	for {
		c.step(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-updates:
		case <-c.wake:
		}
	}
}

// step reads where each volume is connected, fails over the ones on a dead
// target and lifts the fences of targets healthy for UnfenceAfter.
func (c *Controller) step(now time.Time) {
	c.mu.Lock()
	idle := len(c.vols) == 0 && len(c.fenced) == 0
	c.mu.Unlock()
	if idle {
		return // no DFS volume on this node: no mount table to read
	}
	active, err := c.targets()
	if err != nil {
		klog.ErrorS(err, "cannot read the mount table for DFS failover")
	}
	c.mu.Lock()
	type change struct {
		id, path string
		f        health.Failover
	}
	var changes []change
	var acts []action
	for _, v := range c.vols {
		if a, ok := active[v.Staging]; ok && a != v.active {
			at, fenced := c.fenced[v.active]
			changes = append(changes, change{v.ID, v.Path, health.Failover{From: v.active, To: a, At: now,
				FromFrozen: fenced && c.silent[v.active]}})
			if r := c.opts.Recorder; r != nil && v.active != "" {
				r.FailedOver(fenced, now.Sub(at))
			}
			if v.active != "" {
				klog.InfoS("DFS volume now served by another target", "volumeID", v.ID, "from", v.active, "to", a)
			}
			v.active, v.left = a, ""
		}
		if v.active == "" || c.opts.Disabled {
			continue
		}
		sv, _ := c.store.Server(v.active)
		if sv.State != health.StateUnreachable || !c.othersHealthyLocked(v.active, v.Targets) {
			continue
		}
		if sv.LastSuccess.After(sv.Since) {
			continue // it answers again and is recovering: leaving it now would only add a split-brain risk
		}
		if _, done := c.fenced[v.active]; done && v.left == v.active {
			continue // fenced already; the kernel is reconnecting
		}
		if v.Consistency && sv.Silent {
			if v.left != "wait:"+v.active {
				klog.InfoS("DFS target frozen: the volume's consistency policy keeps it there until it answers",
					"volumeID", v.ID, "target", v.active)
				v.left = "wait:" + v.active
			}
			continue
		}
		klog.InfoS("DFS target unreachable: failing over in place", "volumeID", v.ID, "target", v.active, "verdict", sv.Message)
		acts = append(acts, c.planFenceLocked(v.active, true))
		v.left = v.active
	}
	for t := range c.fenced {
		sv, _ := c.store.Server(t)
		used := c.preparing[t] > 0
		for _, v := range c.vols {
			used = used || slices.Contains(v.Targets, t)
		}
		switch {
		case !used:
			// No volume of this node has the target any more (unstaged):
			// nothing to keep it away from, and nobody probes it.
			acts = append(acts, c.planLiftLocked(t, "no staged volume uses it"))
		case sv.State != health.StateHealthy:
			c.healthy[t] = time.Time{}
		case c.healthy[t].IsZero():
			c.healthy[t] = now
		case now.Sub(c.healthy[t]) >= c.opts.UnfenceAfter:
			acts = append(acts, c.planLiftLocked(t, "healthy again (no failback: mounts stay where they are)"))
		}
	}
	if r := c.opts.Recorder; r != nil {
		r.Fences(len(c.fenced))
	}
	c.mu.Unlock()
	if err := c.apply(acts); err != nil {
		klog.ErrorS(err, "DFS failover")
	}
	c.mu.Lock()
	fenced := slices.Sorted(maps.Keys(c.fenced))
	c.mu.Unlock()
	c.retgt.Fenced(fenced)
	for _, ch := range changes {
		c.retgt.Retarget(ch.id, ch.f)
		if c.opts.Hint != nil && ch.path != "" {
			c.opts.Hint(ch.path, ch.f.To)
		}
	}
}
