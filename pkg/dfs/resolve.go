package dfs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// MaxHops bounds a resolution: root -> link -> interlink -> ... A namespace
// deeper than this is almost certainly a loop.
const MaxHops = 8

// ErrLoop: the namespace's referrals go round in circles (or deeper than
// MaxHops).
var ErrLoop = errors.New("DFS referral loop")

// Resolution is where a DFS path's data lives.
type Resolution struct {
	// Link is the DFS path prefix whose targets these are: the path the
	// kernel fails over on (its referral's path).
	Link string
	// Targets are storage paths (\server\share[\path]) for the whole
	// request, in order: the hint first, then the referral's order.
	Targets []string
}

// Resolver follows referrals from a DFS root through links and interlinks
// to storage, through a Cache.
type Resolver struct {
	cache *Cache
	// InterlinkTimeout bounds the question "is this link target itself a
	// DFS path?" per target; the targets are asked at once, and one that
	// does not answer in time (a frozen server) counts as storage, so a dead
	// target costs a resolution at most this long.
	InterlinkTimeout time.Duration
}

// NewResolver builds a resolver over cache.
func NewResolver(cache *Cache) *Resolver {
	return &Resolver{cache: cache, InterlinkTimeout: time.Second}
}

// Resolve returns the storage targets of path (\server\share\...). A path
// in no DFS namespace is ErrNotDFS: mount it as it is.
func (r *Resolver) Resolve(ctx context.Context, path string) (Resolution, error) {
	res, err := r.resolve(ctx, path, 0)
	if err != nil {
		return Resolution{}, err
	}
	if len(res.Targets) == 0 {
		return Resolution{}, fmt.Errorf("%w: %s resolves to no storage target", ErrMalformed, path)
	}
	return res, nil
}

func (r *Resolver) resolve(ctx context.Context, path string, hops int) (Resolution, error) {
	if hops > MaxHops {
		return Resolution{}, fmt.Errorf("%w: DFS path %s: more than %d referral hops", ErrLoop, path, MaxHops)
	}
	ref, err := r.cache.Lookup(ctx, path)
	if err != nil {
		return Resolution{}, err
	}
	rest := below(path, ref.Path)
	if ref.Root {
		if rest == "" {
			return Resolution{Link: ref.Path, Targets: ref.Targets}, nil // the root share itself
		}
		// The root server that answers gives the link's referral; try them in order.
		var errs []error
		for _, t := range ref.Targets {
			sub := join(t, rest)
			if strings.EqualFold(sub, path) {
				continue // asked already
			}
			res, err := r.resolve(ctx, sub, hops+1)
			if err == nil {
				return res, nil
			}
			errs = append(errs, err)
		}
		return Resolution{}, fmt.Errorf("DFS path %s: no root server gives its referral: %w", path, errors.Join(errs...))
	}
	// A link: each target is storage, unless it is itself in a DFS
	// namespace (an interlink), which is resolved in turn. A target whose
	// server cannot say (down, frozen) is taken as storage: it is a replica
	// to watch and to fail over to, not a reason to fail.
	subs := make([][]string, len(ref.Targets))
	errs := make([]error, len(ref.Targets))
	var wg sync.WaitGroup
	for i, t := range ref.Targets {
		wg.Go(func() {
			cand := join(t, rest)
			ictx, cancel := context.WithTimeout(ctx, r.InterlinkTimeout)
			defer cancel()
			sub, err := r.resolve(ictx, cand, hops+1)
			switch {
			case errors.Is(err, ErrLoop):
				errs[i] = err
			case err != nil:
				subs[i] = []string{cand}
			default:
				subs[i] = sub.Targets
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Resolution{}, err
	}
	res := Resolution{Link: ref.Path}
	for _, s := range subs {
		res.Targets = append(res.Targets, s...)
	}
	return res, nil
}

// below returns what path has beyond prefix (no leading backslash).
func below(path, prefix string) string {
	return strings.TrimPrefix(path[min(len(prefix), len(path)):], `\`)
}

func join(target, rest string) string {
	if rest == "" {
		return target
	}
	return strings.TrimSuffix(target, `\`) + `\` + rest
}
