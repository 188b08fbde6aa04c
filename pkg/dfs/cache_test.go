package dfs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/csi-smb/csi-smb/internal/testrun"
)

// fakeRoot answers referrals for \root\dfs\multi with settable targets and
// TTL, counts fetches, and can be down or slow.
type fakeRoot struct {
	mu      sync.Mutex
	targets []string
	ttl     time.Duration
	down    bool
	delay   time.Duration
	fetches int
}

func (f *fakeRoot) fetch(ctx context.Context, path string) (Referral, error) {
	f.mu.Lock()
	f.fetches++
	down, delay, targets, ttl := f.down, f.delay, slices.Clone(f.targets), f.ttl
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return Referral{}, ctx.Err()
		}
	}
	if down {
		return Referral{}, errors.New("connection refused")
	}
	if !under(path, `\root\dfs\multi`) {
		return Referral{}, fmt.Errorf("%w: %s", ErrNotDFS, path)
	}
	return Referral{Path: `\root\dfs\multi`, Targets: targets, TTL: ttl}, nil
}

func (f *fakeRoot) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.fetches }

func (f *fakeRoot) set(fn func(f *fakeRoot)) { f.mu.Lock(); defer f.mu.Unlock(); fn(f) }

func lookup(t *testing.T, c *Cache, path string) Referral {
	t.Helper()
	r, err := c.Lookup(context.Background(), path)
	if err != nil {
		t.Fatalf("Lookup(%s): %v", path, err)
	}
	return r
}

func TestCacheTTLAndSingleFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := &fakeRoot{targets: []string{`\a\s`, `\b\s`}, ttl: 600 * time.Second, delay: 100 * time.Millisecond}
		c := NewCache(root.fetch, CacheOptions{MaxTTL: 5 * time.Minute})
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() { lookup(t, c, `\root\dfs\multi\x\y`) })
		}
		wg.Wait()
		if n := root.count(); n != 1 {
			t.Fatalf("%d fetches for 20 concurrent lookups, want 1", n)
		}
		// Fresh for MaxTTL (the referral's 600 s is capped), then refetched on use.
		time.Sleep(5*time.Minute - time.Second)
		lookup(t, c, `\ROOT\dfs\multi`) // case-insensitive
		if n := root.count(); n != 1 {
			t.Fatalf("refetched within the TTL: %d", n)
		}
		time.Sleep(2 * time.Second)
		lookup(t, c, `\root\dfs\multi\z`)
		if n := root.count(); n != 2 {
			t.Fatalf("%d fetches after the TTL, want 2", n)
		}
		// A referral with a tiny TTL is kept MinTTL.
		root.set(func(f *fakeRoot) { f.ttl = time.Second })
		time.Sleep(5 * time.Minute)
		lookup(t, c, `\root\dfs\multi`)
		time.Sleep(29 * time.Second)
		lookup(t, c, `\root\dfs\multi`)
		if n := root.count(); n != 3 {
			t.Fatalf("%d fetches: a 1 s TTL must be raised to MinTTL", n)
		}
	})
}

func TestCacheServesWhileRootIsDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := &fakeRoot{targets: []string{`\a\s`, `\b\s`}, ttl: time.Minute}
		c := NewCache(root.fetch, CacheOptions{})
		testrun.Background(t, c.Run)
		lookup(t, c, `\root\dfs\multi`)
		root.set(func(f *fakeRoot) { f.down = true })
		time.Sleep(10 * time.Minute)
		r := lookup(t, c, `\root\dfs\multi\d`)
		if !slices.Equal(r.Targets, []string{`\a\s`, `\b\s`}) {
			t.Fatalf("with the root down: %v, want the cached targets", r.Targets)
		}
		// Run retried every MinTTL/4 meanwhile, not in a loop.
		if n := root.count(); n < 10 || n > 90 {
			t.Fatalf("%d fetches in 10 minutes with the root down", n)
		}
		root.set(func(f *fakeRoot) { f.down = false; f.targets = []string{`\b\s`, `\c\s`} })
		time.Sleep(10 * time.Second)
		if r := lookup(t, c, `\root\dfs\multi`); !slices.Equal(r.Targets, []string{`\b\s`, `\c\s`}) {
			t.Fatalf("after the root returned: %v", r.Targets)
		}
	})
}

// TestCacheRefreshesInBackground: a referral in use is refreshed at 3/4 of
// its TTL, so lookups never wait; one nobody uses is dropped.
func TestCacheRefreshesInBackground(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := &fakeRoot{targets: []string{`\a\s`}, ttl: 100 * time.Second}
		c := NewCache(root.fetch, CacheOptions{})
		testrun.Background(t, c.Run)
		lookup(t, c, `\root\dfs\multi`)
		time.Sleep(76 * time.Second)
		synctest.Wait()
		if n := root.count(); n != 2 {
			t.Fatalf("%d fetches at 76 s of a 100 s TTL, want a background refresh", n)
		}
		time.Sleep(300 * time.Second) // unused since: dropped once expired
		synctest.Wait()
		c.mu.Lock()
		n := len(c.entries)
		c.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d entries kept though unused", n)
		}
	})
}

func TestCacheNegativeEntries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := &fakeRoot{targets: []string{`\a\s`}, ttl: time.Minute}
		c := NewCache(root.fetch, CacheOptions{NegativeTTL: 10 * time.Second})
		for range 3 {
			if _, err := c.Lookup(context.Background(), `\plain\share`); !errors.Is(err, ErrNotDFS) {
				t.Fatalf("plain share: %v", err)
			}
		}
		if n := root.count(); n != 1 {
			t.Fatalf("%d fetches for a cached negative answer", n)
		}
		time.Sleep(11 * time.Second)
		_, _ = c.Lookup(context.Background(), `\plain\share`)
		if n := root.count(); n != 2 {
			t.Fatalf("negative entry not expired: %d fetches", n)
		}
	})
}

func TestCacheHint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := &fakeRoot{targets: []string{`\a\s`, `\b\s`, `\c\s`}, ttl: time.Minute}
		c := NewCache(root.fetch, CacheOptions{})
		lookup(t, c, `\root\dfs\multi`)
		if err := c.SetHint(`\root\dfs\multi\sub`, `\B\s`); err != nil {
			t.Fatal(err)
		}
		if r := lookup(t, c, `\root\dfs\multi`); !slices.Equal(r.Targets, []string{`\b\s`, `\a\s`, `\c\s`}) {
			t.Fatalf("hinted order %v", r.Targets)
		}
		if err := c.SetHint(`\root\dfs\multi`, `\z\s`); err == nil {
			t.Fatal("a hint that is not a target was accepted")
		}
		time.Sleep(2 * time.Minute) // refresh keeps the hint while the target stays
		if r := lookup(t, c, `\root\dfs\multi`); r.Targets[0] != `\b\s` {
			t.Fatalf("hint lost on refresh: %v", r.Targets)
		}
		root.set(func(f *fakeRoot) { f.targets = []string{`\a\s`, `\c\s`} })
		time.Sleep(2 * time.Minute)
		if r := lookup(t, c, `\root\dfs\multi`); !slices.Equal(r.Targets, []string{`\a\s`, `\c\s`}) {
			t.Fatalf("after the hinted target left the referral: %v", r.Targets)
		}
		if err := c.SetHint(`\nowhere\x`, `\a\s`); err == nil {
			t.Fatal("a hint for an uncached path was accepted")
		}
	})
}

func TestReferralOf(t *testing.T) {
	const req = `\r\dfs\multi\sub`
	r := Response{PathConsumed: uint16(2 * len(`\r\dfs\multi`)), Flags: HeaderStorageServers, Entries: []Entry{
		{Version: 3, TTL: 600, Target: `\a\s`}, {Version: 3, TTL: 300, Target: `\b\s`},
		{Version: 3, Flags: EntryNameListReferral, SpecialName: `\dom`},
	}}
	ref, err := ReferralOf(req, r)
	if err != nil || ref.Path != `\r\dfs\multi` || ref.Root || ref.TTL != 300*time.Second || !slices.Equal(ref.Targets, []string{`\a\s`, `\b\s`}) {
		t.Fatalf("ReferralOf = %+v, %v", ref, err)
	}
	r.Flags = HeaderReferralServers | HeaderStorageServers
	if ref, _ := ReferralOf(req, r); !ref.Root {
		t.Fatal("ReferralServers not read as a root referral")
	}
	if _, err := ReferralOf(req, Response{PathConsumed: 4}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("no targets: %v", err)
	}
}

func TestCacheHintServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := &fakeRoot{targets: []string{`\10.0.0.2\s`, `\10.0.0.3\s`}, ttl: time.Minute}
		c := NewCache(root.fetch, CacheOptions{})
		lookup(t, c, `\root\dfs\multi`)
		if err := c.HintServer(`\root\dfs\multi\x`, "10.0.0.3"); err != nil {
			t.Fatal(err)
		}
		if r := lookup(t, c, `\root\dfs\multi`); r.Targets[0] != `\10.0.0.3\s` {
			t.Fatalf("targets %v, want the hinted server first", r.Targets)
		}
		if err := c.HintServer(`\root\dfs\multi`, "10.0.0.9"); err == nil {
			t.Fatal("a server that is no target was accepted as the hint")
		}
	})
}

// TestRunEndsFetchesInFlight: a fetch that outlived its caller ends with
// Run, which waits for it.
func TestRunEndsFetchesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := newNamespace()
		ns.frozen["r"] = true
		c := NewCache(ns.fetch, CacheOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()
		lctx, lcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer lcancel()
		if _, err := c.Lookup(lctx, `\r\dfs\x`); err == nil {
			t.Fatal("a frozen root answered")
		}
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		ns.mu.Lock()
		ended := ns.ended
		ns.mu.Unlock()
		if took := time.Since(start); took != 0 || ended != 1 {
			t.Fatalf("Run ended after %v with %d of 1 fetches returned; it must cancel the fetch and wait for it", took, ended)
		}
	})
}
