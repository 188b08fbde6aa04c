package dfs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// namespace is a fake set of servers: referrals by prefix, servers that are
// down or frozen.
type namespace struct {
	mu     sync.Mutex
	refs   map[string]Referral // by lower-case prefix
	frozen map[string]bool     // server name -> never answers
	asked  []string
	ended  int // fetches that returned
}

func (n *namespace) fetch(ctx context.Context, path string) (Referral, error) {
	server, _, _ := strings.Cut(strings.TrimPrefix(path, `\`), `\`)
	n.mu.Lock()
	n.asked = append(n.asked, path)
	frozen := n.frozen[server]
	var best Referral
	for p, r := range n.refs {
		if under(path, p) && len(p) > len(best.Path) {
			best = r
		}
	}
	n.mu.Unlock()
	defer func() { n.mu.Lock(); n.ended++; n.mu.Unlock() }()
	if frozen {
		<-ctx.Done()
		return Referral{}, ctx.Err()
	}
	if best.Path == "" {
		return Referral{}, fmt.Errorf("%w: %s", ErrNotDFS, path)
	}
	return best, nil
}

func newNamespace() *namespace {
	n := &namespace{refs: map[string]Referral{}, frozen: map[string]bool{}}
	for _, r := range []Referral{
		{Path: `\r\dfs`, Root: true, Targets: []string{`\r\dfs`, `\r2\dfs`}, TTL: time.Minute},
		{Path: `\r\dfs\multi`, Targets: []string{`\a\s`, `\b\s\sub`}, TTL: time.Minute},
		{Path: `\r\dfs\inter`, Targets: []string{`\x\ns\link2`}, TTL: time.Minute},
		{Path: `\x\ns\link2`, Targets: []string{`\c\s`}, TTL: time.Minute},
		{Path: `\r\dfs\loop`, Targets: []string{`\r\dfs\loop2`}, TTL: time.Minute},
		{Path: `\r\dfs\loop2`, Targets: []string{`\r\dfs\loop`}, TTL: time.Minute},
	} {
		n.refs[strings.ToLower(r.Path)] = r
	}
	return n
}

func TestResolve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := newNamespace()
		r := NewResolver(NewCache(ns.fetch, CacheOptions{}))
		ctx := context.Background()
		for _, tc := range []struct {
			path, link string
			targets    []string
		}{
			{`\r\dfs`, `\r\dfs`, []string{`\r\dfs`, `\r2\dfs`}}, // the root share itself
			{`\r\dfs\multi\pvc-1`, `\r\dfs\multi`, []string{`\a\s\pvc-1`, `\b\s\sub\pvc-1`}},
			{`\R\DFS\MULTI`, `\r\dfs\multi`, []string{`\a\s`, `\b\s\sub`}},
			{`\r\dfs\inter\d`, `\r\dfs\inter`, []string{`\c\s\d`}}, // interlink
		} {
			res, err := r.Resolve(ctx, tc.path)
			if err != nil || !strings.EqualFold(res.Link, tc.link) || !slices.Equal(res.Targets, tc.targets) {
				t.Errorf("Resolve(%s) = %+v, %v; want link %s targets %v", tc.path, res, err, tc.link, tc.targets)
			}
		}
		if _, err := r.Resolve(ctx, `\plain\share\dir`); !errors.Is(err, ErrNotDFS) {
			t.Errorf("plain share: %v, want ErrNotDFS", err)
		}
		if _, err := r.Resolve(ctx, `\r\dfs\loop\x`); !errors.Is(err, ErrLoop) {
			t.Errorf("loop: %v, want ErrLoop", err)
		}
	})
}

// TestResolveFrozenTarget: a target whose server never answers costs the
// resolution InterlinkTimeout, and stays in the targets.
func TestResolveFrozenTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := newNamespace()
		ns.frozen["b"] = true
		r := NewResolver(NewCache(ns.fetch, CacheOptions{}))
		start := time.Now()
		res, err := r.Resolve(context.Background(), `\r\dfs\multi\v`)
		if err != nil || !slices.Equal(res.Targets, []string{`\a\s\v`, `\b\s\sub\v`}) {
			t.Fatalf("Resolve = %+v, %v", res, err)
		}
		if took := time.Since(start); took != time.Second {
			t.Fatalf("took %v, want InterlinkTimeout (1s)", took)
		}
		time.Sleep(10 * time.Second) // the background fetch to b gives up at FetchTimeout
		synctest.Wait()
	})
}

// TestResolveRootDown: links already cached keep resolving with the root
// down; a new link is asked of the other root server.
func TestResolveRootDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ns := newNamespace()
		r := NewResolver(NewCache(ns.fetch, CacheOptions{FetchTimeout: 500 * time.Millisecond}))
		ctx := context.Background()
		if _, err := r.Resolve(ctx, `\r\dfs`); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Resolve(ctx, `\r\dfs\multi`); err != nil {
			t.Fatal(err)
		}
		ns.mu.Lock()
		ns.frozen["r"] = true
		ns.refs[`\r2\dfs\inter`] = Referral{Path: `\r2\dfs\inter`, Targets: []string{`\c\s`}, TTL: time.Minute}
		ns.mu.Unlock()
		time.Sleep(2 * time.Minute)
		res, err := r.Resolve(ctx, `\r\dfs\multi\v`)
		if err != nil || !slices.Equal(res.Targets, []string{`\a\s\v`, `\b\s\sub\v`}) {
			t.Fatalf("cached link with the root down: %+v, %v", res, err)
		}
		res, err = r.Resolve(ctx, `\r\dfs\inter\w`)
		if err != nil || !slices.Equal(res.Targets, []string{`\c\s\w`}) {
			t.Fatalf("new link with the first root down: %+v, %v", res, err)
		}
	})
}
