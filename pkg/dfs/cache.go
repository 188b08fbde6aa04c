package dfs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// ErrNotDFS: the server says the path is not in a DFS namespace (the
// Referrer maps STATUS_NOT_FOUND and a share without SMB2_SHARE_CAP_DFS to
// it). Such answers are cached as negative entries.
var ErrNotDFS = errors.New("not a DFS path")

// Referral is what a referral says about a DFS path prefix.
type Referral struct {
	Path    string   // the prefix of the request it answers, \server\share[\link...]
	Root    bool     // the targets are DFS root servers, not storage
	Targets []string // \server\share[\path], in the server's order
	TTL     time.Duration
}

// ReferralOf turns a decoded response to a request for path into a
// Referral. Name-list entries (domain referrals) are skipped.
func ReferralOf(path string, r Response) (Referral, error) {
	prefix, _, err := Consumed(path, r)
	if err != nil {
		return Referral{}, err
	}
	ref := Referral{Path: prefix, Root: r.Flags&HeaderReferralServers != 0}
	var ttl uint32
	for _, e := range r.Entries {
		if e.Flags&EntryNameListReferral != 0 || e.Target == "" {
			continue
		}
		if e.ServerType == ServerTypeRoot {
			ref.Root = true
		}
		if len(ref.Targets) == 0 || e.TTL < ttl {
			ttl = e.TTL
		}
		ref.Targets = append(ref.Targets, e.Target)
	}
	if len(ref.Targets) == 0 {
		return Referral{}, fmt.Errorf("%w: referral for %s has no targets", ErrMalformed, path)
	}
	ref.TTL = time.Duration(ttl) * time.Second
	return ref, nil
}

// Fetch asks a server for the referral of path (a Referrer's job).
type Fetch func(ctx context.Context, path string) (Referral, error)

// CacheOptions bound the cache's lifetimes. Zero values get defaults.
type CacheOptions struct {
	MinTTL      time.Duration // a referral is kept at least this long, default 30 s
	MaxTTL      time.Duration // and at most this long, default 30 min (Windows' link default)
	NegativeTTL time.Duration // "not a DFS path" is kept this long, default 30 s
	// FetchTimeout bounds one fetch, default 10 s.
	FetchTimeout time.Duration
}

// Cache keeps referrals by path prefix with their TTL, bounded below and
// above. An expired referral is refreshed on its next use; when the
// refresh fails (the root is down) the cached one keeps serving, as the
// kernel's cache does. Concurrent lookups of one path share one fetch.
// Run refreshes referrals in use before they expire. It keeps a target
// hint per referral: the target the node uses, first in Targets.
type Cache struct {
	opts    CacheOptions
	fetch   Fetch
	mu      sync.Mutex
	entries map[string]*cached // by strings.ToLower(Referral.Path)
	neg     map[string]time.Time
	flights map[string]*flight
	wake    chan struct{}
	// base ends the fetches in flight when Run returns; Run waits for them.
	base    context.Context
	stop    context.CancelFunc
	fetches sync.WaitGroup
}

type cached struct {
	ref     Referral
	fetched time.Time
	ttl     time.Duration // clamped
	used    time.Time
	hint    string
	retryAt time.Time // after a failed refresh: when Run tries again
}

type flight struct {
	done chan struct{}
	ref  Referral
	err  error
}

// NewCache builds a cache that fetches with fetch; Run refreshes.
func NewCache(fetch Fetch, o CacheOptions) *Cache {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&o.MinTTL, 30*time.Second)
	def(&o.MaxTTL, 30*time.Minute)
	def(&o.NegativeTTL, 30*time.Second)
	def(&o.FetchTimeout, 10*time.Second)
	base, stop := context.WithCancel(context.Background())
	return &Cache{opts: o, fetch: fetch, entries: map[string]*cached{}, neg: map[string]time.Time{},
		flights: map[string]*flight{}, wake: make(chan struct{}, 1), base: base, stop: stop}
}

// under reports whether path is prefix or below it, case-insensitively, on
// a component boundary.
func under(path, prefix string) bool {
	if len(path) < len(prefix) || !strings.EqualFold(path[:len(prefix)], prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '\\' || strings.HasSuffix(prefix, `\`)
}

// longestLocked returns the cached referral with the longest prefix of
// path. A root referral answers only for the root itself: the links below
// it have referrals of their own, which the root server gives out (with
// below, a root referral covering a longer path is returned too, as a
// fallback).
func (c *Cache) longestLocked(path string, below bool) *cached {
	var best *cached
	for _, e := range c.entries {
		if !under(path, e.ref.Path) || (e.ref.Root && !below && len(path) > len(e.ref.Path)) {
			continue
		}
		if best == nil || len(e.ref.Path) > len(best.ref.Path) {
			best = e
		}
	}
	return best
}

// Lookup returns the referral that covers path: a cached one while it is
// fresh, else a new one (and the cached one if the fetch fails). Targets
// come with the hint first.
func (c *Cache) Lookup(ctx context.Context, path string) (Referral, error) {
	now := time.Now()
	c.mu.Lock()
	e := c.longestLocked(path, false)
	if e != nil {
		e.used = now
		if now.Sub(e.fetched) < e.ttl {
			ref := e.withHint()
			c.mu.Unlock()
			return ref, nil
		}
	} else if until, ok := c.neg[strings.ToLower(path)]; ok && now.Before(until) {
		c.mu.Unlock()
		return Referral{}, fmt.Errorf("%w: %s (cached)", ErrNotDFS, path)
	}
	key := path
	if e != nil {
		key = e.ref.Path // refresh the referral we have, not the longer path
	}
	c.mu.Unlock()
	ref, err := c.refresh(ctx, key)
	if err == nil {
		if !under(path, ref.Path) {
			return Referral{}, fmt.Errorf("%w: referral for %s answers %s", ErrMalformed, path, ref.Path)
		}
		return ref, nil
	}
	if errors.Is(err, ErrNotDFS) {
		return Referral{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e != nil {
		return e.withHint(), nil // the root is down: serve what we have
	}
	if root := c.longestLocked(path, true); root != nil {
		// No referral of the link, and its root server is down: the root
		// referral names the other root servers to ask.
		return root.withHint(), nil
	}
	return Referral{}, err
}

// refresh fetches the referral of path once for all concurrent callers and
// stores the result.
func (c *Cache) refresh(ctx context.Context, path string) (Referral, error) {
	k := strings.ToLower(path)
	c.mu.Lock()
	f, ok := c.flights[k]
	if !ok {
		f = &flight{done: make(chan struct{})}
		c.flights[k] = f
		c.mu.Unlock()
		// The fetch outlives a caller that gives up (bounded by
		// FetchTimeout, and by Run's end), so its answer is cached for the
		// next one. It keeps the caller's values (credentials).
		c.fetches.Go(func() {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.FetchTimeout)
			unhook := context.AfterFunc(c.base, cancel)
			f.ref, f.err = c.fetch(fctx, path)
			unhook()
			cancel()
			c.store(k, f)
			close(f.done)
		})
	} else {
		c.mu.Unlock()
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return Referral{}, ctx.Err()
	}
	if f.err != nil {
		return Referral{}, f.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[strings.ToLower(f.ref.Path)]; e != nil {
		return e.withHint(), nil
	}
	return f.ref, nil
}

func (c *Cache) store(k string, f *flight) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.flights, k)
	switch {
	case errors.Is(f.err, ErrNotDFS):
		c.neg[k] = now.Add(c.opts.NegativeTTL)
		delete(c.entries, k)
	case f.err != nil:
		if e := c.entries[k]; e != nil {
			e.retryAt = now.Add(c.opts.MinTTL / 4)
		}
	default:
		delete(c.neg, k)
		pk := strings.ToLower(f.ref.Path)
		e := c.entries[pk]
		if e == nil {
			e = &cached{used: now}
			c.entries[pk] = e
		}
		e.ref, e.fetched, e.retryAt = f.ref, now, time.Time{}
		e.ttl = min(max(f.ref.TTL, c.opts.MinTTL), c.opts.MaxTTL)
		if !containsFold(f.ref.Targets, e.hint) {
			e.hint = "" // the hinted target left the referral
		}
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if s != "" && strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

func (e *cached) withHint() Referral {
	ref := e.ref
	ref.Targets = append([]string(nil), e.ref.Targets...)
	for i, t := range ref.Targets {
		if e.hint != "" && strings.EqualFold(t, e.hint) {
			copy(ref.Targets[1:i+1], ref.Targets[:i])
			ref.Targets[0] = t
			break
		}
	}
	return ref
}

// SetHint records the target the node uses for the referral covering path
// (read from the kernel); it is listed first from then on, across
// refreshes, while the referral still names it.
func (c *Cache) SetHint(path, target string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.longestLocked(path, false)
	if e == nil {
		return fmt.Errorf("no cached referral covers %s", path)
	}
	if !containsFold(e.ref.Targets, target) {
		return fmt.Errorf("%s is not a target of %s (%s)", target, e.ref.Path, strings.Join(e.ref.Targets, ", "))
	}
	e.hint = target
	return nil
}

// HintServer sets the hint of the referral covering path to its target on
// server (the host part of the address the kernel's mount is connected to).
func (c *Cache) HintServer(path, server string) error {
	c.mu.Lock()
	e := c.longestLocked(path, false)
	var target string
	if e != nil {
		for _, t := range e.ref.Targets {
			if host, _, _ := strings.Cut(strings.TrimPrefix(t, `\`), `\`); strings.EqualFold(host, server) {
				target = t
				break
			}
		}
	}
	c.mu.Unlock()
	if target == "" {
		return fmt.Errorf("no cached referral of %s has a target on %s", path, server)
	}
	return c.SetHint(path, target)
}

// Run refreshes, until ctx ends, each referral used within its last TTL
// when three quarters of its TTL have passed, so a lookup rarely waits for
// a fetch and a root that went down leaves the freshest copy behind. While
// a refresh fails, it is tried again every MinTTL/4 and the copy is kept.
// Referrals unused for a whole TTL are dropped when they expire.
func (c *Cache) Run(ctx context.Context) error {
	defer c.fetches.Wait()
	defer c.stop()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		next := now.Add(time.Hour)
		var due []string
		c.mu.Lock()
		for k, e := range c.entries {
			at := e.fetched.Add(e.ttl * 3 / 4)
			if e.retryAt.After(at) {
				at = e.retryAt // the last refresh failed: not before retryAt
			}
			// Referrals in use, and those whose root is down (the last copy
			// is worth keeping), are refreshed; others go once expired.
			keep := now.Sub(e.used) <= e.ttl || !e.retryAt.IsZero()
			switch {
			case !keep && now.Sub(e.fetched) >= e.ttl:
				delete(c.entries, k)
			case !keep:
				next = earliest(next, e.fetched.Add(e.ttl))
			case !now.Before(at):
				due = append(due, e.ref.Path)
			default:
				next = earliest(next, at)
			}
		}
		for k, until := range c.neg {
			if !now.Before(until) {
				delete(c.neg, k)
			}
		}
		c.mu.Unlock()
		for _, p := range due {
			_, _ = c.refresh(ctx, p) // failures keep the cached copy
		}
		if len(due) > 0 {
			continue
		}
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.wake:
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
